"""Seconds per training step (and per 50,000-example epoch) of any model the main job builds.

For planning runs: ``python -m minivd train`` spends its epoch in these steps (forward,
backward, KL gradient, the projected Adam step, and the parameter average with
``--polyak``). Random images of MNIST's shape (the cost does not depend on the pixels);
batch 100; the median and the minimum of ``--steps`` steps after two warm-up steps.

    python benchmarks/bench_step.py --model lenet-5 --method sparse-vd
    python benchmarks/bench_step.py --model mlp --width 1024 --depth 3 --method vd-b --polyak
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import device_name  # noqa: E402

from minivd import make_rng, resolve_backend  # noqa: E402
from minivd.backend import synchronizer  # noqa: E402
from minivd.model import METHODS, build_model  # noqa: E402
from minivd.optim import Adam, ParameterAverage  # noqa: E402

BATCH, STEPS_PER_EPOCH = 100, 500


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet-5", choices=["mlp", "lenet-300-100", "lenet-5"])
    ap.add_argument("--method", default="sparse-vd", choices=list(METHODS))
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--polyak", action="store_true", help="also update a parameter average")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be ≥ 1")
    xp = resolve_backend(args.backend)
    sync = synchronizer(xp)
    model = build_model(args.model, args.method, width=args.width, depth=args.depth, seed=0,
                        backend=args.backend)
    opt, bounds, rng = Adam(1e-3), model.bounds(), make_rng(0, xp)
    avg = ParameterAverage(0.999) if args.polyak else None
    host = np.random.default_rng(0)
    xs = [xp.asarray(host.random((BATCH, 784), dtype=np.float32)) for _ in range(5)]
    ys = [xp.asarray(host.integers(0, 10, BATCH)) for _ in range(5)]

    def step(i: int) -> None:
        model.loss_and_grads(xs[i % 5], ys[i % 5], rng=rng, kl_scale=1 / 50_000)
        opt.step(model.parameters(), bounds=bounds)
        if avg is not None:
            avg.update(model.parameters())

    step(0), step(1)
    sync()
    ts = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        step(i)
        sync()
        ts.append(time.perf_counter() - t0)
    med, low = float(np.median(ts)), min(ts)
    name = args.model + (f" {args.width}x{args.depth}" if args.model == "mlp" else "")
    print(f"bench_step: {name}, {args.method}{', polyak' if avg else ''}, batch {BATCH}; "
          f"backend={args.backend} device={device_name(xp)} cpus={os.cpu_count()}")
    print(f"  step median {1e3 * med:7.1f} ms, min {1e3 * low:7.1f} ms  ->  "
          f"{med * STEPS_PER_EPOCH:6.1f} s per epoch ({STEPS_PER_EPOCH} steps, median)")


if __name__ == "__main__":
    main()
