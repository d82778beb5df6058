"""K15 Table 1: variance of the minibatch gradient under four estimators, and their speed.

Train an MLP 784-W-W-W-10 with variational dropout B (α per weight) on MNIST; after each of
``--epochs`` (e.g. 10 and 100) freeze it and, with every layer using one estimator (``lrt``,
``per_example_weights``, ``shared_weights``, ``mean``), draw K independent minibatches of M
examples (with replacement, fresh noise) and compute ∂(mean CE)/∂θ of the bottom and top
weight matrices in the K15 parameterisation (σ² = αθ²: the noise reaches θ's gradient through
γ and δ). The KL is deterministic and left out. Variance = the mean over the matrix's elements
of the unbiased sample variance of the K estimates (not the spread around the noise-free
gradient: the estimators' means differ from it). Each estimate's standard error, from the
spread of the K minibatches (``_variance.py``), is printed and written beside the variances
(``"standard_errors"``, the same layout as ``"epochs"``); ``table1_gap.py`` predicts the
shared-minus-per-example gap from the trained net.

    python benchmarks/paper/table1.py --quick --json table1_quick.json
    python benchmarks/paper/table1.py --width 1000 --epochs 10 100 --json table1.json

A run keeps its state in ``--out`` (by default ``runs/table1/wWIDTH_sSEED[_nLIMIT]``): the
training checkpoint (every epoch, and on Ctrl-C or SIGTERM), ``measured.json`` (the variances
measured so far, also of the estimators done at an epoch still being measured) and, while an
estimate runs, its sums so far (``measuring_eEPOCH_ESTIMATOR.npz``: every minute, and on
Ctrl-C or SIGTERM after the minibatch in progress; at width 1000 the per-example estimate
alone takes over an hour on a CPU). The same command run again continues from there
(bit-for-bit on NumPy): it trains on from the checkpoint and measures only what is missing. It
refuses a folder whose checkpoint or measurements were made with other settings (the net's
width, training slice and data are recorded with the measurements too).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

from minivd import make_rng, resolve_backend
from minivd.backend import synchronizer
from minivd.checkpoint import CheckpointError, fingerprint, write_json
from minivd.functional import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minivd.layers import VariationalDense
from minivd.train import TrainConfig, Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _resumable import StopFlag, load_measuring, save_measuring, stop_on_signals  # noqa: E402
from _variance import VarianceSums  # noqa: E402

ESTIMATORS = ("lrt", "per_example_weights", "shared_weights", "mean")
PAPER = {  # K15 arXiv v1 Table 1 (PAPER.md §6)
    "10": {"top": {"lrt": 7.8e3, "per_example_weights": 1.4e4, "shared_weights": 4.9e4,
                   "mean": 2.8e3},
           "bottom": {"lrt": 1.9e2, "per_example_weights": 4.3e2, "shared_weights": 8.5e2,
                      "mean": 1.3e2}},
    "100": {"top": {"lrt": 1.2e3, "per_example_weights": 2.6e3, "shared_weights": 4.3e3,
                    "mean": 5.9e1},
            "bottom": {"lrt": 1.1e2, "per_example_weights": 2.5e2, "shared_weights": 3.3e2,
                       "mean": 9.0e0}},
}
EPOCH_EXAMPLES = 50_000  # estimator speed is per epoch of MNIST's full training set
PER_EXAMPLE_CHUNK = 50  # examples per pass of the per-example estimator (noise: M·D_in·D_out)
SAVE_EVERY = 60.0  # seconds between saves of an estimate in progress
STATS = ("standard_errors", "increments")  # kept beside the variances, per estimate


def set_sampler(model, sampler: str) -> list[VariationalDense]:
    layers = [layer for layer in model.layers if isinstance(layer, VariationalDense)]
    for layer in layers:
        layer.sampler = sampler
    return layers


def minibatch_grads(model, xb, yb, rng, sampler: str, xp) -> list:
    """∂(mean CE)/∂θ of every variational layer for one minibatch (data term only).

    LRT and per-example samples are independent across examples, so for the per-example
    estimator the minibatch is processed in chunks and the chunk gradients are weighted by
    their share of the minibatch: the same estimate, without M·D_in·D_out noise in memory. One
    shared weight sample covers the whole minibatch, so that estimator is never chunked.
    """
    layers = set_sampler(model, sampler)
    m = len(xb)
    step = PER_EXAMPLE_CHUNK if sampler == "per_example_weights" else m
    total = None
    for lo in range(0, m, step):
        xc, yc = xb[lo:lo + step], yb[lo:lo + step]
        logits = model.forward(xc, rng=rng, train=True)
        _, cache = softmax_cross_entropy_forward(logits, yc)
        model.backward(softmax_cross_entropy_backward(len(xc) / m, cache))
        g = [layer.grads["theta"] for layer in layers]
        total = g if total is None else [a + b for a, b in zip(total, g)]
    return total


def gradient_variance(model, x, y, sampler, k, m, seed, xp, state: Path | None = None,
                      settings: dict | None = None, stop: StopFlag | None = None
                      ) -> dict[str, dict[str, float | None]]:
    """Mean over elements of the unbiased variance of K minibatch gradients, and its standard
    error (``_variance.VarianceSums``) and its K − 1 increments (for a paired error of the
    difference of two estimators measured on the same minibatches):
    ``{"variance": {"bottom": v, "top": v}, "se": {...}, "increments": {...}}``.

    With ``state`` (a file), the estimate in progress (minibatches done, the shifted sums and
    increments, the generators' states, ``settings``) is saved there every ``SAVE_EVERY``
    seconds and when ``stop`` is set (then KeyboardInterrupt is raised, unless that was the
    last minibatch: the estimate is then returned, and the caller stops once it is stored),
    and a saved one is continued: bit for bit on NumPy; on CuPy, whose generator state cannot
    be saved, with a fresh noise stream. The caller removes the file once the result is stored.
    """
    host = np.random.default_rng(seed)
    rng = make_rng(seed + 1, xp)
    acc = VarianceSums(2)  # [bottom, top]
    if state is not None and state.exists():
        acc, host_state, noise_state = load_measuring(state, settings, xp)
        host.bit_generator.state = host_state
        if noise_state is not None and xp is np:
            rng.bit_generator.state = noise_state
        else:
            rng = make_rng(int(np.random.SeedSequence([seed + 1, acc.count])
                               .generate_state(1)[0]), xp)
        print(f"continuing {sampler} from minibatch {acc.count + 1} of {k} ({state})",
              flush=True)
    last_save = time.perf_counter()
    while acc.count < k:
        idx = host.integers(0, len(x), m)
        xb, yb = xp.asarray(x[idx]), xp.asarray(y[idx])
        g = minibatch_grads(model, xb, yb, rng, sampler, xp)
        acc.add([g[0].astype(xp.float64), g[-1].astype(xp.float64)])  # bottom, top
        stopping = stop is not None and stop.requested
        if state is not None and acc.count < k and (
                stopping or time.perf_counter() - last_save > SAVE_EVERY):
            save_measuring(state, settings, acc, host, rng, xp)
            last_save = time.perf_counter()
        if stopping and acc.count < k:
            raise KeyboardInterrupt
    names = ("bottom", "top")
    return {"variance": dict(zip(names, acc.variance())),
            "se": dict(zip(names, acc.standard_error())),
            "increments": dict(zip(names, acc.increments))}


def estimator_speed(model, x, y, batch, steps, xp) -> dict[str, float]:
    """Seconds per epoch of MNIST's 50,000 training examples (``50,000 / batch`` steps) of each
    estimator: forward, backward, KL gradient, Adam; timed over ``steps`` steps (drawn from
    ``x``, which may be a slice) and extrapolated."""
    from minivd.optim import Adam

    out = {}
    rng, bounds = make_rng(0, xp), model.bounds()
    for sampler in ESTIMATORS:
        set_sampler(model, sampler)
        opt, host = Adam(1e-9), np.random.default_rng(0)  # tiny lr: the net stays as it is
        sync = synchronizer(xp)
        ts = []
        for _ in range(steps + 1):
            idx = host.integers(0, len(x), batch)
            xb, yb = xp.asarray(x[idx]), xp.asarray(y[idx])
            t0 = time.perf_counter()
            model.loss_and_grads(xb, yb, rng=rng, kl_scale=1 / len(x))
            opt.step(model.parameters(), bounds=bounds)  # projected, as training steps
            sync()
            ts.append(time.perf_counter() - t0)
        out[sampler] = float(np.median(ts[1:])) * (EPOCH_EXAMPLES // batch)
    set_sampler(model, "lrt")
    return out


def print_table(results: dict, errors: dict | None = None) -> None:
    print(f"\n{'estimator':<22}" + "".join(
        f"{f'{w} {e} ep':>22}" for e in results for w in ("top", "bottom")))
    for est in ESTIMATORS:
        row = f"{est:<22}"
        for e, r in results.items():
            for w in ("top", "bottom"):
                paper = PAPER.get(e, {}).get(w, {}).get(est)
                row += f"{r[w][est]:>11.3g} ({paper:.2g})" if paper else f"{r[w][est]:>22.3g}"
        print(row)
    print("(ours: variance of ∂(mean CE)/∂θ; the paper's, in parentheses where it has that "
          "epoch, are of the N-scaled objective: multiply ours by N² = 2.5e9 to compare "
          "magnitudes)")
    for e, r in results.items():
        for w in ("top", "bottom"):
            v = r[w]
            print(f"epoch {e} {w}: shared/LRT {v['shared_weights'] / v['lrt']:.2f}x, "
                  f"per-example/LRT {v['per_example_weights'] / v['lrt']:.2f}x, "
                  f"LRT/mean {v['lrt'] / v['mean']:.2f}x")
    for e, cell in (errors or {}).items():
        for w in ("top", "bottom"):
            rel = [f"{est} {100 * cell[w][est] / results[e][w][est]:.1f}%"
                   for est in ESTIMATORS if cell.get(w, {}).get(est) is not None
                   and results[e][w][est] > 0]
            if rel:
                print(f"epoch {e} {w}: standard error (relative, from the K − 1 increments): "
                      + ", ".join(rel))


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--k", type=int, default=100, help="minibatches per estimate (≥ 2)")
    ap.add_argument("--m", type=int, default=1000, help="minibatch size of the estimates")
    ap.add_argument("--train-limit", type=int, default=0, help="first N training examples")
    ap.add_argument("--speed-steps", type=int, default=5, help="0 skips the speed table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None,
                    help="the run's checkpoint and measurements, continued when the same "
                         "command runs again (default runs/table1/wWIDTH_sSEED[_nLIMIT])")
    ap.add_argument("--quick", action="store_true",
                    help="width 128, 10,000 examples, measured once after 3 epochs, K = 100, "
                         "M = 1000 (under 5 minutes on 2 CPU cores)")
    ap.add_argument("--data-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.train_limit, args.epochs, args.k = 128, 10_000, [3], 100
    if args.k < 2 or args.m < 1 or args.width < 1 or min(args.epochs) < 1:
        ap.error("need --k ≥ 2, --m ≥ 1, --width ≥ 1 and epochs ≥ 1")
    args.epochs = sorted(set(args.epochs))
    if args.out is None:
        limit = f"_n{args.train_limit}" if args.train_limit else ""
        args.out = Path("runs/table1") / f"w{args.width}_s{args.seed}{limit}"
    return args


def epoch_stats(stats: dict, results: dict) -> dict:
    """``stats`` (standard errors, increments) of the epochs in ``results``, in the layout of
    ``"epochs"`` (empty cells for epochs measured before they were kept)."""
    return {key: {e: stats[key].get(e, {"top": {}, "bottom": {}}) for e in results}
            for key in STATS}


def make_trainer(args: argparse.Namespace, epochs: int) -> Trainer:
    """The run's trainer (``--width``, ``--seed``, ``--train-limit``, ``--backend``, ``--out``;
    MNIST, or ``--data-file``), not yet resumed; also used by ``table1_gap.py``."""
    if args.data_file:
        from minivd.data import load_npz_dataset

        data = load_npz_dataset(args.data_file)
    else:
        from minivd.data import load_mnist

        data = load_mnist()
    cfg = TrainConfig(dataset="mnist", model="mlp", width=args.width, depth=3, method="vd-b",
                      epochs=epochs, backend=args.backend, seed=args.seed,
                      train_limit=args.train_limit)
    return Trainer(cfg, data, args.out, log=io.StringIO())


def measure_settings(args: argparse.Namespace, trainer: Trainer) -> dict:
    """What a stored measurement depends on: the estimate's own settings and the net's (so a
    ``measured.json`` cannot be reused for another net, even beside another checkpoint)."""
    return {"k": args.k, "m": args.m, "seed": args.seed, "backend": args.backend,
            "width": args.width, "train_limit": args.train_limit, "data": trainer.data_id}


def resume(trainer: Trainer, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Continue a run stopped earlier: load ``--out``'s checkpoint and return every variance
    stored in its ``measured.json``, also of epochs not in ``--epochs``, and those of the
    estimators already done for an epoch still being measured, and the standard errors and
    increments of both (``{"standard_errors": {}, "increments": {}}``; ``{}, {}`` and that for
    a new run; a file written before they were kept has none).

    Raises SystemExit, naming the fix, when the folder was made with other settings (its
    checkpoint or its measurements), when ``measured.json`` is damaged or has no checkpoint
    beside it, or when an epoch to measure has been trained past (also by part of the next
    epoch) without being measured."""
    path, ckpt = args.out / "measured.json", trainer.checkpoint_path
    done: dict = {}
    partial: dict = {}
    stats: dict = {key: {} for key in STATS}
    if path.exists():
        if not ckpt.exists():
            raise SystemExit(f"table1.py: {path} has no checkpoint beside it, so nothing ties "
                             "its values to a net: remove it, or choose another --out")
        try:
            stored = json.loads(path.read_text())
            settings, done = stored["settings"], dict(stored["epochs"])
            partial = dict(stored.get("partial", {}))
            stats = {key: dict(stored.get(key, {})) for key in STATS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"table1.py: {path} cannot be read ({type(exc).__name__}: {exc}): "
                             "remove it (the checkpoint stays) or choose another --out") from None
        if settings != measure_settings(args, trainer):
            raise SystemExit(f"table1.py: {path} was measured with {settings}, not "
                             f"{measure_settings(args, trainer)}: choose another --out")
    if ckpt.exists():
        try:
            trainer.resume()  # refuses a checkpoint trained with other settings
        except CheckpointError as exc:
            raise SystemExit(f"table1.py: {exc}: choose another --out") from None
        print(f"resuming after epoch {trainer.epoch}, batch {trainer.batch_index} from {ckpt}"
              + (f" (measured: epochs {', '.join(done)})" if done else ""), flush=True)
    past = trainer.epoch + (1 if trainer.batch_index else 0)  # epochs begun or done
    missed = [e for e in args.epochs if e < past and str(e) not in done]
    if missed:
        raise SystemExit(f"table1.py: the checkpoint in {args.out} is at epoch {trainer.epoch}, "
                         f"batch {trainer.batch_index}, past epoch(s) {missed}, which were never "
                         "measured: leave them out of --epochs, or start a new run with another "
                         "--out")
    return done, partial, stats


def main(argv=None) -> dict:
    args = parse(argv)
    xp = resolve_backend(args.backend)
    trainer = make_trainer(args, args.epochs[0])
    x, y = trainer.x, trainer.y
    (done, partial, stats), t_start = resume(trainer, args), time.perf_counter()
    results = {str(e): done[str(e)] for e in args.epochs if str(e) in done}
    resumed_from = trainer.epoch

    def progress(t: Trainer) -> None:
        print(f"epoch {t.epoch}/{args.epochs[-1]}: valid error "
              f"{100 * t.history[-1]['valid_error']:.2f}%, "
              f"{t.history[-1]['seconds']:.1f} s of steps", flush=True)

    for e in args.epochs:
        if str(e) in results:
            continue
        trainer.cfg.epochs = e
        try:
            trainer.fit(on_epoch=progress)
        except KeyboardInterrupt:
            raise SystemExit(f"interrupted after epoch {trainer.epoch}: checkpoint saved in "
                             f"{args.out}; the same command continues") from None
        print(f"trained to epoch {e} (valid error "
              f"{100 * trainer.history[-1]['valid_error']:.2f}%), measuring...", flush=True)
        # the estimators already measured at this epoch (a run stopped while measuring)
        cell: dict = partial.get(str(e), {"top": {}, "bottom": {}})
        stat_cells = {key: stats[key].setdefault(str(e), {"top": {}, "bottom": {}})
                      for key in STATS}
        # sha256 of the parameters: what an estimate in progress is measured on
        net = fingerprint(*(a for _, a in sorted(trainer.model.state().items())))
        flag = StopFlag()
        with stop_on_signals(flag):
            for est in ESTIMATORS:
                if est in cell["top"]:
                    continue
                settings = {**measure_settings(args, trainer), "epoch": e, "estimator": est,
                            "net": net}
                state = args.out / f"measuring_e{e}_{est}.npz"
                try:
                    v = gradient_variance(trainer.model, x, y, est, args.k, args.m,
                                          args.seed + 7, xp, stop=flag, settings=settings,
                                          state=state)
                except KeyboardInterrupt:
                    raise SystemExit(f"interrupted while measuring epoch {e} ({est}): its "
                                     f"state is saved in {args.out}; the same command "
                                     "continues") from None
                for w in ("top", "bottom"):
                    cell[w][est] = v["variance"][w]
                    stat_cells["standard_errors"][w][est] = v["se"][w]
                    stat_cells["increments"][w][est] = v["increments"][w]
                partial[str(e)] = cell
                if len(cell["top"]) == len(ESTIMATORS):
                    del partial[str(e)]
                    results[str(e)] = done[str(e)] = cell
                # after every estimate, so a stopped run keeps what it has (and every epoch
                # measured before, also those not in this run's --epochs)
                write_json(args.out / "measured.json", {
                    "settings": measure_settings(args, trainer),
                    "epochs": {k: done[k] for k in sorted(done, key=int)}, "partial": partial,
                    **stats})
                state.unlink(missing_ok=True)  # only now: the result is stored
                if flag.requested:  # a signal between two estimates
                    raise SystemExit(f"interrupted while measuring epoch {e}: the same "
                                     "command continues")
        set_sampler(trainer.model, "lrt")
        if args.json:
            write_json(args.json, {"epochs": results, "partial": True,
                                   **epoch_stats(stats, results)})
    results = {str(e): results[str(e)] for e in args.epochs}
    print_table(results, epoch_stats(stats, results)["standard_errors"])
    # seconds: this invocation's wall time (a resumed run's earlier part is not in it)
    report = {"epochs": results, "config": {k: (str(v) if isinstance(v, Path) else v)
                                            for k, v in vars(args).items()},
              "backend": args.backend, "seconds": time.perf_counter() - t_start,
              "resumed_from_epoch": resumed_from, **epoch_stats(stats, results)}
    if args.speed_steps:
        report["seconds_per_epoch"] = estimator_speed(trainer.model, x, y, 100,
                                                      args.speed_steps, xp)
        report["speed_at_epoch"] = trainer.epoch
        print(f"seconds per {EPOCH_EXAMPLES:,}-example epoch (batch 100; the net at epoch "
              f"{trainer.epoch}; timed over {args.speed_steps} steps, extrapolated): " + ", ".join(
                  f"{k} {v:.1f}" for k, v in report["seconds_per_epoch"].items()))
    if args.json:
        write_json(args.json, report)
    print(f"total {report['seconds']:.0f} s on {args.backend} ({os.cpu_count()} CPUs)")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
