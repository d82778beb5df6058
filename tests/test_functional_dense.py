"""Dense ops: finite-difference gradients, LRT marginals, and bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minivd import check_vjp
from minivd.functional import (
    dense_backward,
    dense_forward,
    lrt_dense_backward,
    lrt_dense_forward,
    per_example_dense_backward,
    per_example_dense_forward,
    shared_weight_dense_backward,
    shared_weight_dense_forward,
)

from .helpers import TOL, away_from_zero, on
from .strategies import dense_shapes, seeds


def _args(xp, shape, seed, bias=True):
    n, d_in, d_out = shape
    r = np.random.default_rng(seed)
    # inputs at least 0.1 from zero: near x = 0 the LRT's sqrt(x²·σ² + 1e-8) bends on a scale
    # of ~1e-4, where central differences lose accuracy (x = -3.8e-5 gave a 8e-6 relative
    # error in dx, the analytic value being right); zero inputs have their own tests
    x = on(xp, away_from_zero(r, (n, d_in)))
    wm = on(xp, r.standard_normal((d_in, d_out)))
    wv = on(xp, r.uniform(0.05, 1.0, (d_in, d_out)))
    b = on(xp, r.standard_normal(d_out)) if bias else None
    return r, x, wm, wv, b


@given(shape=dense_shapes, seed=seeds, bias=st.booleans())
def test_dense_gradcheck(xp, shape, seed, bias):
    _, x, w, _, b = _args(xp, shape, seed, bias)
    args = [x, w] + ([b] if bias else [])

    def f(x, w, b=None):
        return dense_forward(x, w, b)[0]

    def vjp(d, x, w, b=None):
        g = dense_backward(on(xp, d), dense_forward(x, w, b)[1])
        return [g.dx, g.dw] + ([g.db] if bias else [])

    assert max(check_vjp(f, vjp, args, seed=seed)) < TOL


SAMPLED_OPS = {
    "lrt": (lrt_dense_forward, lrt_dense_backward, lambda n, i, o: (n, o)),
    "shared": (shared_weight_dense_forward, shared_weight_dense_backward, lambda n, i, o: (i, o)),
    "per_example": (per_example_dense_forward, per_example_dense_backward,
                    lambda n, i, o: (n, i, o)),
}


@pytest.mark.parametrize("op", list(SAMPLED_OPS))
@given(shape=dense_shapes, seed=seeds, bias=st.booleans())
def test_sampled_dense_gradcheck(xp, op, shape, seed, bias):
    fwd, bwd, noise_shape = SAMPLED_OPS[op]
    r, x, wm, wv, b = _args(xp, shape, seed, bias)
    noise = on(xp, r.standard_normal(noise_shape(*shape)))
    args = [x, wm, wv] + ([b] if bias else [])

    def f(x, wm, wv, b=None):
        return fwd(x, wm, wv, b, noise)[0]

    def vjp(d, x, wm, wv, b=None):
        g = bwd(on(xp, d), fwd(x, wm, wv, b, noise)[1])
        assert (g.db is None) == (not bias)
        return [g.dx, g.dw_mean, g.dw_var] + ([g.db] if bias else [])

    assert max(check_vjp(f, vjp, args, seed=seed)) < TOL


def test_lrt_formula_and_dtype(xp):
    r, x, wm, wv, b = _args(xp, (4, 3, 2), 0)
    noise = on(xp, r.standard_normal((4, 2)))
    out, _ = lrt_dense_forward(x, wm, wv, b, noise)
    expect = x @ wm + b + xp.sqrt((x * x) @ wv + 1e-8) * noise
    assert float(abs(out - expect).max()) < 1e-12
    out32, _ = lrt_dense_forward(*(a.astype("float32") for a in (x, wm, wv, b, noise)))
    assert out32.dtype == np.float32


def test_zero_rows_and_extreme_variances_stay_finite(xp):
    r = np.random.default_rng(0)
    x = on(xp, r.standard_normal((4, 3)))
    x[1] = 0.0  # a zero input row: delta = 0 exactly
    wm = on(xp, r.standard_normal((3, 2)))
    noise = on(xp, r.standard_normal((4, 2)))
    for log_var in (-20.0, 20.0):
        wv = on(xp, np.full((3, 2), np.exp(log_var)))
        for fwd, bwd, shape in SAMPLED_OPS.values():
            nz = on(xp, r.standard_normal(shape(4, 3, 2)))
            out, cache = fwd(x, wm, wv, None, nz)
            g = bwd(xp.ones_like(out), cache)
            for a in (out, g.dx, g.dw_mean, g.dw_var):
                assert bool(xp.isfinite(a).all())
    wv = xp.zeros((3, 2))  # zero variance: the eps keeps 1/(2s) finite
    out, cache = lrt_dense_forward(x, wm, wv, None, noise)
    assert bool(xp.isfinite(lrt_dense_backward(xp.ones_like(out), cache).dw_var).all())


def test_lrt_marginals_match_explicit_weight_samples():
    """Each output's mean and variance: LRT samples vs per-example weight samples vs theory.

    R = 20000 draws per method. The sample mean has standard error sd/sqrt(R) and the sample
    variance about var*sqrt(2/(R-1)) (Gaussian outputs), i.e. 0.7% and 1% here; we allow
    5 standard errors.
    """
    R = 20000
    r = np.random.default_rng(3)
    x = r.standard_normal((2, 4))
    wm, wv, b = r.standard_normal((4, 3)), r.uniform(0.1, 1.0, (4, 3)), r.standard_normal(3)
    mean_th = x @ wm + b
    var_th = (x * x) @ wv
    xs = np.repeat(x, R, axis=0)  # rows: example 0 R times, then example 1 R times
    lrt, _ = lrt_dense_forward(xs, wm, wv, b, r.standard_normal((2 * R, 3)))
    w_samples = wm + np.sqrt(wv) * r.standard_normal((2 * R, 4, 3))
    explicit = np.einsum("ni,nio->no", xs, w_samples) + b
    for samples in (lrt, explicit):
        s = samples.reshape(2, R, 3)
        sd = np.sqrt(var_th)
        assert np.all(np.abs(s.mean(1) - mean_th) < 5 * sd / np.sqrt(R))
        assert np.all(np.abs(s.var(1, ddof=1) / var_th - 1) < 5 * np.sqrt(2 / (R - 1)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=np.zeros((2, 3))), "D_in"),
        (dict(w_var=np.ones((4, 3))), "w_var"),
        (dict(b=np.zeros(3)), "b must have shape"),
        (dict(noise=np.zeros((2, 3))), "noise must have shape"),
        (dict(x=np.zeros((2, 4), dtype=int)), "x must be a float32 or float64"),
        (dict(w_mean=np.zeros((4, 2), dtype=np.int32)), "w_mean must be a float32 or float64"),
        (dict(x=np.zeros((2, 4), dtype=np.float32)), "dtype"),
        (dict(x=np.zeros(4)), "x must have 2 dimensions"),
    ],
)
def test_lrt_bad_input(kwargs, match):
    args = dict(x=np.zeros((2, 4)), w_mean=np.zeros((4, 2)), w_var=np.ones((4, 2)),
                b=np.zeros(2), noise=np.zeros((2, 2)))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        lrt_dense_forward(**args)


def test_mixed_backends_name_the_arguments():
    from .test_backend import FakeCupyArray

    with pytest.raises(TypeError, match="mixed backends.*w_mean"):
        lrt_dense_forward(np.zeros((2, 4)), FakeCupyArray(), np.ones((4, 2)), None,
                          np.zeros((2, 2)))


def test_backward_checks_dout_shape():
    out, cache = lrt_dense_forward(np.zeros((2, 4)), np.zeros((4, 2)), np.ones((4, 2)), None,
                                   np.zeros((2, 2)))
    with pytest.raises(ValueError, match="dout"):
        lrt_dense_backward(np.zeros((2, 3)), cache)


def test_fused_numpy_steps_match_the_plain_path(monkeypatch):
    """The blocked, threaded NumPy versions of the LRT elementwise steps against the plain
    code, on arrays large enough to be split into blocks (float32, same rounding order up to
    the sum of two products: 1e-6 relative)."""
    from minivd import _fused

    r = np.random.default_rng(0)
    f32 = np.float32
    n, d_in, d_out = 300, 500, 600
    args = (r.standard_normal((n, d_in)).astype(f32), r.standard_normal((d_in, d_out)).astype(f32),
            r.uniform(0, 1, (d_in, d_out)).astype(f32), r.standard_normal(d_out).astype(f32),
            r.standard_normal((n, d_out)).astype(f32))
    dout = r.standard_normal((n, d_out)).astype(f32)
    res = {}
    for fuse in (False, True):
        monkeypatch.setattr(_fused, "FUSE", fuse)
        out, cache = lrt_dense_forward(*args)
        res[fuse] = [out, *lrt_dense_backward(dout, cache)]
    for a, b in zip(res[False], res[True]):
        assert a.dtype == b.dtype == f32
        assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max()
