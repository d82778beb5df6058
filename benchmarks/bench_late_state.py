"""Step time late in training against a fresh start: the subnormal-float slowdown.

Late in training, confidently classified examples give softmax probabilities that underflow
toward the subnormal floats, and rarely non-zero gradients leave optimiser moments decaying
through them; x86 arithmetic on subnormals is ~100× slower and NumPy has no flush-to-zero
mode. ``minivd`` flushes both (``softmax_cross_entropy_backward``, ``flush_subnormals``).
This script loads a run's checkpoint (``RUN_DIR/checkpoint.npz``, written by the main job or
the paper scripts; it is read, never written), builds the same model from its seed as the
floor, and alternates training steps of the two on the same real minibatches. It prints the
medians of forward+backward and of the optimiser step, their late/fresh ratios, and how
many subnormal values the late state's optimiser moments and gradients hold.

    python benchmarks/bench_late_state.py \
        benchmarks/paper/results/mnist_figure/runs/gaussian-b_w500_s1
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

from minivd.checkpoint import load_checkpoint  # noqa: E402
from minivd.data import load_dataset, load_npz_dataset  # noqa: E402
from minivd.optim import subnormal_mask  # noqa: E402
from minivd.train import TrainConfig, Trainer  # noqa: E402


def subnormals(arrays) -> int:
    return sum(int(np.count_nonzero(subnormal_mask(a))) for a in arrays)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a run's output folder (holds checkpoint.npz)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each (after warm-up)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--data-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        ap.error("need --steps ≥ 1 and --warmup ≥ 0")
    src = args.run_dir / "checkpoint.npz"
    if not src.is_file():
        ap.error(f"{src} does not exist")
    _, meta = load_checkpoint(src)
    cfg = TrainConfig(**meta["config"])
    if cfg.backend != "numpy":
        ap.error("the subnormal slowdown is a CPU effect: run it on a NumPy checkpoint")
    data = load_npz_dataset(args.data_file) if args.data_file else load_dataset(cfg.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        late_dir, fresh_dir = Path(tmp, "late"), Path(tmp, "fresh")
        late_dir.mkdir()
        shutil.copy(src, late_dir / "checkpoint.npz")
        late = Trainer(cfg, data, late_dir, log=io.StringIO())
        late.resume()
        fresh = Trainer(cfg, data, fresh_dir, log=io.StringIO())
        state_sub = subnormals(late.opt.state_arrays().values())
        flush = getattr(late.opt, "flush_subnormals", None)
        if flush is not None:  # as the trainer does after every epoch
            flush()
        host = np.random.default_rng(0)
        times: dict[str, list[tuple[float, float]]] = {"late": [], "fresh": []}
        grad_sub = []
        for i in range(args.warmup + args.steps):
            idx = host.integers(0, len(late.x), cfg.batch)
            for name, t in (("late", late), ("fresh", fresh)):
                t0 = time.perf_counter()
                t.model.loss_and_grads(t.x[idx], t.y[idx], rng=t.noise_rng,
                                       kl_scale=cfg.beta(t.epoch) / t.n)
                t1 = time.perf_counter()
                if name == "late":
                    grad_sub.append(subnormals(g for _, _, g in t.model.parameters()))
                t2 = time.perf_counter()
                t.opt.step(t.model.parameters(), lr=t.schedule(t.epoch), bounds=t.bounds)
                t3 = time.perf_counter()
                if i >= args.warmup:
                    times[name].append((t1 - t0, t3 - t2))
    med = {k: np.median(np.array(v), axis=0) for k, v in times.items()}
    print(f"bench_late_state: {args.run_dir} ({cfg.model} {cfg.width}x{cfg.depth}, "
          f"{cfg.method}) at epoch {meta['epoch']} of {cfg.epochs}; cpus={os.cpu_count()}, "
          f"{args.steps} alternating steps after {args.warmup} warm-up")
    print(f"  optimiser moments: {state_sub} subnormal values in the checkpoint; late "
          f"gradients: {int(np.median(grad_sub[args.warmup:]))} subnormal values per step "
          "(median)")
    for k in ("late", "fresh"):
        fb, op = med[k]
        print(f"  {k:5s}  fwd+bwd {1e3 * fb:7.1f} ms   optimiser {1e3 * op:6.1f} ms")
    r = med["late"] / med["fresh"]
    print(f"  late / fresh: fwd+bwd {r[0]:.2f}x, optimiser {r[1]:.2f}x, step "
          f"{med['late'].sum() / med['fresh'].sum():.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
