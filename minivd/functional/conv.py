"""2-D convolutions (cross-correlation, NCHW): the plain conv and its local-reparameterization
(LRT) version.

Shapes: ``x (N, C_in, H, W)``, weights ``(C_out, C_in, KH, KW)``, bias ``(C_out,)`` or
``None``, noise of the output shape ``(N, C_out, H_out, W_out)`` with
``H_out = (H + 2·padding − KH) // stride + 1`` (same for W). ``stride`` and ``padding`` are
ints, the same for both axes. The output dtype is the input dtype.

Both ops turn the conv into matrix products on the im2col matrix ``X`` (one row per output
position, one column per kernel entry), so the LRT conv is exactly
:func:`~minivd.functional.lrt_dense_forward` on the rows of ``X``. How ``X`` is laid out and
walked in cache-sized blocks of examples is in :mod:`minivd.functional._im2col`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_xp
from ._checks import check_array, check_eps, check_upstream
from ._im2col import (
    ConvBlocks,
    ConvGeom,
    check_conv_args,
    check_noise,
    nchw_block,
    pad_input,
    unpad,
)

__all__ = [
    "ConvGrads",
    "LRTConvGrads",
    "conv2d_forward",
    "conv2d_backward",
    "lrt_conv2d_forward",
    "lrt_conv2d_backward",
]


class ConvGrads(NamedTuple):
    dx: Any
    dw: Any
    db: Any


class LRTConvGrads(NamedTuple):
    dx: Any
    dw_mean: Any
    dw_var: Any
    db: Any


class ConvCache(NamedTuple):
    xpad: Any
    w: Any
    geom: ConvGeom
    has_bias: bool


class LRTConvCache(NamedTuple):
    xpad: Any
    w_mean: Any
    w_var: Any
    noise: Any
    s: Any
    geom: ConvGeom
    has_bias: bool


def _mat(w: Any) -> Any:
    """``(C_out, C_in, KH, KW)`` → ``(C_out, C_in·KH·KW)``, columns in the im2col row order."""
    return w.reshape(w.shape[0], -1)


def _aug(xp: Any, w: Any, last: Any) -> Any:
    """``[w.reshape(C_out, -1) | last]``: the last column meets the im2col ones row."""
    if isinstance(last, float):
        return xp.concatenate([_mat(w), xp.full((w.shape[0], 1), last, dtype=w.dtype)], axis=1)
    return xp.concatenate([_mat(w), last[:, None]], axis=1)


def _conv(xp: Any, x: Any, w: Any, b: Any, g: ConvGeom) -> tuple[Any, Any]:
    """``(conv(x, w) + b, xpad)`` for geometry ``g``, one block of examples at a time."""
    xpad = pad_input(x, g)
    blocks, w_aug = ConvBlocks(xpad, g), _aug(xp, w, 0.0 if b is None else b)
    out = xp.empty(g.out_shape, dtype=x.dtype)
    for n0, n1 in blocks.spans:
        cb, _ = blocks.cols(n0, n1)
        y = xp.matmul(w_aug, cb, out=blocks.buffer("y", g.o, n0, n1))  # channel-major, + b
        out[n0:n1] = nchw_block(y, g)
    return out, xpad


def conv2d_forward(x: Any, w: Any, b: Any = None, stride: int = 1,
                   padding: int = 0) -> tuple[Any, ConvCache]:
    """``out[n, o, i, j] = Σ_{c,a,e} x_pad[n, c, i·s + a, j·s + e] · w[o, c, a, e] + b[o]``.

    Parameters
    ----------
    x : array (N, C_in, H, W)
    w : array (C_out, C_in, KH, KW)
    b : array (C_out,) or None
    stride, padding : int
        Step of the window (≥ 1) and zeros added on every side (≥ 0).

    Returns
    -------
    out : array (N, C_out, H_out, W_out)
    cache : ConvCache
    """
    xp, g = check_conv_args(x, w, None, b, stride, padding, w_name="w")
    out, xpad = _conv(xp, x, w, b, g)
    return out, ConvCache(xpad, w, g, b is not None)


def conv2d_backward(dout: Any, cache: ConvCache) -> ConvGrads:
    r"""Gradients of :func:`conv2d_forward`.

    Parameters
    ----------
    dout : array (N, C_out, H_out, W_out)
    cache : ConvCache

    Returns
    -------
    ConvGrads
        ``dx (N, C_in, H, W)``, ``dw (C_out, C_in, KH, KW)``, ``db (C_out,)`` or None.

    Notes
    -----
    With the im2col matrix :math:`X` (rows: output positions :math:`(n, i, j)`, columns:
    kernel entries) and the kernel as a matrix :math:`\tilde W` (kernel entries × ``C_out``),
    the forward is the dense map :math:`Y = X\tilde W + b`; the steps are those of
    :func:`lrt_conv2d_backward` without the variance path:

    1. ``G`` = ``dout`` as rows of :math:`Y`; ``db = Σ_rows G``.
    2. ``dW̃ = Xᵀ G``, reshaped back to ``(C_out, C_in, KH, KW)``.
    3. ``dX = G W̃ᵀ``, then ``dx = col2im(dX)``: one strided add per kernel offset.
    """
    xpad, w, g, has_bias = cache
    check_upstream("dout", dout, g.out_shape, "(N, C_out, H_out, W_out)", like=w)
    xp = get_xp(dout, xpad)
    blocks, w_mat = ConvBlocks(xpad, g), _mat(w)
    dw = xp.zeros((g.o, g.k + 1), dtype=xpad.dtype)  # last column: db, from the ones row
    dxpad = xp.zeros_like(xpad)
    for n0, n1 in blocks.spans:  # the forward pass's blocks; X_b is rebuilt from xpad
        cb, _ = blocks.cols(n0, n1)
        gb = blocks.rows("g", dout, n0, n1)  # step 1 (channel-major: Gᵀ)
        dw += gb @ cb.T  # steps 1-2
        dcols = xp.matmul(w_mat.T, gb, out=blocks.buffer("dcols", g.k, n0, n1))  # step 3
        blocks.scatter(dcols, n0, n1, dxpad)
    db = dw[:, g.k].copy() if has_bias else None
    return ConvGrads(unpad(dxpad, g), dw[:, :g.k].reshape(w.shape), db)


def lrt_conv2d_forward(
    x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any, stride: int = 1, padding: int = 0,
    eps: float = 1e-8,
) -> tuple[Any, LRTConvCache]:
    r"""Conv layer with a factorised Gaussian kernel posterior, sampled by the LRT.

    ``out = conv(x, w_mean) + b + sqrt(conv(x*x, w_var) + eps) * noise`` (cross-correlation).

    What it approximates: drawing a kernel ``W_n ~ N(w_mean, w_var)`` for every example ``n``
    and computing ``conv(x_n, W_n) + b``. **Each output's marginal is exact** (a sum of
    independent Gaussians has mean ``conv(x, w_mean) + b`` and variance ``conv(x², w_var)``),
    **but the covariance between outputs that share a kernel sample is dropped**: any two
    outputs ``p, q`` of one example in one output channel use the same ``W_n`` and have
    covariance ``Σ_k σ²_k x_{p+k} x_{q+k}`` under kernel sampling (largest for overlapping
    patches, but not zero for disjoint ones: the same kernel entry ``k`` multiplies both),
    while here every output has its own independent noise. This is K15's conv LRT, as used
    by M17 and later libraries; the exact per-example sampler is
    :func:`~minivd.functional.per_example_conv2d_forward`.

    Parameters
    ----------
    x : array (N, C_in, H, W)
    w_mean : array (C_out, C_in, KH, KW)
        Posterior means :math:`\mu`.
    w_var : array (C_out, C_in, KH, KW)
        Posterior variances :math:`\sigma^2 \ge 0`.
    b : array (C_out,) or None
    noise : array (N, C_out, H_out, W_out)
        Standard normal :math:`\zeta`: one per example, channel and position.
    stride, padding : int
    eps : float
        Added under the square root, so a zero patch (``conv(x*x, w_var) = 0``) gives finite
        outputs and gradients.

    Returns
    -------
    out : array (N, C_out, H_out, W_out)
    cache : LRTConvCache

    References
    ----------
    Kingma, Salimans & Welling (2015), section 2.3; Molchanov et al. (2017), section 4.
    """
    check_array("w_var", w_var)
    xp, g = check_conv_args(x, w_mean, w_var, b, stride, padding)
    check_noise(noise, x, g.out_shape, "(N, C_out, H_out, W_out)")
    eps = check_eps(eps, x.dtype)
    xpad = pad_input(x, g)
    blocks = ConvBlocks(xpad, g)
    wm, wv = _aug(xp, w_mean, 0.0 if b is None else b), _aug(xp, w_var, float(eps))
    out, s = xp.empty(g.out_shape, dtype=x.dtype), xp.empty(g.out_shape, dtype=x.dtype)
    for n0, n1 in blocks.spans:  # a block of examples at a time, in cache
        cb, cb2 = blocks.cols(n0, n1, square=True)  # windows of x*x = windows of x, squared
        gamma = xp.matmul(wm, cb, out=blocks.buffer("gamma", g.o, n0, n1))  # γ + b
        delta = xp.matmul(wv, cb2, out=blocks.buffer("delta", g.o, n0, n1))  # δ + eps
        xp.sqrt(delta, out=delta)
        s[n0:n1] = nchw_block(delta, g)  # s = sqrt(δ + eps), kept for the backward pass
        ob = out[n0:n1]
        ob[...] = nchw_block(gamma, g)
        ob += xp.multiply(s[n0:n1], noise[n0:n1], out=blocks.array("s_noise", ob.shape))
    return out, LRTConvCache(xpad, w_mean, w_var, noise, s, g, b is not None)


def lrt_conv2d_backward(dout: Any, cache: LRTConvCache, need_dx: bool = True) -> LRTConvGrads:
    r"""Gradients of :func:`lrt_conv2d_forward`.

    Parameters
    ----------
    dout : array (N, C_out, H_out, W_out)
        :math:`\partial L/\partial\,\text{out}`.
    cache : LRTConvCache
        From :func:`lrt_conv2d_forward` (it holds the noise that was used).
    need_dx : bool
        False skips steps 4–5 (two products and the scatter) and returns ``dx = None``: the
        first layer of a model, whose input is data, needs no ``dx``.

    Returns
    -------
    LRTConvGrads
        ``dx (N, C_in, H, W)`` (None with ``need_dx=False``), ``dw_mean`` and
        ``dw_var (C_out, C_in, KH, KW)``, ``db (C_out,)`` or None.

    Notes
    -----
    Forward map, with :math:`\bar x` the zero-padded input, :math:`r = (n, i, j)` an output
    position and :math:`\kappa = (c, a, e)` a kernel entry (input channel ``c``, kernel row
    ``a``, kernel column ``e``):

    .. math::

        X_{r\kappa} = \bar x_{n,c,\,is+a,\,js+e}, \qquad
        \gamma_{ro} = \sum_\kappa X_{r\kappa}\,\mu_{o\kappa} + b_o, \qquad
        \delta_{ro} = \sum_\kappa X_{r\kappa}^2\,\sigma^2_{o\kappa},

    .. math::

        s_{ro} = \sqrt{\delta_{ro} + \epsilon}, \qquad
        \text{out}_{n,o,i,j} = \gamma_{ro} + s_{ro}\,\zeta_{n,o,i,j},

    where :math:`\mu_{o\kappa} = \mu_{o,c,a,e}` is ``w_mean.reshape(C_out, -1)`` (likewise
    :math:`\sigma^2`).

    1. **im2col.** :math:`X` has one row per output position and one column per kernel entry
       (the code stores :math:`X^\top`). The windows of :math:`x^2` are the squared windows
       of :math:`x`, so :math:`X\circ X` is the im2col matrix of ``x*x``. The conv is now
       the dense LRT layer :math:`\gamma = X\mu^\top + b`,
       :math:`\delta = (X\circ X)(\sigma^2)^\top` on the rows of :math:`X`, and steps 2–4 are
       the dense formulas of :func:`~minivd.functional.lrt_dense_backward`.
    2. :math:`G_{ro} = \partial L/\partial\text{out}_{n,o,i,j}` is
       :math:`\partial L/\partial\gamma`, and
       :math:`\Delta = \partial L/\partial\delta = G\circ\zeta/(2s)`.
    3. :math:`\partial L/\partial\mu = G^\top X` and
       :math:`\partial L/\partial\sigma^2 = \Delta^\top(X\circ X)`, reshaped back to
       ``(C_out, C_in, KH, KW)``: every output position meets the same kernel, so the sum
       over rows adds the contributions of all positions and examples.
    4. :math:`\partial L/\partial X = G\mu + 2X\circ(\Delta\,\sigma^2)`: through
       :math:`\gamma`, and through :math:`\delta`, whose entry :math:`X^2_{r\kappa}` has
       derivative :math:`2X_{r\kappa}`.
    5. **Scatter (col2im).** :math:`x` reaches :math:`X` by copies:
       :math:`\bar x_{n,c,h,w}` is :math:`X_{(n,i,j),(c,a,e)}` for every :math:`is + a = h`,
       :math:`js + e = w`. So :math:`\partial L/\partial\bar x_{n,c,h,w}` is the sum of
       :math:`\partial L/\partial X` over those pairs: for each of the :math:`KH\cdot KW`
       offsets :math:`(a, e)` one strided add of the columns :math:`(\cdot, a, e)` into
       ``dxpad[c, n, a::s, e::s]`` (the targets are distinct within an offset, so no
       ``add.at``); then the padding is cut off.

    6. :math:`\partial L/\partial b_o = \sum_r G_{ro}`.

    Four matrix products (steps 3 and 4), as for the dense layer; the forward needed two.

    The code runs steps 1–5 one block of examples at a time: the rows of :math:`X` of those
    examples are rebuilt from the padded input while in cache (as in the forward pass), and
    steps 3 and 6 sum over blocks, 6 as the product of :math:`G` with a row of ones appended
    to :math:`X^\top`. It keeps :math:`2\Delta = G\circ\zeta/s` (so step 4 reads
    :math:`G\mu + X\circ(2\Delta\,\sigma^2)`, formed on the block while it is in cache, and
    step 5 is one scatter) and halves the small :math:`\partial L/\partial\sigma^2` at the
    end.

    References
    ----------
    Kingma, Salimans & Welling (2015), section 2.3 and its conv remark.
    """
    xpad, w_mean, w_var, noise, s, g, has_bias = cache
    check_upstream("dout", dout, g.out_shape, "(N, C_out, H_out, W_out)", like=w_mean)
    xp = get_xp(dout, xpad)
    blocks, wm, wv = ConvBlocks(xpad, g), _mat(w_mean), _mat(w_var)
    dd = xp.multiply(dout, noise)  # step 2: 2·Delta = G ζ / s
    dd /= s
    dw_mean = xp.zeros((g.o, g.k + 1), dtype=s.dtype)  # last column: db, from the ones row
    dw_var = xp.zeros((g.o, g.k + 1), dtype=s.dtype)
    dxpad = xp.zeros_like(xpad) if need_dx else None
    for n0, n1 in blocks.spans:  # the forward pass's blocks; X_b is rebuilt from xpad
        cb, cb2 = blocks.cols(n0, n1, square=True)  # step 1
        gb, db_ = blocks.rows("g", dout, n0, n1), blocks.rows("dd", dd, n0, n1)
        dw_mean += gb @ cb.T  # steps 3 and 6
        dw_var += db_ @ cb2.T  # step 3 (times 2)
        if not need_dx:
            continue
        dcols = xp.matmul(wv.T, db_, out=blocks.buffer("dcols", g.k, n0, n1))  # step 4: 2Δσ²
        dcols *= cb[:g.k]  # X ∘ (2Δσ²) (0 at scratch positions: there 2Δσ² is 0)
        dcols += xp.matmul(wm.T, gb, out=cb2[:g.k])  # + Gμ (X∘X is used up: its buffer)
        blocks.scatter(dcols, n0, n1, dxpad)  # step 5
    dx = unpad(dxpad, g) if need_dx else None
    db = dw_mean[:, g.k].copy() if has_bias else None  # step 6
    dw_var = dw_var[:, :g.k].reshape(w_mean.shape)
    dw_var *= 0.5
    return LRTConvGrads(dx, dw_mean[:, :g.k].reshape(w_mean.shape), dw_var, db)
