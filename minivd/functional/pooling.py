"""Max pooling (NCHW, no padding) and flattening, with their backward passes."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._checks import check_float, check_upstream, xp_of

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "flatten_forward", "flatten_backward",
           "pair"]


class MaxPoolCache(NamedTuple):
    x_shape: tuple
    argmax: Any
    kernel: tuple[int, int]
    stride: tuple[int, int]


def pair(name: str, v: Any) -> tuple[int, int]:
    """An int ``k`` → ``(k, k)``; a pair of ints stays; each must be ≥ 1."""
    items = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(items) != 2 or any(
        isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 1 for i in items
    ):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return int(items[0]), int(items[1])


def maxpool2d_forward(x: Any, kernel: int | tuple[int, int],
                      stride: int | tuple[int, int] | None = None) -> tuple[Any, MaxPoolCache]:
    """``out[n, c, i, j] = max_{a, e} x[n, c, i·sh + a, j·sw + e]`` over a ``kernel`` window.

    Parameters
    ----------
    x : array (N, C, H, W)
    kernel : int or (KH, KW)
    stride : int or (SH, SW), optional
        Default: the kernel (non-overlapping windows).

    Returns
    -------
    out : array (N, C, H_out, W_out), ``H_out = (H − KH) // SH + 1`` (same for W)
    cache : MaxPoolCache
        Holds the position of the first maximum of every window in row-major window order
        (so a tie sends the whole gradient to the first of the tied entries). A NaN in a
        window makes that output NaN.
    """
    xp = xp_of(x=x)
    check_float("x", x, 4)
    (kh, kw), (sh, sw) = pair("kernel", kernel), pair("stride", kernel if stride is None
                                                      else stride)
    n, c, h, w = x.shape
    if kh > h or kw > w:
        raise ValueError(f"kernel ({kh}, {kw}) is larger than the input ({h}, {w}) of x")
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    # the running maximum, and the offset of the first maximum: offsets come in increasing
    # row-major order and a later one wins only when strictly greater, so the first maximum's
    # offset is the largest k with v_k > max(v_0..v_{k-1}) (0 if none); plain ufuncs only:
    # with a masked write per offset this took 4-5x as long
    idx = np.uint8 if kh * kw <= 256 else np.int32
    out = argmax = greater = hit_k = None
    for k in range(kh * kw):
        a, e = divmod(k, kw)
        v = x[:, :, a:a + sh * (ho - 1) + 1:sh, e:e + sw * (wo - 1) + 1:sw]
        if out is None:
            out = v.copy()
            argmax = xp.zeros(out.shape, dtype=idx)
            greater, hit_k = xp.empty(out.shape, dtype=bool), xp.empty(out.shape, dtype=idx)
            continue
        xp.greater(v, out, out=greater)
        xp.maximum(out, v, out=out)  # a NaN in the window makes the output NaN
        xp.multiply(greater, idx(k), out=hit_k)
        xp.maximum(argmax, hit_k, out=argmax)
    return out, MaxPoolCache(tuple(x.shape), argmax, (kh, kw), (sh, sw))


def maxpool2d_backward(dout: Any, cache: MaxPoolCache) -> Any:
    r"""Gradient of :func:`maxpool2d_forward` with respect to ``x``.

    Notes
    -----
    Forward: :math:`y_{ncij} = x_{nc,\,i s_h + a^*,\,j s_w + e^*}` with :math:`(a^*, e^*)` the
    first maximiser of the window (the cached ``argmax``); the map is locally a copy.

    1. :math:`\partial y_{ncij}/\partial x_{nc,\,is_h+a,\,js_w+e} = [\,(a,e) = (a^*,e^*)\,]`.
    2. So :math:`\partial L/\partial x` collects :math:`G_{ncij}` at each window's maximiser:
       for every kernel offset :math:`(a, e)`, one strided add
       ``dx[:, :, a::sh, e::sw] += dout * (argmax == a·KW + e)``. Within one offset the
       targets are distinct; overlapping windows (stride < kernel) add up across offsets.
       Disjoint windows (stride ≥ kernel) reach each target from one offset only, so there
       the add into zeros is a plain product written into the strided view.
    """
    x_shape, argmax, (kh, kw), (sh, sw) = cache
    check_upstream("dout", dout, argmax.shape, "(N, C, H_out, W_out)")
    xp = xp_of(dout=dout, argmax=argmax)
    ho, wo = argmax.shape[2:]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    hit = xp.empty(argmax.shape, dtype=bool)
    for k in range(kh * kw):  # step 2
        a, e = divmod(k, kw)
        view = dx[:, :, a:a + sh * (ho - 1) + 1:sh, e:e + sw * (wo - 1) + 1:sw]
        xp.equal(argmax, argmax.dtype.type(k), out=hit)
        if sh >= kh and sw >= kw:  # disjoint windows: each target is written once
            xp.multiply(dout, hit, out=view)
        else:
            view += dout * hit
    return dx


def flatten_forward(x: Any) -> tuple[Any, tuple]:
    """``(N, d1, d2, ...)`` → ``(N, d1·d2·...)`` (C order); the cache is the input shape."""
    xp_of(x=x)
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis, got shape {tuple(x.shape)}")
    rest = int(np.prod(x.shape[1:], dtype=np.int64))  # not -1: N = 0 must work too
    return x.reshape(x.shape[0], rest), tuple(x.shape)


def flatten_backward(dout: Any, cache: tuple) -> Any:
    """The reshape back: ``dout (N, d1·d2·...)`` → ``(N, d1, d2, ...)``."""
    n = cache[0]
    rest = int(np.prod(cache[1:], dtype=np.int64))
    check_upstream("dout", dout, (n, rest), "(N, features)")
    return dout.reshape(cache)
