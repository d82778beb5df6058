"""Sparse variational dropout (M17) on LeNet-300-100 and LeNet-5, and a Fashion-MNIST comparison.

M17's recipe (authors' code, PAPER.md §5): Adam, batch 100, 200 epochs, lr 1e-3 (flat to
epoch 100, then linear to 0), log σ² initialised at −10, KL weight 0 for epochs 0–4 then a
linear ramp to 1 by epoch 20. We report test error with the mean weights masked at
log α ≥ 3, per-layer sparsity and the compression ratio (weights only), beside M17's
1.92% / 68× (LeNet-300-100) and 0.75% / 280× (LeNet-5). ``--fashion`` trains LeNet-5 on
Fashion-MNIST with every method instead (our extension; no paper numbers).
Each run is stored as its own JSON under ``--results`` and skipped when present; a run that
was stopped (Ctrl-C saves a checkpoint; so does every epoch) continues from its checkpoint
in ``RESULTS/runs/`` when the same command is run again, so a 200-epoch LeNet-5 run can span
several sessions. Each run prints a line per epoch.

    python benchmarks/paper/sparse_vd.py --models lenet-300-100 lenet-5 --epochs 200
    python benchmarks/paper/sparse_vd.py --fashion --epochs 20  # ~15-35 min per method, one core
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

M17 = {"lenet-300-100": (1.92, 68), "lenet-5": (0.75, 280)}
FASHION_METHODS = ("none", "dropout", "gaussian-a", "vd-a", "gaussian-b", "vd-b", "sparse-vd")


def run(model: str, method: str, dataset: str, seed: int, args: argparse.Namespace) -> dict:
    from minivd.checkpoint import write_json
    from minivd.data import load_dataset, load_npz_dataset
    from minivd.train import TrainConfig, Trainer

    path = args.results / f"{dataset}_{model}_{method}_s{seed}_e{args.epochs}.json"
    if path.exists():
        return json.loads(path.read_text())
    data = load_npz_dataset(args.data_file) if args.data_file else load_dataset(dataset)
    e = args.epochs
    cfg = TrainConfig(dataset=dataset, model=model, method=method, epochs=e, batch=100, lr=1e-3,
                      lr_schedule="linear", lr_decay_start=e / 2, kl_delay=5 * e / 200,
                      kl_warmup=15 * e / 200, backend=args.backend, seed=seed,
                      train_limit=args.train_limit)
    t0 = time.time()
    trainer = Trainer(cfg, data, args.results / "runs" / path.stem, log=io.StringIO())
    if trainer.checkpoint_path.exists():  # a run stopped earlier (Ctrl-C, end of a session)
        trainer.resume()  # bit-for-bit on NumPy
        print(f"{path.stem}: resuming after epoch {trainer.epoch} of {e} from "
              f"{trainer.checkpoint_path}", flush=True)
    resumed_from = trainer.epoch

    def progress(t: Trainer) -> None:
        h = t.history[-1]
        print(f"{path.stem}: epoch {t.epoch}/{e}, valid {100 * h['valid_error']:.2f}% (mean "
              f"weights{', masked' if method == 'sparse-vd' else ''}), {h['seconds']:.1f} s "
              "of steps", flush=True)

    trainer.fit(on_epoch=progress)
    m = trainer.final_metrics()
    # seconds: this invocation's wall time; sum(epoch_seconds): the training steps of all
    m.update(seconds=time.time() - t0, backend=args.backend, resumed_from_epoch=resumed_from)
    write_json(path, m)
    return m


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet-300-100", "lenet-5"],
                    choices=["lenet-300-100", "lenet-5"])
    ap.add_argument("--fashion", action="store_true")
    ap.add_argument("--methods", nargs="+", default=list(FASHION_METHODS),
                    choices=list(FASHION_METHODS), help="with --fashion")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--results", type=Path, default=Path("benchmarks/paper/results/sparse_vd"))
    ap.add_argument("--train-limit", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be ≥ 1")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    if args.fashion:
        print(f"{'method':<12} {'test error':>10}")
        for method in args.methods:
            for s in args.seeds:
                m = run("lenet-5", method, "fashion-mnist", s, args)
                print(f"{method:<12} {100 * m['test_error']:9.2f}%", flush=True)
        return 0
    for model in args.models:
        for s in args.seeds:
            m = run(model, "sparse-vd", "mnist", s, args)
            err, comp = M17[model]
            layers = ", ".join(f"{100 * v:.1f}%" for v in m["sparsity"].values())
            print(f"{model} seed {s}: test error {100 * m['test_error']:.2f}% (M17 {err}%), "
                  f"compression {m['compression']:.0f}x (M17 {comp}x), sparsity per layer "
                  f"{layers}; {m['seconds']:.0f} s on {m['backend']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
