"""Seconds per MNIST epoch of the MLP 784-1024-1024-1024-10 with variational dropout B.

Per-weight α on every layer, batch 100, Adam: the paper's largest fully connected setting,
on the real MNIST images when they are cached (random images of the same shape otherwise:
the cost does not depend on the pixel values).

**The epoch** is measured: the first epoch of a fresh model, 500 steps run by the trainer
itself (:meth:`minivd.train.Trainer.train_epoch`: batches gathered and copied to the device,
forward, backward, KL gradient, Adam with the projection of ``log α ≤ 0`` folded in, the
progress line with its KL value every 2 s), the "s of training steps" that ``python -m minivd
train`` prints per epoch. It runs after the split below, so on CuPy every kernel it needs is
compiled by then (the KL value's too: one ``kl()`` call first); the Adam moments are allocated
in its first step. Late-training effects (subnormal moments) are ``bench_late_state.py``'s.
The validation pass that follows each epoch in training is timed and printed on its own.

**The split** times ``--steps`` steps (median) and, in separate passes in the same run, their
parts:

* matrix products: the six per layer the LRT needs (``x@μ``, ``x²@σ²``, four in backward;
  two fewer in the first layer, whose input is data and needs no gradient): 22 products;
* noise: drawing the ``(100, D_out)`` normals of every layer;
* optimiser: one Adam step over all parameters (θ and log α: 5.8 M numbers), with the
  projection;
* elementwise layer work: what is left, the median step minus the three parts (the K15 map,
  KL gradient, LRT elementwise steps and cross-entropy, and also Python overhead and any
  difference between the separate passes and the step; printed as negative if the parts add
  up to more than the step).

    python benchmarks/bench_train.py [--backend numpy|cupy] [--steps 100]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import device_name  # noqa: E402

from minivd import make_rng, resolve_backend  # noqa: E402
from minivd.backend import synchronizer  # noqa: E402
from minivd.data import Dataset  # noqa: E402
from minivd.model import build_mlp  # noqa: E402
from minivd.optim import Adam  # noqa: E402
from minivd.random import standard_normal  # noqa: E402
from minivd.train import TrainConfig, Trainer  # noqa: E402

WIDTHS = [784, 1024, 1024, 1024, 10]
BATCH, STEPS_PER_EPOCH = 100, 500


def dataset() -> tuple[Dataset, str]:
    """MNIST when cached, else random images of MNIST's shapes (said in the output)."""
    from minivd.data import data_dir, load_mnist

    if (data_dir() / "mnist.npz").exists():
        return load_mnist(), "MNIST"
    r = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        return r.random((n, 784), dtype=np.float32), r.integers(0, 10, n)

    return Dataset(*split(50_000), *split(10_000), *split(10_000), "random"), "random images"


def measured_epoch(data: Dataset, backend: str) -> tuple[float, float]:
    """Seconds of one whole training epoch run by the trainer, and of its validation pass."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(dataset="mnist", model="mlp", width=WIDTHS[1], depth=3, method="vd-b",
                          epochs=1, batch=BATCH, backend=backend)
        trainer = Trainer(cfg, data, out, log=io.StringIO())
        trainer.model.kl()  # the progress line's KL value: compiled before the clock (CuPy)
        steps = trainer.train_epoch()
        t0 = time.perf_counter()
        trainer.evaluate(data.x_valid, data.y_valid)
        return steps, time.perf_counter() - t0


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
    data, source = dataset()
    x, y = data.x_train[:BATCH * 20], data.y_train[:BATCH * 20]
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
    parts["elementwise layer work (the rest)"] = t_step - sum(parts.values())
    epoch, valid = measured_epoch(data, args.backend)
    device = device_name(xp)
    n_params = sum(int(p.size) for _, p, _ in model.parameters())
    print(f"bench_train: MLP {'-'.join(map(str, WIDTHS))}, vd-b (α per weight), batch {BATCH}, "
          f"Adam, {n_params / 1e6:.2f} M parameters; {source}; backend={args.backend} "
          f"device={device} cpus={os.cpu_count()}")
    print(f"  epoch, measured: {epoch:6.1f} s of training steps (the first epoch of a fresh "
          f"model, {STEPS_PER_EPOCH} steps run by the trainer; its validation pass: {valid:.1f} s "
          "more)")
    print(f"  split, median of {args.steps} steps: step {1e3 * t_step:7.2f} ms  (x "
          f"{STEPS_PER_EPOCH} = {t_step * STEPS_PER_EPOCH:.1f} s)")
    for k, v in parts.items():
        print(f"  {k:<36} {1e3 * v:7.2f} ms  ({100 * v / t_step:5.1f}%)")


if __name__ == "__main__":
    main()
