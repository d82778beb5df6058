"""Argument checks shared by the functional ops: clear errors that name the argument."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..backend import get_xp

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(name: str, a: Any) -> None:
    """``a`` must be a NumPy or CuPy array."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}")


def check_float(name: str, a: Any, ndim: int | None = None) -> None:
    """``a`` must be a float32 or float64 NumPy/CuPy array (of rank ``ndim`` when given).

    float16 is refused: the ``1e-8`` under the LRT square roots (and ``θ² + 1e-8``) round to 0
    in it, which turns a zero input into a division by zero; the noise samplers draw float32
    or float64 only.
    """
    check_array(name, a)
    if a.dtype not in FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")


def check_shape(name: str, a: Any, shape: tuple, what: str = "") -> None:
    """``a`` must be an array of shape ``shape``."""
    check_array(name, a)
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


def check_upstream(name: str, a: Any, shape: tuple, what: str, like: Any = None) -> None:
    """An upstream gradient: a float array of ``shape``, of ``like``'s dtype when given (the
    dtype the forward ran in, so a gradient never silently changes precision)."""
    check_float(name, a)
    check_shape(name, a, shape, what)
    if like is not None and a.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but the forward ran in {like.dtype}; "
                        f"cast it to {like.dtype}")


def is_real(v: Any) -> bool:
    """A real number: a Python or NumPy int or float, or a 0-d real array; never a bool."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Real):
        return True
    return getattr(v, "shape", None) == () and getattr(getattr(v, "dtype", None), "kind",
                                                       "") in "iuf"


def check_eps(eps: Any, dtype: Any) -> Any:
    """``eps`` (added under a square root) must be a real number that is finite and > 0 *in
    ``dtype``* (1e-50 is 0 in float32); returned in ``dtype``, so a NumPy float64 scalar does
    not promote float32 arrays."""
    e = None
    if is_real(eps):
        with np.errstate(over="ignore"), np.errstate(under="ignore"):
            try:
                e = np.dtype(dtype).type(float(eps))
            except OverflowError:  # an int beyond float64
                e = None
    if e is None or not np.isfinite(e) or e <= 0:
        raise ValueError(f"eps must be a finite number > 0 in {np.dtype(dtype)} (it keeps "
                         f"sqrt(δ + eps) > 0), got {eps!r}")
    return e


def xp_of(**arrays: Any) -> Any:
    """``get_xp`` over named arrays; a mixed-backend error names them."""
    try:
        return get_xp(*arrays.values())
    except TypeError as exc:
        raise TypeError(f"{exc} (arguments: {', '.join(arrays)})") from None


def check_dense_args(x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any,
                     weight_noise: bool = True) -> Any:
    """Checks of the dense-LRT family (``w_var`` and ``noise`` required when
    ``weight_noise``); returns the array module."""
    if weight_noise:
        check_array("w_var", w_var)
        check_array("noise", noise)
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
