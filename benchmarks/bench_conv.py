"""Speed of the conv LRT op and of a VariationalConv2D layer, as ratios to a same-run floor.

The floor is what the method cannot avoid once im2col has turned the conv into matrix
products: the six products an LRT layer needs, of shape (N·H·W, C_in·9) × (C_in·9, C_out)
(X@μ, X²@σ² forward; G@μᵀ, Δ@σ²ᵀ, Xᵀ@G, (X²)ᵀ@Δ backward, on ready-made contiguous
matrices), plus one float32 draw of the output-shaped noise (``Generator.standard_normal``;
the op and the layer draw theirs with minivd's ``standard_normal``). Building the im2col
matrix, the scatter back to the input and every layout change are *not* in the floor: they
are the overhead measured. 3×3 kernels, padding 1, stride 1, float32. Each step (noise drawn inside
it) alternates with the floor; we report the median of the per-pair ratios. Our draw is 2–3×
faster than ``Generator.standard_normal``, so a second ratio, ``vs floor2``, is against
``floor2``: the same products plus our own draw. On CuPy minivd's draw is the generator's
own ``standard_normal``, so the two floors are the same and ``vs floor2`` repeats the
ratio. The layer step is what training asks of the layer (forward, ``backward_with_kl``),
as in ``bench_dense.py``; the KL value (``layer.kl()``, needed only when a loss is logged)
is timed on its own, as a fraction of the floor.

    python benchmarks/bench_conv.py [--backend numpy|cupy] [--pairs 11] [--quick]

(from the repository root; prefix ``PYTHONPATH=.`` where minivd is not pip-installed)
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
from minivd.functional import lrt_conv2d_backward, lrt_conv2d_forward  # noqa: E402
from minivd.layers import VariationalConv2D  # noqa: E402
from minivd.random import standard_normal  # noqa: E402

SHAPES = [(32, 32, 32, 32, 64), (128, 3, 32, 32, 64), (64, 64, 16, 16, 64)]  # N, C_in, H, W, C_out
TARGETS = {"numpy": (1.6, 1.8), "cupy": (3.0, 3.0)}  # (op, layer) ratio targets


def bench_shape(xp, n, c_in, h, w, c_out, pairs):
    sync = synchronizer(xp)
    host = np.random.default_rng(0)
    f32 = np.float32
    k = c_in * 9
    m = n * h * w

    def arr(a):
        return xp.asarray(a.astype(f32))

    x = arr(host.standard_normal((n, c_in, h, w)))
    wm = arr(host.standard_normal((c_out, c_in, 3, 3)) * 0.03)
    wv = arr(host.uniform(1e-4, 1e-3, (c_out, c_in, 3, 3)))
    b = arr(np.zeros(c_out))
    dout = arr(host.standard_normal((n, c_out, h, w)))
    # the floor's operands: im2col-shaped matrices, ready and contiguous
    cols = arr(host.standard_normal((m, k)))
    cols2 = cols * cols
    wm_mat, wv_mat = wm.reshape(c_out, k).T.copy(), wv.reshape(c_out, k).T.copy()
    g_rows = arr(host.standard_normal((m, c_out)))
    rng = make_rng(0, xp)

    def products():
        cols @ wm_mat
        cols2 @ wv_mat
        g_rows @ wm_mat.T
        g_rows @ wv_mat.T
        cols.T @ g_rows
        cols2.T @ g_rows

    def floor():
        products()
        rng.standard_normal((n, c_out, h, w), dtype=f32)

    def floor_own_noise():  # the same products, the noise drawn as the op draws it
        products()
        standard_normal(rng, (n, c_out, h, w), f32)

    def op():
        noise = standard_normal(rng, (n, c_out, h, w), f32)  # minivd's draw, as the layer's
        _, cache = lrt_conv2d_forward(x, wm, wv, b, noise, stride=1, padding=1)
        lrt_conv2d_backward(dout, cache)

    layer = VariationalConv2D(c_in, c_out, 3, padding=1, p=0.5, seed=0, backend=xp.__name__)
    layer.params["log_alpha"][...] = xp.asarray(
        host.uniform(-4, 0, (c_out, c_in, 3, 3)).astype(f32))
    scale = 1.0 / 50_000

    def layer_step():  # what a training step asks of the layer
        layer.forward(x, rng=rng)
        layer.backward_with_kl(dout, scale)  # backward + kl_backward, as models call it

    def kl_value():
        layer.kl()

    return (paired(op, floor, pairs, sync, alt=floor_own_noise),
            paired(layer_step, floor, pairs, sync, alt=floor_own_noise),
            paired(kl_value, floor, pairs, sync))


def main(argv=None):
    args = bench_parser(__doc__, 11).parse_args(argv)
    xp = resolve_backend(args.backend)
    shapes = SHAPES[:1] if args.quick else SHAPES
    pairs = 5 if args.quick else args.pairs
    device = device_name(xp)
    t_op, t_layer = TARGETS[args.backend]
    print(f"bench_conv: backend={args.backend} device={device} cpus={os.cpu_count()} "
          f"pairs={pairs} (median of per-pair ratios; 3x3, padding 1, stride 1, float32)")
    print(f"{'N':>4} {'C_in':>4} {'H':>3} {'W':>3} {'C_out':>5} | {'floor ms':>8} "
          f"{'floor2 ms':>9} | {'lrt_conv2d':>10} {'target':>6} {'vs floor2':>9} |"
          f" {'layer':>6} {'target':>6} {'vs floor2':>9} | {'op ms':>7} {'layer ms':>8} |"
          f" {'kl()':>5}")
    for n, c_in, h, w, c_out in shapes:
        o, l, k = bench_shape(xp, n, c_in, h, w, c_out, pairs)
        print(f"{n:>4} {c_in:>4} {h:>3} {w:>3} {c_out:>5} | {o['floor_ms']:8.2f} "
              f"{o['alt_ms']:9.2f} | {o['ratio']:9.2f}x {'≤' + format(t_op, '.2f'):>6} "
              f"{o['ratio_alt']:8.2f}x | {l['ratio']:5.2f}x {'≤' + format(t_layer, '.2f'):>6} "
              f"{l['ratio_alt']:8.2f}x | {o['op_ms']:7.2f} {l['op_ms']:8.2f} | "
              f"{k['ratio']:4.2f}x")


if __name__ == "__main__":
    main()
