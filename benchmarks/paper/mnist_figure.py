"""K15's MNIST figure: test error of seven methods against hidden-layer width (3 hidden layers).

Every cell (method × width × seed) is trained by :class:`minivd.train.Trainer` and stored in
its own JSON file under ``--results`` as soon as it finishes, so the grid can be filled over
several runs and machines; cells already there are skipped, and a cell that was stopped
continues from its checkpoint. ``--jobs N`` runs N cells as parallel processes (on the GPU
machine a small model leaves the GPU mostly idle). Each cell prints a line per epoch.

Recipe (documented; K15 gives Adam and early stopping, the rest is ours): Adam, batch 100,
learning rate 1e-3 flat for the first half of ``--epochs`` then linear to 0, temporal
(Polyak) averaging of the parameters with decay 0.999 for evaluation, dropout rates p = 0.2 on
the input and 0.5 on hidden layers (initial p for the variational methods), and early
stopping: the reported test error is the one at the epoch of lowest validation error.

    python benchmarks/paper/mnist_figure.py --methods vd-b none --widths 100 250 --seeds 0 1 2
    python benchmarks/paper/mnist_figure.py --plot-only

``--p-input P`` trains the same nets with rate P on the input layer instead (a check, not a
figure cell: it needs a ``--results`` folder of its own; for Gaussian B, P = 0.5 puts α = 1
on the input, where variational B's learned α end up).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

WIDTHS = (100, 250, 500, 750, 1000, 1250)
DEFAULT_RESULTS = Path("benchmarks/paper/results/mnist_figure")
METHODS = {  # our method name: the paper's label
    "none": "No dropout", "dropout": "Binary dropout", "gaussian-a": "Gaussian dropout A",
    "vd-a": "Variational dropout A", "vd-a2": "Variational dropout A2",
    "gaussian-b": "Gaussian dropout B", "vd-b": "Variational dropout B",
}
PAPER = {  # test error (%) read off K15's figure (PAPER.md §6), by width
    "none": (1.44, 1.30, 1.21, 1.18, 1.18, 1.18),
    "dropout": (2.17, 1.39, 1.22, 1.10, 1.02, 1.06),
    "gaussian-a": (2.40, 1.42, 1.18, 1.10, 1.03, 0.99),
    "vd-a": (1.42, 1.26, 1.12, 1.06, 1.02, 1.00),
    "vd-a2": (1.50, 1.21, 1.07, 0.95, 0.95, 0.93),
    "gaussian-b": (2.01, 1.46, 1.27, 1.26, 1.19, 1.27),
    "vd-b": (1.58, 1.37, 1.29, 1.22, 1.17, 1.21),
}


def cell_path(results: Path, method: str, width: int, seed: int, epochs: int) -> Path:
    return results / f"{method}_w{width}_s{seed}_e{epochs}.json"


def early_stop(history: list[dict]) -> dict:
    """The first epoch of lowest validation error (its test error is the cell's result)."""
    return min(history, key=lambda h: h["valid_error"])


def run_cell(method: str, width: int, seed: int, args: argparse.Namespace) -> dict:
    """Train one cell with the recipe; return (and store) its record.

    The test error is measured after every epoch and kept in the history, so early stopping
    can be decided afterwards and a stopped cell (Ctrl-C, the end of a session) continues from
    its checkpoint in ``RESULTS/runs/`` when the same command is run again.
    """
    from minivd.checkpoint import write_json
    from minivd.data import load_mnist, load_npz_dataset
    from minivd.train import TrainConfig, Trainer

    data = load_npz_dataset(args.data_file) if args.data_file else load_mnist()
    cfg = TrainConfig(model="mlp", width=width, depth=3, method=method, epochs=args.epochs,
                      batch=100, lr=1e-3, lr_schedule="linear",
                      lr_decay_start=args.epochs / 2, polyak=0.999, backend=args.backend,
                      seed=seed, train_limit=args.train_limit,
                      **({} if args.p_input is None else {"p_input": args.p_input}))
    name = f"{method} w={width} seed={seed}"
    out = args.results / "runs" / f"{method}_w{width}_s{seed}"
    trainer = Trainer(cfg, data, out, log=io.StringIO())
    if trainer.checkpoint_path.exists():
        trainer.resume()  # bit-for-bit on NumPy; refuses a checkpoint made with other settings
        if all("test_error" in h for h in trainer.history):
            print(f"{name}: resuming after epoch {trainer.epoch} of {args.epochs}", flush=True)
        else:  # made before the test error was recorded per epoch: early stopping can't be redone
            print(f"{name}: {trainer.checkpoint_path} has no per-epoch test error; "
                  "starting the cell over", flush=True)
            trainer = Trainer(cfg, data, out, log=io.StringIO())
    resumed_from = trainer.epoch

    def on_epoch(t: Trainer) -> None:
        h = t.history[-1]
        h["test_error"] = t.evaluate(data.x_test, data.y_test)["error"]
        print(f"{name}: epoch {t.epoch}/{args.epochs}, valid {100 * h['valid_error']:.2f}%, "
              f"{h['seconds']:.1f} s of steps", flush=True)

    t0 = time.time()
    trainer.fit(on_epoch=on_epoch)
    best = early_stop(trainer.history)
    record = {"method": method, "width": width, "seed": seed, "epochs": args.epochs,
              "test_error": best["test_error"], "best_epoch": best["epoch"],
              "best_valid_error": best["valid_error"],
              "final_test_error": trainer.history[-1]["test_error"],
              # this invocation's wall time; sum(h["seconds"]) is the training steps of all
              "seconds": time.time() - t0, "resumed_from_epoch": resumed_from,
              "backend": args.backend, "host": platform.node(),
              "train_limit": args.train_limit, "history": trainer.history}
    if args.p_input is not None:
        record["p_input"] = args.p_input
    write_json(cell_path(args.results, method, width, seed, args.epochs), record)
    return record


def load_cells(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*_w*_s*_e*.json"))]


def plot(results: Path, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = load_cells(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, group in zip(axes, (("none", "dropout", "gaussian-a", "vd-a", "vd-a2"),
                                ("none", "gaussian-b", "vd-b"))):
        for i, m in enumerate(group):
            color = f"C{i}"
            ax.plot(WIDTHS, PAPER[m], "--", color=color, alpha=0.6)
            ours = {}
            for c in cells:
                if c["method"] == m:
                    ours.setdefault(c["width"], []).append(100 * c["test_error"])
            if ours:
                w = sorted(ours)
                mean = [np.mean(ours[k]) for k in w]
                # the sample sd (ddof = 1), as on the results page; none for a single seed
                spread = [np.std(ours[k], ddof=1) if len(ours[k]) > 1 else 0.0 for k in w]
                ns = sorted({len(v) for v in ours.values()})
                n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
                ax.errorbar(w, mean, yerr=spread, fmt="o-", color=color, capsize=3,
                            label=f"{METHODS[m]} (n={n} seeds per width)")
            else:
                ax.plot([], [], "o-", color=color, label=f"{METHODS[m]} (not run)")
        ax.set_xlabel("hidden units per layer (3 layers)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test error (%)")
    fig.suptitle("MNIST, 3 hidden layers: solid = ours (mean ± sd over seeds), "
                 "dashed = K15's figure", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--widths", nargs="+", type=int, default=list(WIDTHS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--jobs", type=int, default=1, help="cells run as parallel processes")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--p-input", type=float, default=None,
                    help="a rate other than the recipe's 0.2 on the input layer (for the "
                         "Gaussian methods α = p/(1 − p)); not a figure cell, so it needs a "
                         "--results folder of its own")
    ap.add_argument("--plot", type=Path, default=None, help="(default RESULTS/mnist_figure.png)")
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--train-limit", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.jobs < 1 or min(args.widths) < 1:
        ap.error("need --epochs ≥ 1, --jobs ≥ 1 and widths ≥ 1")
    if args.p_input is not None:
        if not 0 < args.p_input < 1:
            ap.error(f"--p-input must be in (0, 1), got {args.p_input}")
        if args.results.resolve() == DEFAULT_RESULTS.resolve():
            ap.error("--p-input runs are not the figure's cells: give them their own --results")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    todo = []
    for m, w, s in itertools.product(args.methods, args.widths, args.seeds):
        path = cell_path(args.results, m, w, s, args.epochs)
        if not path.exists():
            todo.append((m, w, s))
            continue
        had = json.loads(path.read_text()).get("p_input")
        if had != args.p_input:
            raise SystemExit(f"{path} was trained with another --p-input ({had}); "
                             "give this run its own --results")
    if not args.plot_only:
        print(f"{len(todo)} cells to run ({args.jobs} at a time) on {args.backend}", flush=True)
        if args.jobs == 1:
            for m, w, s in todo:
                r = run_cell(m, w, s, args)
                print(f"{m} w={w} seed={s}: test {100 * r['test_error']:.2f}% "
                      f"(epoch {r['best_epoch']}), {r['seconds']:.0f} s", flush=True)
        else:
            base = [a for a in (argv if argv is not None else sys.argv[1:])]
            procs: list[subprocess.Popen] = []
            for m, w, s in todo:
                while len(procs) >= args.jobs:
                    procs = [p for p in procs if p.poll() is None]
                    time.sleep(1)
                cmd = [sys.executable, os.path.abspath(__file__), *base, "--jobs", "1",
                       "--methods", m, "--widths", str(w), "--seeds", str(s)]
                procs.append(subprocess.Popen(cmd))
            if any(p.wait() for p in procs):
                print("some cells failed", file=sys.stderr)
                return 1
    path = plot(args.results, args.plot or args.results / "mnist_figure.png")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
