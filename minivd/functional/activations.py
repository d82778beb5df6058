"""Rectified linear unit."""

from __future__ import annotations

from typing import Any, NamedTuple

from ._checks import check_float, check_upstream, xp_of

__all__ = ["relu_forward", "relu_backward"]


class ReLUCache(NamedTuple):
    mask: Any


def relu_forward(x: Any) -> tuple[Any, ReLUCache]:
    """``out = max(x, 0)`` for an array of any shape (a NaN stays NaN: the loss shows it)."""
    xp = xp_of(x=x)
    check_float("x", x)
    # maximum, not where(x > 0, x, 0): NumPy's where with a scalar is ~20x slower here
    return xp.maximum(x, x.dtype.type(0)), ReLUCache(x > 0)


def relu_backward(dout: Any, cache: ReLUCache) -> Any:
    r"""Gradient of ReLU.

    Notes
    -----
    Forward: :math:`y = \max(x, 0)`.

    1. :math:`\partial y/\partial x = 1` where :math:`x > 0`, else 0 (the kink at 0 takes 0),
       so ``dx = dout * (x > 0)``.
    """
    check_upstream("dout", dout, cache.mask.shape, "same as x")
    return dout * cache.mask  # step 1
