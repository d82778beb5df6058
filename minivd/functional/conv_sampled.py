"""Conv layers that sample the kernel itself (the estimators the conv LRT is compared with).

* :func:`shared_weight_conv2d_forward`: **one** kernel sample
  ``W = μ + sqrt(σ² + eps)·E`` for the whole minibatch (``noise (C_out, C_in, KH, KW)``).
  Every example sees the same kernel, so per-example gradient terms are correlated and the
  minibatch gradient variance stops falling as 1/M.
* :func:`per_example_conv2d_forward`: a separate kernel ``W_n`` for every example
  (``noise (N, C_out, C_in, KH, KW)``). This is the exact model the conv LRT approximates:
  all outputs of one example in one channel share ``W_n`` and are correlated (most strongly
  where patches overlap), which LRT's independent output noise drops (see
  :func:`~minivd.functional.lrt_conv2d_forward`).

``eps`` (1e-8) is added to the variance before the square root, as in the dense ops.
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
from .conv import ConvCache, LRTConvGrads, _aug, _mat, conv2d_backward, conv2d_forward

__all__ = [
    "shared_weight_conv2d_forward",
    "shared_weight_conv2d_backward",
    "per_example_conv2d_forward",
    "per_example_conv2d_backward",
]


class SharedWeightConvCache(NamedTuple):
    conv: ConvCache
    std: Any
    noise: Any


class PerExampleConvCache(NamedTuple):
    xpad: Any
    w_mean: Any
    std: Any
    noise: Any
    geom: ConvGeom
    has_bias: bool


def shared_weight_conv2d_forward(
    x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any, stride: int = 1, padding: int = 0,
    eps: float = 1e-8,
) -> tuple[Any, SharedWeightConvCache]:
    """``out = conv(x, w_mean + sqrt(w_var + eps) * noise) + b``, one ``noise (C_out, C_in,
    KH, KW)`` for the minibatch.

    Returns
    -------
    out : array (N, C_out, H_out, W_out)
    cache : SharedWeightConvCache
    """
    check_array("w_var", w_var)
    xp, _ = check_conv_args(x, w_mean, w_var, b, stride, padding)
    check_noise(noise, x, w_mean.shape, "(C_out, C_in, KH, KW): one kernel sample per minibatch")
    std = xp.sqrt(w_var + check_eps(eps, x.dtype))
    w = std * noise
    w += w_mean
    out, conv_cache = conv2d_forward(x, w, b, stride, padding)
    return out, SharedWeightConvCache(conv_cache, std, noise)


def shared_weight_conv2d_backward(dout: Any, cache: SharedWeightConvCache) -> LRTConvGrads:
    r"""Gradients of :func:`shared_weight_conv2d_forward`.

    Returns
    -------
    LRTConvGrads
        ``dx``, ``dw_mean``, ``dw_var``, ``db`` (None without bias).

    Notes
    -----
    Forward: :math:`W = \mu + s\circ E` with :math:`s = \sqrt{\sigma^2 + \epsilon}`,
    :math:`\text{out} = \operatorname{conv}(x, W) + b`.

    1. ``dx``, ``dW`` and ``db`` are those of the plain conv with the sampled kernel
       (:func:`~minivd.functional.conv2d_backward`).
    2. :math:`\partial W/\partial\mu = 1`: ``dw_mean = dW``.
    3. :math:`\partial W/\partial s = E` and :math:`\partial s/\partial\sigma^2 = 1/(2s)`:
       ``dw_var = dW * E / (2 s)``.
    """
    conv_cache, std, noise = cache
    g = conv2d_backward(dout, conv_cache)  # step 1
    dw_var = g.dw * noise  # step 3
    dw_var /= std
    dw_var *= 0.5
    return LRTConvGrads(g.dx, g.dw, dw_var, g.db)  # step 2: dw_mean = dW


def per_example_conv2d_forward(
    x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any, stride: int = 1, padding: int = 0,
    eps: float = 1e-8,
) -> tuple[Any, PerExampleConvCache]:
    """``out_n = conv(x_n, w_mean + sqrt(w_var + eps) * noise_n) + b`` for every example ``n``.

    ``noise`` has shape ``(N, C_out, C_in, KH, KW)``. For each block of examples (see
    :class:`~minivd.functional._im2col.ConvBlocks`) the mean kernel's part is one matrix
    product and the per-example parts are a batched product.

    Returns
    -------
    out : array (N, C_out, H_out, W_out)
    cache : PerExampleConvCache
    """
    check_array("w_var", w_var)
    xp, g = check_conv_args(x, w_mean, w_var, b, stride, padding)
    check_noise(noise, x, (g.n,) + tuple(w_mean.shape),
                "(N, C_out, C_in, KH, KW): one kernel sample per example")
    std = xp.sqrt(w_var + check_eps(eps, x.dtype))
    xpad = pad_input(x, g)
    blocks, wm = ConvBlocks(xpad, g), _aug(xp, w_mean, 0.0 if b is None else b)
    out = xp.empty(g.out_shape, dtype=x.dtype)
    for n0, n1 in blocks.spans:
        k = n1 - n0
        cb, _ = blocks.cols(n0, n1)
        y = xp.matmul(wm, cb, out=blocks.buffer("y", g.o, n0, n1))  # mean kernel, + b
        z = (noise[n0:n1] * std).reshape(k, g.o, g.k)  # s∘E_n as (C_out, K) matrices
        c3 = cb[:g.k].reshape(g.k, k, -1).transpose(1, 0, 2)  # X_nᵀ, (n, K, positions)
        y.reshape(g.o, k, -1)[...] += xp.matmul(z, c3).transpose(1, 0, 2)
        out[n0:n1] = nchw_block(y, g)
    return out, PerExampleConvCache(xpad, w_mean, std, noise, g, b is not None)


def per_example_conv2d_backward(dout: Any, cache: PerExampleConvCache) -> LRTConvGrads:
    r"""Gradients of :func:`per_example_conv2d_forward`.

    Returns
    -------
    LRTConvGrads
        ``dx``, ``dw_mean``, ``dw_var``, ``db`` (None without bias).

    Notes
    -----
    With the im2col matrix :math:`X_n` of example :math:`n` (rows: its output positions;
    see :func:`~minivd.functional.lrt_conv2d_backward`, step 1) and kernel matrices
    :math:`W_n = \mu + s\circ E_n`, :math:`s = \sqrt{\sigma^2+\epsilon}`, the forward is
    :math:`Y_n = X_n W_n + b`, i.e. the per-example dense layer on the rows of :math:`X_n`.

    1. ``G_n`` = ``dout[n]`` as rows (one per output position); ``db = Σ_rows G``.
    2. ``dX_n = G_n W_nᵀ = (G μᵀ)_n + G_n (s∘E_n)ᵀ``; ``dx = col2im(dX)``.
    3. ``dw_mean = Σ_n X_nᵀ G_n = Xᵀ G``.
    4. :math:`\partial L/\partial s = \sum_n (X_n^\top G_n)\circ E_n` and
       :math:`\partial s/\partial\sigma^2 = 1/(2s)`: ``dw_var = Σ_n (X_nᵀ G_n)∘E_n / (2s)``.
    """
    xpad, w_mean, std, noise, g, has_bias = cache
    check_upstream("dout", dout, g.out_shape, "(N, C_out, H_out, W_out)", like=w_mean)
    xp = get_xp(xpad, dout)
    blocks, wm = ConvBlocks(xpad, g), _mat(w_mean)
    dw_mean = xp.zeros((g.o, g.k + 1), dtype=std.dtype)  # last column: db, from the ones row
    dstd = xp.zeros(wm.shape, dtype=std.dtype)
    dxpad = xp.zeros_like(xpad)
    for n0, n1 in blocks.spans:
        k = n1 - n0
        cb, _ = blocks.cols(n0, n1)
        gb = blocks.rows("g", dout, n0, n1)  # step 1 (channel-major)
        dw_mean += gb @ cb.T  # steps 1 and 3
        dcols = xp.matmul(wm.T, gb, out=blocks.buffer("dcols", g.k, n0, n1))  # step 2, mean
        e = noise[n0:n1].reshape(k, g.o, g.k)  # E_n as (C_out, K) matrices
        gn = gb.reshape(g.o, k, -1).transpose(1, 0, 2)  # G_n, (n, C_out, positions)
        z = e * _mat(std)
        dcols.reshape(g.k, k, -1)[...] += xp.matmul(z.transpose(0, 2, 1), gn).transpose(1, 0, 2)
        outer = xp.matmul(gn, cb[:g.k].reshape(g.k, k, -1).transpose(1, 2, 0))  # step 4
        outer *= e
        dstd += outer.sum(axis=0)
        blocks.scatter(dcols, n0, n1, dxpad)  # step 2
    dw_var = dstd.reshape(std.shape) / std  # step 4
    dw_var *= 0.5
    db = dw_mean[:, g.k].copy() if has_bias else None  # step 1
    return LRTConvGrads(unpad(dxpad, g), dw_mean[:, :g.k].reshape(std.shape), dw_var, db)
