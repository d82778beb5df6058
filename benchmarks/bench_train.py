"""Seconds per MNIST epoch of the MLP 784-1024-1024-1024-10 with variational dropout B.

Per-weight α on every layer, batch 100, Adam: the paper's largest fully connected setting.
We time ``--steps`` training steps (forward, backward, KL gradient, Adam with the projection
of ``log α ≤ 0`` folded in, as ``python -m minivd train`` steps) on the real MNIST images when
they are cached (random images of the same shape otherwise: the cost does not depend on the
pixel values) and scale to one epoch of 500 steps. The step is split by timing its parts
separately in the same run:

* matrix products: the six per layer the LRT needs (``x@μ``, ``x²@σ²``, four in backward;
  two fewer in the first layer, whose input is data and needs no gradient);
* noise: drawing the ``(100, D_out)`` normals of every layer;
* optimiser: one Adam step over all parameters (θ and log α: 5.8 M numbers), with the
  projection;
* elementwise layer work: the rest (K15 map, KL gradient, LRT elementwise, cross-entropy).

    python benchmarks/bench_train.py [--backend numpy|cupy] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import device_name, synchronizer  # noqa: E402

from minivd import make_rng, resolve_backend  # noqa: E402
from minivd.model import build_mlp  # noqa: E402
from minivd.optim import Adam  # noqa: E402
from minivd.random import standard_normal  # noqa: E402

WIDTHS = [784, 1024, 1024, 1024, 10]
BATCH, STEPS_PER_EPOCH = 100, 500


def images(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from minivd.data import data_dir, load_mnist

        if (data_dir() / "mnist.npz").exists():
            d = load_mnist()
            return d.x_train[:n], d.y_train[:n], "MNIST"
    except Exception:  # noqa: BLE001 - fall back to random images, said in the output
        pass
    r = np.random.default_rng(0)
    return r.random((n, 784), dtype=np.float32), r.integers(0, 10, n), "random images"


def timed(fn, steps: int, sync) -> float:
    """Median seconds of ``fn`` over ``steps`` calls, after two warm-up calls."""
    fn(), fn()
    sync()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args(argv)
    xp = resolve_backend(args.backend)
    sync = synchronizer(xp)
    x, y, source = images(BATCH * 20)
    xs = [xp.asarray(x[i * BATCH:(i + 1) * BATCH]) for i in range(20)]
    ys = [xp.asarray(y[i * BATCH:(i + 1) * BATCH]) for i in range(20)]
    model = build_mlp(WIDTHS, "vd-b", seed=0, backend=args.backend)
    opt = Adam(1e-3)
    bounds = model.bounds()
    rng = make_rng(0, xp)
    i = [0]

    def step():
        k = i[0] % 20
        i[0] += 1
        model.loss_and_grads(xs[k], ys[k], rng=rng, kl_scale=1 / 50_000)
        opt.step(model.parameters(), bounds=bounds)

    def matmuls():
        for d_in, d_out in zip(WIDTHS[:-1], WIDTHS[1:]):
            a, w, g = bufs[(d_in, d_out)]
            a @ w, a @ w, a.T @ g, a.T @ g
            if d_in != WIDTHS[0]:  # the first layer's input is data: no dx
                g @ w.T, g @ w.T

    def noise():
        for d_out in WIDTHS[1:]:
            standard_normal(rng, (BATCH, d_out), np.float32)

    def adam():
        opt.step(model.parameters(), bounds=bounds)

    f32 = np.float32
    bufs = {(a, b): (xp.ones((BATCH, a), f32), xp.ones((a, b), f32), xp.ones((BATCH, b), f32))
            for a, b in zip(WIDTHS[:-1], WIDTHS[1:])}
    t_step = timed(step, args.steps, sync)
    parts = {"matrix products": timed(matmuls, args.steps, sync),
             "noise": timed(noise, args.steps, sync),
             "optimiser (Adam)": timed(adam, args.steps, sync)}
    parts["elementwise layer work"] = max(0.0, t_step - sum(parts.values()))
    device = device_name(xp)
    n_params = sum(int(p.size) for _, p, _ in model.parameters())
    print(f"bench_train: MLP {'-'.join(map(str, WIDTHS))}, vd-b (α per weight), batch {BATCH}, "
          f"Adam, {n_params / 1e6:.2f} M parameters; {source}; backend={args.backend} "
          f"device={device} cpus={os.cpu_count()}; median of {args.steps} steps")
    print(f"  step {1e3 * t_step:7.2f} ms  ->  {t_step * STEPS_PER_EPOCH:6.1f} s per epoch "
          f"({STEPS_PER_EPOCH} steps)")
    for k, v in parts.items():
        print(f"  {k:<24} {1e3 * v:7.2f} ms  ({100 * v / t_step:4.1f}%)")


if __name__ == "__main__":
    main()
