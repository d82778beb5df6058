"""Speed of the dense LRT op and of a VariationalDense layer, as ratios to a same-run floor.

The floor is what the method cannot avoid: the six matrix products an LRT dense layer needs
(x@μ, x²@σ² forward; G@μᵀ, Δ@σ²ᵀ, xᵀ@G, (x²)ᵀ@Δ backward) on the same library, plus one
draw of its output-shaped noise (``Generator.standard_normal``, one call). Each step (noise
drawn inside it, by minivd's own ``standard_normal``, as the layer draws it) alternates with
the floor; we report the median of the per-pair ratios. Our draw (Box–Muller on all cores)
is 2–3× faster than ``Generator.standard_normal``, so the op can undercut the floor's noise:
a second ratio, ``vs floor2``, is against ``floor2``: the same six products plus our own
draw, a floor with nothing left to gain from the noise. On CuPy minivd's draw is the
generator's own ``standard_normal``, so the two floors are the same and ``vs floor2``
repeats the ratio. The op step is the draw, ``lrt_dense_forward`` and
``lrt_dense_backward``; the layer step is what training asks of a ``VariationalDense`` with
per-weight α: forward (draw, K15 map, LRT) and ``backward_with_kl`` (LRT backward, the map's
backward and the KL gradient, fused as in training). The KL *value* (``layer.kl()``) is
needed only when a loss is logged; its cost is printed separately, as a fraction of the
floor.

    python benchmarks/bench_dense.py [--backend numpy|cupy] [--pairs 21] [--quick]
"""

from __future__ import annotations

import os
import sys

import minivd  # noqa: F401  # isort: skip  (before NumPy: minivd/__init__ explains)
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import bench_parser, device_name, paired  # noqa: E402

from minivd import make_rng, resolve_backend  # noqa: E402
from minivd.backend import synchronizer  # noqa: E402
from minivd.functional import lrt_dense_backward, lrt_dense_forward  # noqa: E402
from minivd.layers import VariationalDense  # noqa: E402
from minivd.random import standard_normal  # noqa: E402

SHAPES = [(128, 784, 1024), (128, 1024, 1024), (1024, 1024, 1024), (4096, 1024, 1024)]
TARGETS = {  # (op, layer) ratio targets by backend and M
    "numpy": {128: (1.4, 1.8), 1024: (1.2, 1.35), 4096: (1.2, 1.2)},
    "cupy": {128: (None, 2.0), 1024: (None, None), 4096: (None, 1.3)},
}


def bench_shape(xp, m, d_in, d_out, pairs):
    sync = synchronizer(xp)
    host = np.random.default_rng(0)
    f32 = np.float32

    def arr(a):
        return xp.asarray(a.astype(f32))

    x = arr(host.standard_normal((m, d_in)))
    x2 = x * x
    wm = arr(host.standard_normal((d_in, d_out)) * 0.03)
    wv = arr(host.uniform(1e-4, 1e-3, (d_in, d_out)))
    b = arr(np.zeros(d_out))
    dout = arr(host.standard_normal((m, d_out)))
    rng = make_rng(0, xp)

    def products():
        x @ wm
        x2 @ wv
        dout @ wm.T
        dout @ wv.T
        x.T @ dout
        x2.T @ dout

    def floor():  # the floor
        products()
        rng.standard_normal((m, d_out), dtype=f32)

    def floor_own_noise():  # the same products, the noise drawn as the op draws it
        products()
        standard_normal(rng, (m, d_out), f32)

    def op():
        noise = standard_normal(rng, (m, d_out), f32)  # minivd's draw, as the layer's
        _, cache = lrt_dense_forward(x, wm, wv, b, noise)
        lrt_dense_backward(dout, cache)

    layer = VariationalDense(d_in, d_out, p=0.5, seed=0, backend=xp.__name__)
    layer.params["log_alpha"][...] = xp.asarray(host.uniform(-4, 0, (d_in, d_out)).astype(f32))
    scale = 1.0 / 50_000

    def layer_step():  # what a training step asks of the layer
        layer.forward(x, rng=rng)
        layer.backward_with_kl(dout, scale)  # backward + kl_backward, as models call it

    def kl_value():  # the KL itself, needed only when a loss value is logged
        layer.kl()

    return (paired(op, floor, pairs, sync, alt=floor_own_noise),
            paired(layer_step, floor, pairs, sync, alt=floor_own_noise),
            paired(kl_value, floor, pairs, sync))


def main(argv=None):
    args = bench_parser(__doc__, 21).parse_args(argv)
    xp = resolve_backend(args.backend)
    shapes = SHAPES[:1] if args.quick else SHAPES
    pairs = 5 if args.quick else args.pairs
    device = device_name(xp)
    print(f"bench_dense: backend={args.backend} device={device} cpus={os.cpu_count()} "
          f"pairs={pairs} (median of per-pair ratios)")
    print(f"{'M':>5} {'D_in':>5} {'D_out':>5} | {'floor ms':>8} {'floor2 ms':>9} |"
          f" {'lrt_dense':>9} {'target':>6} {'vs floor2':>9} |"
          f" {'layer':>6} {'target':>6} {'vs floor2':>9} | {'op ms':>7} {'layer ms':>8} |"
          f" {'kl()':>5}")
    for m, d_in, d_out in shapes:
        o, l, k = bench_shape(xp, m, d_in, d_out, pairs)
        t_op, t_layer = TARGETS[args.backend].get(m, (None, None))
        fmt = lambda t: f"≤{t:.2f}" if t else "  -"  # noqa: E731
        print(f"{m:>5} {d_in:>5} {d_out:>5} | {o['floor_ms']:8.2f} {o['alt_ms']:9.2f} |"
              f" {o['ratio']:8.2f}x {fmt(t_op):>6} {o['ratio_alt']:8.2f}x |"
              f" {l['ratio']:5.2f}x {fmt(t_layer):>6} {l['ratio_alt']:8.2f}x |"
              f" {o['op_ms']:7.2f} {l['op_ms']:8.2f} | {k['ratio']:4.2f}x")


if __name__ == "__main__":
    main()
