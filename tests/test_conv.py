"""Conv ops: a nested-loop reference, finite-difference gradients (float64), the threaded block
paths, zero inputs and bad input (pooling and flatten: ``test_pool_flatten.py``)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minivd.functional as F
from minivd import check_vjp, to_numpy
from minivd.functional import _im2col

from .helpers import TOL, away_from_zero, on
from .strategies import seeds


def conv_reference(x, w, b, stride, padding):
    """Cross-correlation by explicit loops over every output element (NumPy, float64)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp_ = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    xp_[:, :, padding:padding + h, padding:padding + wd] = x
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i_n in range(n):
        for i_o in range(o):
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0 if b is None else b[i_o]
                    for i_c in range(c):
                        for a in range(kh):
                            for e in range(kw):
                                acc += (xp_[i_n, i_c, i * stride + a, j * stride + e]
                                        * w[i_o, i_c, a, e])
                    out[i_n, i_o, i, j] = acc
    return out


def conv_reference_windows(x, w, b, stride, padding):
    """The same through NumPy's ``sliding_window_view`` and ``einsum`` (for larger inputs)."""
    xp_ = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(xp_, w.shape[2:], axis=(2, 3))
    out = np.einsum("nchwab,ocab->nohw", win[:, :, ::stride, ::stride], w)
    return out if b is None else out + b[:, None, None]


@st.composite
def conv_cases(draw, max_n=3, max_c=3, max_hw=7, max_k=5):
    """(N, C_in, C_out, H, W, KH, KW, stride, padding) with H ≠ W and the kernel inside the
    padded input."""
    n, c, o = (draw(st.integers(1, m)) for m in (max_n, max_c, max_c))
    h = draw(st.integers(1, max_hw))
    w = draw(st.integers(1, max_hw).filter(lambda v: v != h))
    padding, stride = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    kh = draw(st.integers(1, min(max_k, h + 2 * padding)))
    kw = draw(st.integers(1, min(max_k, w + 2 * padding)))
    return n, c, o, h, w, kh, kw, stride, padding


small_cases = conv_cases(max_n=2, max_c=2, max_hw=5, max_k=3)


def _args(xp, case, seed, bias=True):
    n, c, o, h, w, kh, kw, stride, padding = case
    r = np.random.default_rng(seed)
    # inputs at least 0.1 from zero, as in the dense checks: a window that sees one pixel of
    # one channel (1x1 kernels, corners under padding) puts the LRT's sqrt(x²σ² + 1e-8) on
    # its ~1e-4 bend, where central differences lose accuracy (x = 1.8e-4 failed)
    x = away_from_zero(r, (n, c, h, w))
    wm = r.standard_normal((o, c, kh, kw))
    wv = r.uniform(0.05, 1.0, (o, c, kh, kw))
    b = r.standard_normal(o) if bias else None
    return r, x, wm, wv, b


def _out_hw(case):
    n, c, o, h, w, kh, kw, s, p = case
    return (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1


@given(case=conv_cases(), seed=seeds, bias=st.booleans())
def test_conv_matches_nested_loops(xp, case, seed, bias):
    r, x, wm, wv, b = _args(xp, case, seed, bias)
    stride, padding = case[-2:]
    ref = conv_reference(x, wm, b, stride, padding)
    out, _ = F.conv2d_forward(on(xp, x), on(xp, wm), None if b is None else on(xp, b),
                              stride=stride, padding=padding)
    assert out.shape == ref.shape
    assert np.abs(to_numpy(out) - ref).max() < 1e-10 * (1 + np.abs(ref).max())
    # the LRT formula, term by term: conv(x, μ) + b + sqrt(conv(x², σ²) + eps) ζ
    noise = r.standard_normal(ref.shape)
    lrt, _ = F.lrt_conv2d_forward(*(None if a is None else on(xp, a)
                                    for a in (x, wm, wv, b, noise)), stride=stride,
                                  padding=padding, eps=1e-8)
    expect = ref + np.sqrt(conv_reference(x * x, wv, None, stride, padding) + 1e-8) * noise
    assert np.abs(to_numpy(lrt) - expect).max() < 1e-10 * (1 + np.abs(expect).max())


@pytest.mark.parametrize("kh,kw,padding", [(3, 3, 1), (5, 5, 2), (2, 2, 2), (1, 1, 2),
                                           (3, 1, 0), (1, 4, 1), (4, 2, 1)])
def test_wide_rows_share_their_padding(kh, kw, padding):
    """Wide rows keep one gap of max(p, 2p − KW + 1) zeros between images rows (the right
    padding of one row is the left padding of the next): values equal the nested loops and
    gradients equal finite differences, for gaps equal to p, above p, and without padding."""
    case = (2, 3, 2, 5, 6, kh, kw, 1, padding)  # N, C_in, C_out, H, W, KH, KW, stride, p
    r, x, wm, wv, b = _args(np, case, 7)
    g = _im2col.conv_geometry(x.shape, wm.shape, 1, padding)
    assert g.wide and g.wp == 6 + max(padding, 2 * padding - kw + 1) and g.wq == g.wp
    assert g.wo <= g.wp <= 6 + 2 * padding
    # the last read of the window view (scratch positions included) stays inside the buffer:
    # as_strided checks no bounds, and a read past it would only reach discarded scratch
    assert (g.ho - 1 + g.kh - 1) * g.wp + (g.wq - 1) + (g.kw - 1) < g.L
    ref = conv_reference(x, wm, b, 1, padding)
    assert np.abs(F.conv2d_forward(x, wm, b, 1, padding)[0] - ref).max() < 1e-10
    _conv_gradcheck(np, case, 7, True)
    _sampled_gradcheck(np, "lrt", case, 7, True)


BLOCKS = st.sampled_from([1, 1 << 30])  # one example per block, or the whole batch


@given(case=small_cases, seed=seeds, bias=st.booleans(), block=BLOCKS)
def test_conv_gradcheck(xp, case, seed, bias, block):
    default = _im2col._BLOCK_ELEMENTS, _im2col._BLOCK_COLUMNS
    _im2col._BLOCK_ELEMENTS = _im2col._BLOCK_COLUMNS = block
    try:
        _conv_gradcheck(xp, case, seed, bias)
    finally:
        _im2col._BLOCK_ELEMENTS, _im2col._BLOCK_COLUMNS = default


def _conv_gradcheck(xp, case, seed, bias):
    _, x, w, _, b = _args(xp, case, seed, bias)
    stride, padding = case[-2:]
    args = [on(xp, x), on(xp, w)] + ([on(xp, b)] if bias else [])

    def f(x, w, b=None):
        return F.conv2d_forward(x, w, b, stride, padding)[0]

    def vjp(d, x, w, b=None):
        g = F.conv2d_backward(on(xp, d), F.conv2d_forward(x, w, b, stride, padding)[1])
        assert (g.db is None) == (not bias)
        return [g.dx, g.dw] + ([g.db] if bias else [])

    assert max(check_vjp(f, vjp, args, seed=seed)) < TOL


SAMPLED = {  # op: (forward, backward, noise shape from (case, H_out, W_out))
    "lrt": (F.lrt_conv2d_forward, F.lrt_conv2d_backward,
            lambda cs, ho, wo: (cs[0], cs[2], ho, wo)),
    "shared_weights": (F.shared_weight_conv2d_forward, F.shared_weight_conv2d_backward,
                       lambda cs, ho, wo: (cs[2], cs[1], cs[5], cs[6])),
    "per_example_weights": (F.per_example_conv2d_forward, F.per_example_conv2d_backward,
                            lambda cs, ho, wo: (cs[0], cs[2], cs[1], cs[5], cs[6])),
}


@pytest.mark.parametrize("op", list(SAMPLED))
@given(case=small_cases, seed=seeds, bias=st.booleans(), block=BLOCKS)
def test_sampled_conv_gradcheck(xp, op, case, seed, bias, block):
    default = _im2col._BLOCK_ELEMENTS, _im2col._BLOCK_COLUMNS
    _im2col._BLOCK_ELEMENTS = _im2col._BLOCK_COLUMNS = block
    try:
        _sampled_gradcheck(xp, op, case, seed, bias)
    finally:
        _im2col._BLOCK_ELEMENTS, _im2col._BLOCK_COLUMNS = default


def _sampled_gradcheck(xp, op, case, seed, bias):
    fwd, bwd, noise_shape = SAMPLED[op]
    r, x, wm, wv, b = _args(xp, case, seed, bias)
    stride, padding = case[-2:]
    noise = on(xp, r.standard_normal(noise_shape(case, *_out_hw(case))))
    args = [on(xp, a) for a in (x, wm, wv)] + ([on(xp, b)] if bias else [])

    def f(x, wm, wv, b=None):
        return fwd(x, wm, wv, b, noise, stride, padding)[0]

    def vjp(d, x, wm, wv, b=None):
        g = bwd(on(xp, d), fwd(x, wm, wv, b, noise, stride, padding)[1])
        assert (g.db is None) == (not bias)
        return [g.dx, g.dw_mean, g.dw_var] + ([g.db] if bias else [])

    assert max(check_vjp(f, vjp, args, seed=seed)) < TOL


@given(case=small_cases, seed=seeds)
def test_per_example_and_shared_samplers_are_convs_with_sampled_kernels(case, seed):
    r, x, wm, wv, b = _args(np, case, seed)
    stride, padding = case[-2:]
    n = case[0]
    e = r.standard_normal((n,) + wm.shape)
    out, _ = F.per_example_conv2d_forward(x, wm, wv, b, e, stride, padding)
    for i in range(n):
        ref = conv_reference(x[i:i + 1], wm + np.sqrt(wv + 1e-8) * e[i], b, stride, padding)
        assert np.allclose(out[i:i + 1], ref, atol=1e-10)
    out, _ = F.shared_weight_conv2d_forward(x, wm, wv, b, e[0], stride, padding)
    assert np.allclose(out, conv_reference(x, wm + np.sqrt(wv + 1e-8) * e[0], b, stride,
                                           padding), atol=1e-10)


@pytest.mark.parametrize("c, o, stride, wide", [(3, 4, 1, True), (1, 12, 1, False),
                                                 (3, 4, 2, False)])
def test_blocks_of_examples_match_one_block(monkeypatch, c, o, stride, wide):
    """The ops walk blocks of examples (sized to the cache; the backward pass rebuilds each
    block's windows), in the wide layout (stride 1, C_in·KH·KW ≥ C_out) or not: one example
    per block, a few, and the whole batch give the same values, equal to the reference, and
    the gradient of central differences along a direction."""
    r = np.random.default_rng(0)
    x = r.standard_normal((7, c, 11, 9))
    wm, wv = r.standard_normal((o, c, 3, 3)), r.uniform(0.1, 1.0, (o, c, 3, 3))
    b = r.standard_normal(o)
    g = _im2col.conv_geometry(x.shape, wm.shape, stride, 1)
    assert g.wide == wide
    noise = r.standard_normal(g.out_shape)
    e = r.standard_normal((7,) + wm.shape)
    dout = r.standard_normal(g.out_shape)

    def run(block):
        monkeypatch.setattr(_im2col, "_BLOCK_ELEMENTS", block)
        monkeypatch.setattr(_im2col, "_BLOCK_COLUMNS", block)
        out, cache = F.lrt_conv2d_forward(x, wm, wv, b, noise, stride, 1)
        out2, cache2 = F.conv2d_forward(x, wm, b, stride, 1)
        out3, cache3 = F.per_example_conv2d_forward(x, wm, wv, b, e, stride, 1)
        return [out, *F.lrt_conv2d_backward(dout, cache), out2, *F.conv2d_backward(dout, cache2),
                out3, *F.per_example_conv2d_backward(dout, cache3)]

    bufsize = np.getbufsize()
    results = [run(block) for block in (1, 3 * (g.k + 1) * g.m, 1 << 30)]
    monkeypatch.setattr(_im2col, "_UNBUFFERED_RUN", 1)  # wide runs scattered without buffers
    results.append(run(1 << 30))
    assert np.getbufsize() == bufsize  # the scatter's small ufunc buffers are scoped
    for a, b_ in zip(results[2], results[3]):  # buffering changes no arithmetic
        assert np.array_equal(a, b_)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.allclose(a, b_, rtol=1e-12, atol=1e-12)
    ref = conv_reference(x, wm, b, stride, 1)
    assert np.allclose(results[0][5], ref)
    assert np.allclose(results[0][0], ref + np.sqrt(conv_reference(x * x, wv, None, stride, 1)
                                                    + 1e-8) * noise)
    v = r.standard_normal(x.shape)  # directional derivative along v, one example per block
    h = 1e-6

    def loss(x_):
        return np.sum(dout * F.lrt_conv2d_forward(x_, wm, wv, b, noise, stride, 1)[0])

    fd = (loss(x + h * v) - loss(x - h * v)) / (2 * h)
    assert abs(fd - np.sum(results[0][1] * v)) < 1e-7 * abs(fd)


def test_float32_stays_float32(xp):
    r = np.random.default_rng(0)
    x = on(xp, r.standard_normal((2, 3, 6, 5)), "float32")
    w = on(xp, r.standard_normal((4, 3, 3, 3)), "float32")
    wv = on(xp, r.uniform(0.1, 1, (4, 3, 3, 3)), "float32")
    b = on(xp, np.zeros(4), "float32")
    out, c = F.lrt_conv2d_forward(x, w, wv, b, on(xp, r.standard_normal((2, 4, 6, 5)),
                                                  "float32"), 1, 1)
    g = F.lrt_conv2d_backward(xp.ones_like(out), c)
    assert out.dtype == np.float32 and all(a.dtype == np.float32 for a in g)
    out, c = F.maxpool2d_forward(x, 2)
    assert out.dtype == np.float32 and F.maxpool2d_backward(out, c).dtype == np.float32


def test_zero_input_gives_finite_outputs_and_gradients(xp):
    """x = 0: conv(x², σ²) = 0 exactly; the eps keeps 1/(2s) finite."""
    r = np.random.default_rng(0)
    x = xp.zeros((2, 3, 5, 4))
    wm = on(xp, r.standard_normal((2, 3, 3, 3)))
    for wv in (on(xp, r.uniform(0.1, 1, (2, 3, 3, 3))), xp.zeros((2, 3, 3, 3))):
        for op, (fwd, bwd, shape) in SAMPLED.items():
            case = (2, 3, 2, 5, 4, 3, 3, 1, 1)
            noise = on(xp, r.standard_normal(shape(case, 5, 4)))
            out, cache = fwd(x, wm, wv, None, noise, 1, 1)
            g = bwd(on(xp, r.standard_normal(out.shape)), cache)
            for a in (out, g.dx, g.dw_mean, g.dw_var):
                assert bool(xp.isfinite(a).all()), op


BAD = [
    (dict(x=np.zeros((2, 3, 5))), ValueError, "x must have 4 dimensions"),
    (dict(w_mean=np.zeros((4, 3, 3))), ValueError, "w_mean must have 4 dimensions"),
    (dict(x=np.zeros((2, 2, 5, 5))), ValueError, "channels.*C_in = 3"),
    (dict(w_mean=np.zeros((4, 3, 8, 3)), w_var=np.ones((4, 3, 8, 3))), ValueError,
     "kernel.*larger than the padded input"),
    (dict(stride=1.0), TypeError, "stride must be an int"),
    (dict(stride=True), TypeError, "stride must be an int"),
    (dict(stride=0), ValueError, "stride must be an int >= 1"),
    (dict(padding=-1), ValueError, "padding must be an int >= 0"),
    (dict(padding=np.float64(1)), TypeError, "padding must be an int"),
    (dict(w_var=np.ones((4, 3, 2, 3))), ValueError, "w_var must have shape"),
    (dict(b=np.zeros(3)), ValueError, r"b must have shape \(4,\)"),
    (dict(noise=np.zeros((2, 4, 5, 5))), ValueError, "noise must have shape"),
    (dict(x=np.zeros((2, 3, 5, 5), np.float32)), TypeError, "dtype"),
    (dict(x=np.zeros((2, 3, 5, 5), int)), TypeError, "x must be a float32 or float64"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD)
def test_lrt_conv_bad_input(kwargs, exc, match):
    args = dict(x=np.zeros((2, 3, 5, 5)), w_mean=np.zeros((4, 3, 3, 3)),
                w_var=np.ones((4, 3, 3, 3)), b=np.zeros(4), noise=np.zeros((2, 4, 3, 3)),
                stride=1, padding=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        F.lrt_conv2d_forward(**args)


def test_other_ops_bad_input():
    x, w = np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3, 3))
    with pytest.raises(TypeError, match="stride"):
        F.conv2d_forward(x, w, None, stride="2")
    with pytest.raises(ValueError, match="x must have 4"):
        F.conv2d_forward(np.zeros((3, 5, 5)), w)
    with pytest.raises(ValueError, match="x has 3 channels but w expects C_in = 2"):
        F.conv2d_forward(x, np.zeros((4, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"kernel \(6, 3\) of w is larger"):
        F.conv2d_forward(x, np.zeros((4, 3, 6, 3)))
    with pytest.raises(ValueError, match="noise must have shape.*one kernel sample per minibatch"):
        F.shared_weight_conv2d_forward(x, w, w + 1, None, np.zeros((2, 4, 3, 3, 3)))
    with pytest.raises(ValueError, match="noise must have shape.*per example"):
        F.per_example_conv2d_forward(x, w, w + 1, None, np.zeros((4, 3, 3, 3)))
    _, cache = F.conv2d_forward(x, w)
    with pytest.raises(ValueError, match="dout must have shape"):
        F.conv2d_backward(np.zeros((2, 4, 2, 3)), cache)
    _, cache = F.lrt_conv2d_forward(x, w, w + 1, None, np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="dout must have shape"):
        F.lrt_conv2d_backward(np.zeros((2, 4, 3)), cache)


def test_mixed_backends_name_the_arguments():
    from .test_backend import FakeCupyArray

    with pytest.raises(TypeError, match="mixed backends.*w_mean"):
        F.lrt_conv2d_forward(np.zeros((2, 3, 5, 5)), FakeCupyArray(), np.ones((4, 3, 3, 3)),
                             None, np.zeros((2, 4, 3, 3)))
