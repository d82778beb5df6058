"""Fused CuPy kernels for the elementwise passes that dominate a GPU step.

On a GPU every NumPy-style expression is one kernel launch, and a layer step made of thirty
small launches is bound by launch overhead, not by arithmetic. Each kernel below fuses one
chain of the plain code into one launch; the plain code stays the reference (it is what runs
on NumPy, and with ``FUSE = False`` on CuPy) and the tests compare the two.

:func:`kernel` returns the compiled ``cupy.ElementwiseKernel`` for CuPy arrays, or ``None`` for
NumPy arrays (the caller then runs its plain path). CuPy is imported only when a CuPy array
is seen, so importing minivd never imports CuPy.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .backend import is_cupy_array
from .kl import K15_COEFFS

__all__ = ["kernel", "FUSE"]

FUSE = True
"""Use the fused kernels on CuPy (tests set it to False to run the plain path on CuPy)."""

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


def kernel(name: str, like: Any) -> Any:
    """The fused kernel ``name`` if ``like`` is a CuPy array (and fusing is on), else None."""
    if not FUSE or not is_cupy_array(like):
        return None
    return _compile(name)
