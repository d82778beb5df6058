"""NumPy/CuPy parity in float32 with injected noise (marked ``gpu``; skipped without a device).

The gradient checks of the other test files run on CuPy too, through the ``xp`` fixture.
"""

import numpy as np
import pytest

import minivd.functional as F
from minivd import make_rng, rel_error, to_numpy
from minivd.kl import kl_k15, kl_k15_grad, kl_m17, kl_m17_grad
from minivd.layers import GaussianDropout, VariationalDense

pytestmark = pytest.mark.gpu
RTOL = 1e-5  # float32: both sides round differently (cuBLAS vs OpenBLAS summation order)


def both(cp, fn, *host_args):
    """Run ``fn`` on NumPy and on CuPy copies of the same float32 inputs; return both results."""
    a = fn(*host_args)
    b = fn(*(cp.asarray(h) if isinstance(h, np.ndarray) else h for h in host_args))
    return a, b


def assert_close(a, b):
    if a is None:
        assert b is None
        return
    if isinstance(a, tuple):
        for x, y in zip(a, b):
            assert_close(x, y)
        return
    assert rel_error(a, to_numpy(b)) < RTOL


@pytest.mark.parametrize("op", ["lrt", "shared", "per_example", "dense"])
def test_dense_ops_parity(cp, op):
    r = np.random.default_rng(0)
    n, di, do = 64, 96, 40
    f32 = np.float32
    x = r.standard_normal((n, di)).astype(f32)
    wm = r.standard_normal((di, do)).astype(f32)
    wv = r.uniform(0.01, 1, (di, do)).astype(f32)
    b = r.standard_normal(do).astype(f32)
    dout = r.standard_normal((n, do)).astype(f32)
    noise = {"lrt": (n, do), "shared": (di, do), "per_example": (n, di, do)}

    def run(x, wm, wv, b, dout, *nz):
        if op == "dense":
            out, c = F.dense_forward(x, wm, b)
            return out, tuple(F.dense_backward(dout, c))
        fwd = {"lrt": F.lrt_dense_forward, "shared": F.shared_weight_dense_forward,
               "per_example": F.per_example_dense_forward}[op]
        bwd = {"lrt": F.lrt_dense_backward, "shared": F.shared_weight_dense_backward,
               "per_example": F.per_example_dense_backward}[op]
        out, c = fwd(x, wm, wv, b, nz[0])
        return out, tuple(bwd(dout, c))

    nz = [] if op == "dense" else [r.standard_normal(noise[op]).astype(f32)]
    a, g = both(cp, run, x, wm, wv, b, dout, *nz)
    assert g[0].dtype == np.float32
    assert_close(a, g)


def test_elementwise_ops_parity(cp):
    r = np.random.default_rng(1)
    f32 = np.float32
    x = r.standard_normal((32, 10)).astype(f32)
    la = r.uniform(-4, 0, 10).astype(f32)
    eps = r.standard_normal((32, 10)).astype(f32)
    u = r.random((32, 10)).astype(f32)
    y = r.integers(0, 10, 32)
    theta = r.standard_normal((10, 10)).astype(f32)
    la_w = r.uniform(-4, 0, (10, 10)).astype(f32)

    def run(x, la, eps, u, y, theta, la_w):
        o1, c1 = F.gaussian_dropout_forward(x, la, eps)
        o2, c2 = F.bernoulli_dropout_forward(x, 0.3, u)
        o3, c3 = F.relu_forward(x)
        loss, c4 = F.softmax_cross_entropy_forward(x, y)
        v, c5 = F.k15_variance_forward(theta, la_w)
        (v2, la2), c6 = F.m17_variance_forward(theta, la_w)
        return (o1, F.gaussian_dropout_backward(x, c1), o2, F.bernoulli_dropout_backward(x, c2),
                o3, F.relu_backward(x, c3), loss, F.softmax_cross_entropy_backward(1.0, c4),
                v, F.k15_variance_backward(theta, c5), v2, la2,
                F.m17_variance_backward(theta, theta, c6),
                kl_k15(la_w), kl_k15_grad(la_w), kl_m17(la_w), kl_m17_grad(la_w))

    a, g = both(cp, run, x, la, eps, u, y, theta, la_w)
    assert_close(a, g)


def test_layers_run_on_cupy_with_right_statistics(cp):
    """CuPy and NumPy streams differ, so compare laws: LRT output mean and variance.

    R = 20000 examples of one input row: 5 standard errors as in the NumPy marginal test.
    """
    layer = VariationalDense(5, 3, p=0.3, seed=0, backend="cupy")
    R = 20000
    x = cp.ones((R, 5), dtype=cp.float32)
    out = to_numpy(layer.forward(x, rng=make_rng(0, "cupy"))).astype(np.float64)
    theta = to_numpy(layer.params["theta"]).astype(np.float64)
    var = (0.3 / 0.7) * (theta**2).sum(0)
    assert np.all(np.abs(out.mean(0) - theta.sum(0)) < 5 * np.sqrt(var / R))
    assert np.all(np.abs(out.var(0) / var - 1) < 5 * np.sqrt(2 / R))
    dx = layer.backward(cp.ones_like(layer.forward(x, rng=make_rng(1, "cupy"))))
    assert isinstance(dx, cp.ndarray) and bool(cp.isfinite(dx).all())
    layer.kl_backward(1e-3)
    layer.project()
    ga = GaussianDropout(5, learn_alpha=True, p=0.3, backend="cupy")
    out = ga.forward(cp.ones((4, 5, 2, 2), dtype=cp.float32), rng=make_rng(0, "cupy"))
    assert out.shape == (4, 5, 2, 2) and isinstance(ga.backward(out), cp.ndarray)


def test_fused_kernels_match_the_plain_cupy_path(cp, monkeypatch):
    """Each fused CuPy kernel against the plain code it replaces, on the same CuPy inputs."""
    from minivd import _fused
    from minivd.optim import Adam

    r = np.random.default_rng(3)
    f32 = np.float32
    x = cp.asarray(r.standard_normal((16, 24)).astype(f32))
    dout = cp.asarray(r.standard_normal((16, 12)).astype(f32))

    def run():
        layer = VariationalDense(24, 12, p=0.4, seed=0, backend="cupy")
        layer.params["log_alpha"][...] = cp.asarray(r2.uniform(-3, 0.2, (24, 12)).astype(f32))
        out = layer.forward(x, rng=make_rng(0, "cupy"))
        dx = layer.backward(dout)
        layer.kl_backward(0.01)
        opt = Adam(1e-2)
        for _ in range(3):
            opt.step(layer.parameters() if hasattr(layer, "parameters") else
                     [(k, layer.params[k], layer.grads[k]) for k in layer.params])
        return [out, dx] + [layer.grads[k] for k in sorted(layer.grads)] + [
            layer.params[k] for k in sorted(layer.params)]

    results = {}
    for fuse in (False, True):
        monkeypatch.setattr(_fused, "FUSE", fuse)
        r2 = np.random.default_rng(5)
        results[fuse] = run()
    for a, b in zip(results[False], results[True]):
        assert rel_error(to_numpy(a), to_numpy(b)) < RTOL
