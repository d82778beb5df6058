"""Argument checks shared by the functional ops: clear errors that name the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_xp


def check_float(name: str, a: Any, ndim: int | None = None) -> None:
    """``a`` must be a floating NumPy/CuPy array (of rank ``ndim`` when given)."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")


def check_shape(name: str, a: Any, shape: tuple, what: str = "") -> None:
    """``a.shape`` must equal ``shape``."""
    if tuple(a.shape) != tuple(shape):
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {tuple(shape)}{extra}, got {tuple(a.shape)}")


def check_same_dtype(**arrays: Any) -> None:
    """All non-None arrays share one dtype (float32 stays float32: no silent upcast)."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {a.dtype} but {first_name} has {first.dtype}; "
                "cast them to one floating dtype"
            )


def xp_of(**arrays: Any) -> Any:
    """``get_xp`` over named arrays; a mixed-backend error names them."""
    try:
        return get_xp(*arrays.values())
    except TypeError as exc:
        raise TypeError(f"{exc} (arguments: {', '.join(arrays)})") from None


def check_dense_args(x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any) -> Any:
    """Checks of the dense-LRT family; returns the array module."""
    xp = xp_of(x=x, w_mean=w_mean, w_var=w_var, b=b, noise=noise)
    check_float("x", x, 2)
    check_float("w_mean", w_mean, 2)
    if x.shape[1] != w_mean.shape[0]:
        raise ValueError(
            f"x has {x.shape[1]} features but w_mean expects D_in = {w_mean.shape[0]} "
            f"(x {tuple(x.shape)}, w_mean {tuple(w_mean.shape)})"
        )
    if w_var is not None:
        check_float("w_var", w_var)
        check_shape("w_var", w_var, w_mean.shape, "same as w_mean")
    if b is not None:
        check_float("b", b)
        check_shape("b", b, (w_mean.shape[1],), "(D_out,)")
    if noise is not None:
        check_float("noise", noise)
    check_same_dtype(x=x, w_mean=w_mean, w_var=w_var, b=b, noise=noise)
    return xp


def check_broadcasts_to(name: str, a: Any, shape: tuple, target: str) -> None:
    """``a`` must broadcast to ``shape`` (the shape of ``target``) without enlarging it."""
    try:
        ok = tuple(np.broadcast_shapes(tuple(a.shape), tuple(shape))) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} {tuple(a.shape)} must broadcast to {target}'s shape {tuple(shape)}"
        )
