"""Fused elementwise steps: one CuPy kernel launch, or one blocked multi-threaded NumPy pass.

On a GPU every NumPy-style expression is one kernel launch, and a layer step made of thirty
small launches is bound by launch overhead, not by arithmetic; on a CPU every expression is one
single-threaded trip through memory. Each entry below fuses one chain of the plain code: as a
``cupy.ElementwiseKernel``, and for the activation-sized LRT steps also as a NumPy function
that runs the chain over cache-sized row blocks on all cores (:mod:`minivd._rowwise`). The
plain code next to each call stays the reference: it runs with ``FUSE = False``, and the tests
compare the two.

:func:`kernel` returns the fused callable for the array's backend, or ``None`` when there is
none (the caller then runs its plain path). CuPy is imported only when a CuPy array is seen,
so importing minivd never imports CuPy.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from ._rowwise import rowwise
from .backend import is_cupy_array
from .kl import K15_COEFFS

__all__ = ["kernel", "FUSE"]

FUSE = True
"""Use the fused steps (tests set it to False to run the plain path)."""

_C1, _C2, _C3 = K15_COEFFS

# name: (input params, output params, body). ``T`` is the floating type of the arrays.
_SPECS: dict[str, tuple[str, str, str]] = {
    # K15 map (posterior.py): α = exp(log α), σ² = α θ²
    "k15_forward": ("T theta, T log_alpha", "T alpha, T var",
                    "alpha = exp(log_alpha); var = alpha * theta * theta;"),
    # its backward plus θ's mean path (weight_posterior.py)
    "k15_backward_plus_mean": (
        "T dvar, T dw_mean, T theta, T alpha, T var", "T dtheta, T dlog_alpha",
        "dtheta = (T)2 * dvar * alpha * theta + dw_mean; dlog_alpha = dvar * var;"),
    # g += c · ∂KL_K15/∂log α, 0 above the bound log α = 0 (kl.py)
    "k15_kl_grad_add": (
        "T log_alpha, T c", "T g",
        "T a = exp(min(log_alpha, (T)0));"
        f" T d = (T)-0.5 - a * ((T){_C1!r} + a * ((T){2 * _C2!r} + (T){3 * _C3!r} * a));"
        " if (log_alpha <= (T)0) g += c * d;"),
    # LRT forward (dense.py): s = sqrt(δ + eps), out = γ + s ζ
    "lrt_out": ("T gamma, T delta, T noise, T eps", "T out, T s",
                "s = sqrt(delta + eps); out = gamma + s * noise;"),
    # LRT backward: ∂L/∂δ = G ζ / (2 s)
    "lrt_ddelta": ("T dout, T noise, T s", "T ddelta", "ddelta = (T)0.5 * dout * noise / s;"),
    # LRT backward: dx = dx_mean + 2 x t
    "lrt_dx": ("T dx_mean, T x, T t", "T dx", "dx = dx_mean + (T)2 * x * t;"),
    # Adam (optim.py), bias corrections folded into step and eps
    "adam": ("T g, T b1, T b2, T step, T eps", "T p, T m, T v",
             "m = b1 * m + ((T)1 - b1) * g; v = b2 * v + ((T)1 - b2) * g * g;"
             " p -= step * m / (sqrt(v) + eps);"),
}


@cache
def _compile(name: str) -> Any:
    import cupy

    params_in, params_out, body = _SPECS[name]
    return cupy.ElementwiseKernel(params_in, params_out, body, f"minivd_{name}")


# NumPy versions, same call signature as the CuPy kernels (inputs, then outputs to write).
def _np_lrt_out(gamma: Any, delta: Any, noise: Any, eps: float, out: Any, s: Any) -> None:
    def block(g: Any, d: Any, n: Any, out: tuple) -> None:
        o, sb = out
        np.add(d, eps, out=sb)
        np.sqrt(sb, out=sb)
        t = sb * n
        np.add(g, t, out=o)

    rowwise(block, gamma, delta, noise, out=(out, s))


def _np_lrt_ddelta(dout: Any, noise: Any, s: Any) -> Any:
    def block(d: Any, n: Any, sb: Any, out: tuple) -> None:
        o = np.multiply(d, n, out=None if out is None else out[0])
        o /= sb
        o *= 0.5
        return o

    return rowwise(block, dout, noise, s, out=1)


def _np_lrt_dx(dx_mean: Any, x: Any, t: Any, dx: Any) -> None:
    def block(dm: Any, xb: Any, tb: Any, out: tuple) -> None:
        tmp = xb * tb
        tmp *= 2
        np.add(dm, tmp, out=out[0])

    rowwise(block, dx_mean, x, t, out=(dx,))


_NUMPY = {"lrt_out": _np_lrt_out, "lrt_ddelta": _np_lrt_ddelta, "lrt_dx": _np_lrt_dx}


def kernel(name: str, like: Any) -> Any:
    """The fused step ``name`` for ``like``'s backend (CuPy kernel, or a NumPy blocked
    function where there is one), or None (fusing off, or no fused version)."""
    if not FUSE:
        return None
    if is_cupy_array(like):
        return _compile(name)
    return _NUMPY.get(name)
