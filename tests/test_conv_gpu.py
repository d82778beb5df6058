"""NumPy/CuPy parity of the conv ops and layers in float32 with injected noise (marked ``gpu``;
skipped without a device). The gradient checks of test_conv*.py run on CuPy too (``xp``)."""

import numpy as np
import pytest

import minivd.functional as F
from minivd import make_rng, rel_error, to_numpy
from minivd.layers import Conv2D, MaxPool2D, VariationalConv2D

pytestmark = pytest.mark.gpu
RTOL = 1e-5  # float32: both sides round differently (cuBLAS vs OpenBLAS summation order)
f32 = np.float32


def assert_close(a, b):
    if a is None:
        assert b is None
        return
    if isinstance(a, (tuple, list)):
        for x, y in zip(a, b):
            assert_close(x, y)
        return
    assert b.dtype == a.dtype and b.shape == a.shape
    assert rel_error(a, to_numpy(b)) < RTOL


NOISE = {"lrt": lambda n, o, c, k, ho, wo: (n, o, ho, wo),
         "shared": lambda n, o, c, k, ho, wo: (o, c) + k,
         "per_example": lambda n, o, c, k, ho, wo: (n, o, c) + k,
         "conv": None}


@pytest.mark.parametrize("op", list(NOISE))
@pytest.mark.parametrize("stride, padding, kernel", [(1, 1, (3, 3)), (2, 0, (3, 2)),
                                                     (1, 2, (5, 5))])
def test_conv_ops_parity(cp, op, stride, padding, kernel):
    r = np.random.default_rng(0)
    n, c, o, h, w = 8, 6, 10, 19, 17
    x = r.standard_normal((n, c, h, w)).astype(f32)
    wm = r.standard_normal((o, c) + kernel).astype(f32)
    wv = r.uniform(0.01, 1, (o, c) + kernel).astype(f32)
    b = r.standard_normal(o).astype(f32)
    ho = (h + 2 * padding - kernel[0]) // stride + 1
    wo = (w + 2 * padding - kernel[1]) // stride + 1
    dout = r.standard_normal((n, o, ho, wo)).astype(f32)
    nz = [] if op == "conv" else [r.standard_normal(NOISE[op](n, o, c, kernel, ho, wo)).astype(f32)]

    def run(x, wm, wv, b, dout, *nz):
        if op == "conv":
            out, cache = F.conv2d_forward(x, wm, b, stride, padding)
            return out, tuple(F.conv2d_backward(dout, cache))
        fwd, bwd = {"lrt": (F.lrt_conv2d_forward, F.lrt_conv2d_backward),
                    "shared": (F.shared_weight_conv2d_forward, F.shared_weight_conv2d_backward),
                    "per_example": (F.per_example_conv2d_forward,
                                    F.per_example_conv2d_backward)}[op]
        out, cache = fwd(x, wm, wv, b, nz[0], stride, padding)
        return out, tuple(bwd(dout, cache))

    host = (x, wm, wv, b, dout, *nz)
    a = run(*host)
    g = run(*(cp.asarray(h_) for h_ in host))
    assert isinstance(g[0], cp.ndarray)
    assert_close(a, g)


def test_pooling_and_flatten_parity_with_ties(cp):
    r = np.random.default_rng(1)
    x = r.integers(0, 3, (4, 3, 9, 8)).astype(f32)  # many ties: routing must agree
    dout = r.standard_normal((4, 3, 4, 7)).astype(f32)
    for xs in (x, cp.asarray(x)):
        out, cache = F.maxpool2d_forward(xs, (3, 2), (2, 1))
        dx = F.maxpool2d_backward(dout if xs is x else cp.asarray(dout), cache)
        if xs is x:
            ref = (out, dx)
        else:
            assert np.array_equal(ref[0], to_numpy(out)) and np.array_equal(ref[1], to_numpy(dx))
    flat, cache = F.flatten_forward(cp.asarray(x))
    assert flat.shape == (4, 3 * 9 * 8) and F.flatten_backward(flat, cache).shape == x.shape


@pytest.mark.parametrize("sampler", ["lrt", "shared_weights", "per_example_weights", "mean"])
def test_layers_parity_with_the_same_noise(cp, sampler):
    """Same parameters and the same host-drawn noise on both backends (the streams differ, so
    a generator that replays fixed noise is passed as ``rng``)."""
    r = np.random.default_rng(2)
    x = r.standard_normal((6, 4, 12, 11)).astype(f32)

    class Fixed:
        def __init__(self, xp):
            self.xp = xp

        def standard_normal(self, shape, dtype=f32):
            return self.xp.asarray(np.random.default_rng(3).standard_normal(shape).astype(dtype))

    res = []
    for xp, be in ((np, "numpy"), (cp, "cupy")):
        layer = VariationalConv2D(4, 5, 3, padding=1, p=0.3, sampler=sampler, seed=0, backend=be)
        out = layer.forward(xp.asarray(x), rng=Fixed(xp))
        dx = layer.backward(xp.ones_like(out))
        layer.kl_backward(1e-2)
        res.append((out, dx, *(layer.grads[k] for k in sorted(layer.params))))
    assert_close(res[0], res[1])


def test_layers_run_on_cupy_with_right_statistics(cp):
    """CuPy and NumPy streams differ, so compare laws: LRT output mean and variance of one
    output position over R = 20000 examples (5 standard errors, as in test_conv_stats)."""
    R = 20000
    layer = VariationalConv2D(2, 3, 2, p=0.3, seed=0, backend="cupy")
    x = cp.ones((R, 2, 3, 3), dtype=cp.float32)
    out = to_numpy(layer.forward(x, rng=make_rng(0, "cupy"))).astype(np.float64)[:, :, 0, 0]
    theta = to_numpy(layer.params["theta"]).astype(np.float64)
    var = (0.3 / 0.7) * (theta**2).sum(axis=(1, 2, 3))
    assert np.all(np.abs(out.mean(0) - theta.sum(axis=(1, 2, 3))) < 5 * np.sqrt(var / R))
    assert np.all(np.abs(out.var(0) / var - 1) < 5 * np.sqrt(2 / R))
    dx = layer.backward(cp.ones((R, 3, 2, 2), dtype=cp.float32))
    assert isinstance(dx, cp.ndarray) and bool(cp.isfinite(dx).all())
    conv, pool = Conv2D(2, 3, 2, backend="cupy"), MaxPool2D(2)
    y = pool.forward(conv.forward(cp.ones((2, 2, 5, 5), dtype=cp.float32)))
    assert isinstance(conv.backward(pool.backward(cp.ones_like(y))), cp.ndarray)
