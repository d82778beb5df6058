"""Table 1's shared-weight minus per-example variance, predicted from the net itself.

With G(n, ξ) one example's gradient at weight sample ξ and ḡ(ξ) = E_n G(n, ξ) the gradient
over the whole training set at that sample (minibatches are drawn from it with replacement),
the law of total variance gives, for every element and so for their mean,

    Var_shared − Var_per-example = (1 − 1/M) · Var_ξ(ḡ(ξ)) ≥ 0

(tests/test_variance.py checks it on a small layer). So one weight sample per minibatch is
never less noisy than a sample per example in expectation, and the size of the gap says how
many minibatches a measurement needs to show it. This script loads a ``table1.py`` run's
checkpoint (its last epoch), draws ``--samples`` weight samples and, for each, the bottom and
top weight matrices' ∂(mean CE)/∂θ over the whole training set (in chunks, every chunk with
the same sample), and prints the predicted gap beside the one ``table1.py`` measured at that
epoch, each with its standard error (``_variance.py``).

    python benchmarks/paper/table1_gap.py --width 1000 --seed 1 --json gap.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

from minivd import make_rng, resolve_backend
from minivd.checkpoint import CheckpointError, write_json
from minivd.functional import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minivd.train import Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _variance import VarianceSums  # noqa: E402
from table1 import make_trainer, measure_settings, set_sampler  # noqa: E402


def full_gradient(model, x, y, seed: list[int], chunk: int, xp) -> list:
    """∂(mean CE over all of x)/∂θ of the bottom and top variational layers at one shared
    weight sample: every chunk redraws it from ``make_rng(seed)``, so all see the same one
    (the shared sampler's noise is weight-shaped: it does not depend on the chunk's size).
    Only variational dense layers may draw noise: an activation-noise layer's draw is
    example-shaped, so chunks would not share it; such a model is refused."""
    other = [type(layer).__name__ for layer in model.layers
             if type(layer).__name__ not in ("VariationalDense", "ReLU")]
    if other:
        raise ValueError(f"full_gradient needs a model of VariationalDense and ReLU layers "
                         f"(table1.py's vd-b MLP), not one with {other}")
    layers = set_sampler(model, "shared_weights")
    total = None
    try:
        for lo in range(0, len(x), chunk):
            xc, yc = xp.asarray(x[lo:lo + chunk]), xp.asarray(y[lo:lo + chunk])
            logits = model.forward(xc, rng=make_rng(seed, xp), train=True)
            _, cache = softmax_cross_entropy_forward(logits, yc)
            model.backward(softmax_cross_entropy_backward(len(xc) / len(x), cache))
            g = [layers[0].grads["theta"].astype(xp.float64),
                 layers[-1].grads["theta"].astype(xp.float64)]
            total = g if total is None else [a + b for a, b in zip(total, g)]
    finally:
        set_sampler(model, "lrt")
    return total


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="the table1.py run's seed")
    ap.add_argument("--train-limit", type=int, default=0, help="the table1.py run's slice")
    ap.add_argument("--out", type=Path, default=None,
                    help="the table1.py run's folder (default runs/table1/wWIDTH_sSEED[_nLIMIT])")
    ap.add_argument("--samples", type=int, default=30, help="weight samples (≥ 3)")
    ap.add_argument("--chunk", type=int, default=1000, help="examples per pass")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--data-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.samples < 3 or args.chunk < 1 or args.width < 1:
        ap.error("need --samples ≥ 3, --chunk ≥ 1 and --width ≥ 1")
    if args.out is None:
        limit = f"_n{args.train_limit}" if args.train_limit else ""
        args.out = Path("runs/table1") / f"w{args.width}_s{args.seed}{limit}"
    return args


def load_run(args: argparse.Namespace) -> tuple[Trainer, dict, str]:
    """The run's trainer at its checkpoint, its ``measured.json`` and the epoch it is at;
    SystemExit, naming the fix, when they are missing, damaged or do not belong together."""
    path = args.out / "measured.json"
    try:
        stored = json.loads(path.read_text())
        settings = stored["settings"]
        k, m = int(settings["k"]), int(settings["m"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"table1_gap.py: {path} cannot be read ({type(exc).__name__}: "
                         f"{exc}): run table1.py with the same --width/--seed first") from None
    trainer = make_trainer(args, 1)  # the epochs need not match for a resume
    if not trainer.checkpoint_path.exists():
        raise SystemExit(f"table1_gap.py: no checkpoint in {args.out}")
    try:
        trainer.resume()
    except CheckpointError as exc:
        raise SystemExit(f"table1_gap.py: {exc}") from None
    # the backend may differ (a CPU-measured run predicted on a GPU): the net is the same
    ns = argparse.Namespace(k=k, m=m, seed=args.seed, backend=settings.get("backend"),
                            width=args.width, train_limit=args.train_limit)
    if settings != measure_settings(ns, trainer):
        raise SystemExit(f"table1_gap.py: {path} was measured with {settings}, not "
                         f"{measure_settings(ns, trainer)}: give the run's --width, --seed and "
                         "--train-limit, or the --out of the run that wrote it")
    epoch = str(trainer.epoch)
    if trainer.batch_index:
        raise SystemExit(f"table1_gap.py: the checkpoint in {args.out} is in the middle of "
                         f"epoch {trainer.epoch + 1} (batch {trainer.batch_index}): table1.py "
                         "measures a net at the end of an epoch only")
    if epoch not in stored.get("epochs", {}):
        raise SystemExit(f"table1_gap.py: table1.py has not measured all four estimators at "
                         f"epoch {epoch}, where the checkpoint in {args.out} is")
    return trainer, stored, epoch


def main(argv=None) -> dict:
    args = parse(argv)
    xp = resolve_backend(args.backend)
    trainer, stored, epoch = load_run(args)
    m = int(stored["settings"]["m"])
    t0, acc = time.perf_counter(), VarianceSums(2)  # [bottom, top]
    for s in range(args.samples):
        acc.add(full_gradient(trainer.model, trainer.x, trainer.y, [args.seed, 5, s],
                              args.chunk, xp))
        print(f"weight sample {s + 1}/{args.samples}: {time.perf_counter() - t0:.0f} s",
              flush=True)
    names = ("bottom", "top")
    var, se = dict(zip(names, acc.variance())), dict(zip(names, acc.standard_error()))
    cell, ses = stored["epochs"][epoch], stored.get("standard_errors", {}).get(epoch, {})
    incs = stored.get("increments", {}).get(epoch, {})
    report: dict = {"epoch": int(epoch), "m": m, "samples": args.samples,
                    "examples": len(trainer.x), "full_gradient_variance": var,
                    "full_gradient_variance_se": se, "predicted_gap": {}, "predicted_gap_se": {},
                    "measured_gap": {}, "measured_gap_se": {}}
    print(f"\nepoch {epoch}, M = {m}: shared − per-example variance, predicted "
          f"(1 − 1/M)·Var_ξ(ḡ) from {args.samples} weight samples against table1.py's")
    for w in names:
        pred, pred_se = (1 - 1 / m) * var[w], (1 - 1 / m) * se[w]
        gap = cell[w]["shared_weights"] - cell[w]["per_example_weights"]
        pair = ("shared_weights", "per_example_weights")
        paired = [incs.get(w, {}).get(e) for e in pair]
        parts = [ses.get(w, {}).get(e) for e in pair]
        if None not in paired and len(paired[0]) == len(paired[1]) >= 2:
            # the two estimates share their minibatch indices (one host seed): increment r
            # of each comes from minibatch r, so their differences give the paired error
            diff = np.subtract(*paired)
            gap_se, how = float(np.std(diff, ddof=1) / math.sqrt(len(diff))), "paired"
        elif None not in parts:  # stored without increments: assumes no negative correlation
            gap_se, how = math.hypot(*parts), "unpaired"
        else:
            gap_se, how = None, None
        report.setdefault("measured_gap_se_kind", {})[w] = how
        report["predicted_gap"][w], report["predicted_gap_se"][w] = pred, pred_se
        report["measured_gap"][w], report["measured_gap_se"][w] = gap, gap_se
        shared = cell[w]["shared_weights"]
        z = (gap - pred) / math.hypot(gap_se, pred_se) if gap_se else None
        report.setdefault("z", {})[w] = z
        print(f"{w:>6}: predicted {pred:.3g} ± {pred_se:.2g} ({100 * pred / shared:.1f}% of "
              f"the shared estimate), measured {gap:.3g}"
              + (f" ± {gap_se:.2g} ({how}): {z:+.1f} combined standard errors from the "
                 "prediction" if gap_se else " (no standard errors stored)"))
    report["seconds"] = time.perf_counter() - t0
    if args.json:
        write_json(args.json, report)
    print(f"total {report['seconds']:.0f} s on {args.backend} ({os.cpu_count()} CPUs)")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
