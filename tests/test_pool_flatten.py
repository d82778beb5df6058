"""Max-pooling and flatten ops: a nested-loop reference, finite-difference gradients (float64),
ties, NaN and bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minivd.functional as F
from minivd import check_vjp, to_numpy

from .helpers import TOL, on
from .strategies import seeds


@st.composite
def pool_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, 7)), draw(st.integers(kw, 7))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3),
                                                                      st.integers(1, 3))))
    kernel = draw(st.sampled_from([(kh, kw), kh if kh == kw else (kh, kw)]))
    return (n, c, h, w), kernel, stride


def maxpool_reference(x, kernel, stride):
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    sh, sw = (kh, kw) if stride is None else (stride if isinstance(stride, tuple)
                                              else (stride, stride))
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return out


@given(case=pool_cases(), seed=seeds)
def test_maxpool_values_and_gradcheck(xp, case, seed):
    """Distinct values spaced 0.01 apart (a random permutation): no ties within 1e-6 steps."""
    shape, kernel, stride = case
    r = np.random.default_rng(seed)
    x_host = r.permutation(int(np.prod(shape))).reshape(shape) * 0.01
    x = on(xp, x_host)
    out, _ = F.maxpool2d_forward(x, kernel, stride)
    assert np.array_equal(to_numpy(out), maxpool_reference(x_host, kernel, stride))
    errs = check_vjp(lambda x: F.maxpool2d_forward(x, kernel, stride)[0],
                     lambda d, x: [F.maxpool2d_backward(on(xp, d),
                                                        F.maxpool2d_forward(x, kernel, stride)[1])],
                     [x], seed=seed)
    assert errs[0] < TOL


def test_maxpool_tie_goes_to_first_maximum_in_row_major_order(xp):
    x = on(xp, [[[[1.0, 3.0, 0.0, 0.0],
                  [3.0, 3.0, 0.0, 0.0]]]])  # window 1: three tied 3s; window 2: four tied 0s
    out, cache = F.maxpool2d_forward(x, 2)
    assert to_numpy(out).tolist() == [[[[3.0, 0.0]]]]
    dx = to_numpy(F.maxpool2d_backward(on(xp, [[[[10.0, 20.0]]]]), cache))
    assert dx.tolist() == [[[[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]]
    # overlapping windows (stride 1) that share a maximum both send it their gradient
    out, cache = F.maxpool2d_forward(on(xp, [[[[0.0, 5.0, 1.0]]]]), (1, 2), 1)
    dx = F.maxpool2d_backward(on(xp, [[[[1.0, 2.0]]]]), cache)
    assert to_numpy(dx).tolist() == [[[[0.0, 3.0, 0.0]]]]


def test_maxpool_nan_in_a_window_gives_nan(xp):
    """A NaN anywhere in a window (first or later) makes that output NaN, as ``max`` does;
    windows without one are unaffected."""
    nan = float("nan")
    x = on(xp, [[[[nan, 1.0, 2.0, 0.0], [0.0, 0.0, 1.0, nan]],
                 [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]]])
    out = to_numpy(F.maxpool2d_forward(x, 2)[0])
    assert np.isnan(out[0, 0]).all()
    assert out[0, 1].tolist() == [[6.0, 8.0]]


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=seeds)
def test_flatten_gradcheck(xp, shape, seed):
    x = on(xp, np.random.default_rng(seed).standard_normal(shape))
    out, cache = F.flatten_forward(x)
    assert out.shape == (shape[0], int(np.prod(shape[1:])))
    errs = check_vjp(lambda x: F.flatten_forward(x)[0],
                     lambda d, x: [F.flatten_backward(on(xp, d), F.flatten_forward(x)[1])],
                     [x], seed=seed)
    assert errs[0] < TOL


def test_pool_and_flatten_bad_input():
    x = np.zeros((2, 3, 5, 5))
    with pytest.raises(ValueError, match="kernel.*larger than the input"):
        F.maxpool2d_forward(x, 6)
    with pytest.raises(ValueError, match="kernel must be a positive int"):
        F.maxpool2d_forward(x, (2, 0))
    with pytest.raises(ValueError, match="stride must be a positive int"):
        F.maxpool2d_forward(x, 2, 1.5)
    with pytest.raises(ValueError, match="x must have 4"):
        F.maxpool2d_forward(np.zeros((5, 5)), 2)
    _, cache = F.maxpool2d_forward(x, 2)
    with pytest.raises(ValueError, match="dout must have shape"):
        F.maxpool2d_backward(np.zeros((2, 3, 3, 3)), cache)
    _, cache = F.flatten_forward(x)
    with pytest.raises(ValueError, match="dout must have shape"):
        F.flatten_backward(np.zeros((2, 74)), cache)
