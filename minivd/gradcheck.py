"""Finite-difference checks of hand-derived backward passes.

A backward pass computes a vector-Jacobian product (VJP): for ``out = f(*args)`` and an upstream
gradient ``dout`` it returns ``∂⟨dout, f(args)⟩/∂arg`` for each argument. :func:`numerical_vjp`
computes the same by central differences in float64; :func:`check_vjp` compares the two with
:func:`rel_error` for a random ``dout`` drawn from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backend import to_numpy
from .functional._checks import is_real

__all__ = ["rel_error", "numerical_vjp", "check_vjp"]


def rel_error(a: Any, b: Any) -> float:
    """``max|a − b| / max(|a| + |b|)`` over the whole array (0 when both are all zero; NaN
    when either holds NaN, so a check against a tolerance fails)."""
    a, b = np.asarray(to_numpy(a)), np.asarray(to_numpy(b))
    for name, v in (("a", a), ("b", b)):
        if v.dtype.kind not in "biuf":
            raise TypeError(f"rel_error: {name} must be real numbers, got dtype {v.dtype}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    den = float(np.max(np.abs(a) + np.abs(b))) if a.size else 0.0
    if den == 0.0:
        return 0.0
    return float(np.max(np.abs(a - b))) / den


def _outputs(f: Callable[..., Any], args: list) -> list[np.ndarray]:
    out = f(*args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [np.asarray(to_numpy(o), dtype=np.float64) for o in outs]


def numerical_vjp(
    f: Callable[..., Any],
    args: Sequence[Any],
    douts: Any,
    wrt: Sequence[int] | None = None,
    h: float = 1e-6,
) -> list[np.ndarray]:
    """Central-difference VJP of ``f`` at ``args``.

    Parameters
    ----------
    f : callable
        ``f(*args)`` returns an array or a tuple of arrays.
    args : sequence of arrays
        The point; arrays listed in ``wrt`` must be float64.
    douts : array or sequence of arrays
        The upstream gradient(s), one per output of ``f``.
    wrt : sequence of int, optional
        Positions of the arguments to differentiate (default: every array argument).
    h : float
        Step of the central difference.

    Returns
    -------
    list of ndarray
        ``∂⟨douts, f(args)⟩/∂args[i]`` for each ``i`` in ``wrt`` (NumPy, float64).
    """
    args = list(args)
    douts = [np.asarray(to_numpy(d), dtype=np.float64)
             for d in (douts if isinstance(douts, (tuple, list)) else (douts,))]
    if not (is_real(h) and np.isfinite(h) and h > 0):
        raise ValueError(f"numerical_vjp: h must be a finite step > 0, got {h!r}")
    outs = _outputs(f, args)  # the douts must match the outputs one to one, shape for shape
    if [o.shape for o in outs] != [d.shape for d in douts]:
        raise ValueError(f"numerical_vjp: douts have shapes {[d.shape for d in douts]} but f's "
                         f"outputs {[o.shape for o in outs]}")
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if hasattr(a, "shape")]
    grads = []
    for i in wrt:
        if not (isinstance(i, (int, np.integer)) and -len(args) <= i < len(args)):
            raise ValueError(f"numerical_vjp: wrt holds {i!r}, not the index of one of the "
                             f"{len(args)} arguments")
        x = args[i]
        if not hasattr(x, "dtype") or x.dtype != np.float64:
            got = getattr(x, "dtype", type(x).__name__)
            raise TypeError(f"numerical_vjp: argument {i} must be a float64 array, got {got}")
        flat_grad = np.zeros(x.size)
        base = x.copy()
        for k in range(x.size):
            for sign in (1.0, -1.0):
                xk = base.copy()
                xk.reshape(-1)[k] += sign * h
                args[i] = xk
                val = sum(float(np.sum(o * d)) for o, d in zip(_outputs(f, args), douts))
                flat_grad[k] += sign * val
            flat_grad[k] /= 2.0 * h
        args[i] = base
        grads.append(flat_grad.reshape(x.shape))
    return grads


def check_vjp(
    f: Callable[..., Any],
    vjp: Callable[..., Sequence[Any]],
    args: Sequence[Any],
    wrt: Sequence[int] | None = None,
    seed: int = 0,
    h: float = 1e-6,
) -> list[float]:
    """Compare an analytic VJP with central differences at a random ``dout``.

    Parameters
    ----------
    f : callable
        ``f(*args)`` returns an array or a tuple of arrays.
    vjp : callable
        ``vjp(douts, *args)`` returns the analytic gradients for the arguments in ``wrt``, in
        order (``douts`` is one array, or a tuple when ``f`` returns a tuple).
    args, wrt, h
        As in :func:`numerical_vjp`.
    seed : int
        Seeds the standard-normal ``dout``, through its own stream (``default_rng([seed,
        1])``): a test that draws its inputs from ``default_rng(seed)`` and passes the same
        seed must not get a ``dout`` equal to its first input (that weights each entry by
        itself, and hid a tiny input's finite-difference error in one test).

    Returns
    -------
    list of float
        :func:`rel_error` of each analytic gradient against its numerical one.
    """
    rng = np.random.default_rng([seed, 1])
    outs = f(*args)
    is_tuple = isinstance(outs, (tuple, list))
    outs_np = [to_numpy(o) for o in (outs if is_tuple else (outs,))]
    douts = [rng.standard_normal(o.shape) for o in outs_np]
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if hasattr(a, "shape")]
    analytic = vjp(tuple(douts) if is_tuple else douts[0], *args)
    numeric = numerical_vjp(f, args, douts, wrt=wrt, h=h)
    if len(analytic) != len(numeric):
        raise ValueError(f"vjp returned {len(analytic)} gradients for {len(numeric)} arguments")
    return [rel_error(a, n) for a, n in zip(analytic, numeric)]
