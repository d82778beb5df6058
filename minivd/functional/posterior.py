"""Parameter maps from what the optimiser learns to the posterior variance the LRT op takes.

* K15 (Kingma et al. 2015, eq. 10): learn ``(θ, log α)``; ``σ² = α θ²``. ``log α`` may be per
  weight ``(D_in, D_out)``, per output unit ``(1, D_out)`` or per layer ``(1, 1)`` (any shape
  that broadcasts to θ).
* M17 (Molchanov et al. 2017, additive reparameterization): learn ``(θ, log σ²)``;
  ``σ² = exp(log σ²)`` and ``log α = log σ² − log(θ² + 1e-8)`` (used by the KL and the sparsity
  mask). The noise no longer flows into θ's gradient through σ, which lowers its variance.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._fused import kernel
from .._rowwise import rowwise
from ..backend import get_xp
from ._broadcast import sum_to_shape
from ._checks import (
    check_broadcasts_to,
    check_float,
    check_same_dtype,
    check_shape,
    check_upstream,
    xp_of,
)

__all__ = [
    "THETA_EPS",
    "k15_variance_forward",
    "k15_variance_backward",
    "m17_variance_forward",
    "m17_variance_backward",
]

THETA_EPS = 1e-8
"""Added to θ² inside ``log α = log σ² − log(θ² + THETA_EPS)`` (M17), so θ = 0 is finite."""


class K15Cache(NamedTuple):
    theta: Any
    alpha: Any
    var: Any
    log_alpha_shape: tuple


class M17Cache(NamedTuple):
    theta: Any
    theta2_eps: Any
    var: Any


def k15_variance_forward(theta: Any, log_alpha: Any) -> tuple[Any, K15Cache]:
    """``var = exp(log_alpha) * theta**2`` (``log_alpha`` broadcast to ``theta``)."""
    xp_of(theta=theta, log_alpha=log_alpha)
    check_float("theta", theta)
    check_float("log_alpha", log_alpha)
    check_same_dtype(theta=theta, log_alpha=log_alpha)
    check_broadcasts_to("log_alpha", log_alpha, theta.shape, "theta")
    fused = kernel("k15_forward", theta)
    if fused is not None:  # CuPy: one launch
        alpha, var = fused(theta, log_alpha)
    elif log_alpha.shape == theta.shape:  # per weight: fused over cache-sized row blocks
        alpha, var = rowwise(k15_forward_kernel, theta, log_alpha, out=2)
    else:
        alpha, var = k15_forward_kernel(theta, log_alpha)
    return var, K15Cache(theta, alpha, var, tuple(log_alpha.shape))


def k15_forward_kernel(theta: Any, log_alpha: Any, out: tuple | None = None) -> tuple[Any, Any]:
    """``(α, σ²)`` with ``α = exp(log α)``, ``σ² = αθ²``, written into ``out`` if given."""
    xp = get_xp(theta, log_alpha)
    alpha, var = out if out is not None else (None, None)
    alpha = xp.exp(log_alpha, out=alpha)
    var = xp.square(theta, out=var)
    var *= alpha
    return alpha, var


def k15_variance_backward(dvar: Any, cache: K15Cache) -> tuple[Any, Any]:
    r"""Gradients of the K15 map with respect to ``theta`` and ``log_alpha``.

    Returns
    -------
    dtheta : array, shape of ``theta``
    dlog_alpha : array, shape of ``log_alpha``

    Notes
    -----
    Forward: :math:`\sigma^2 = e^{\log\alpha}\,\theta^2`.

    1. :math:`\partial\sigma^2/\partial\theta = 2\alpha\theta`: ``dtheta = dvar * 2 α θ``.
    2. :math:`\partial\sigma^2/\partial\log\alpha = \alpha\theta^2 = \sigma^2`:
       ``dlog_alpha = dvar * var``, summed over the axes ``log_alpha`` was broadcast along.
    """
    theta, alpha, var, la_shape = cache
    check_upstream("dvar", dvar, theta.shape, "same as theta", like=theta)
    if la_shape == tuple(theta.shape):
        return rowwise(k15_backward_kernel, dvar, theta, alpha, var, out=2)
    dtheta, dlog_alpha = k15_backward_kernel(dvar, theta, alpha, var)
    return dtheta, sum_to_shape(dlog_alpha, la_shape)  # step 2, broadcast α


def k15_backward_kernel(dvar: Any, theta: Any, alpha: Any, var: Any,
                        out: tuple | None = None) -> tuple[Any, Any]:
    """Steps 1–2 of :func:`k15_variance_backward` elementwise, written into ``out`` if given."""
    xp = get_xp(dvar, theta)
    dtheta, dlog_alpha = out if out is not None else (None, None)
    dtheta = xp.multiply(dvar, theta, out=dtheta)  # step 1
    dtheta *= alpha
    dtheta *= 2
    dlog_alpha = xp.multiply(dvar, var, out=dlog_alpha)  # step 2
    return dtheta, dlog_alpha


def m17_variance_forward(theta: Any, log_sigma2: Any) -> tuple[tuple[Any, Any], M17Cache]:
    """``var = exp(log_sigma2)`` and ``log_alpha = log_sigma2 − log(theta² + 1e-8)``.

    Returns
    -------
    (var, log_alpha) : arrays, shape of ``theta``
    cache : M17Cache
    """
    xp = xp_of(theta=theta, log_sigma2=log_sigma2)
    check_float("theta", theta)
    check_float("log_sigma2", log_sigma2)
    check_same_dtype(theta=theta, log_sigma2=log_sigma2)
    check_shape("log_sigma2", log_sigma2, theta.shape, "same as theta (one σ² per weight)")
    var = xp.exp(log_sigma2)
    theta2_eps = theta * theta
    theta2_eps += THETA_EPS
    log_alpha = log_sigma2 - xp.log(theta2_eps)
    return (var, log_alpha), M17Cache(theta, theta2_eps, var)


def m17_variance_backward(dvar: Any, dlog_alpha: Any, cache: M17Cache) -> tuple[Any, Any]:
    r"""Gradients of the M17 map with respect to ``theta`` and ``log_sigma2``.

    Parameters
    ----------
    dvar, dlog_alpha : arrays, shape of ``theta``, or None (no gradient on that output)
    cache : M17Cache
        From :func:`m17_variance_forward`: ``theta``, ``theta² + 1e-8`` and ``σ²``.

    Returns
    -------
    dtheta, dlog_sigma2 : arrays, shape of ``theta``

    Notes
    -----
    Forward: :math:`\sigma^2 = e^{\log\sigma^2}`,
    :math:`\log\alpha = \log\sigma^2 - \log(\theta^2 + 10^{-8})`.

    1. :math:`\partial\sigma^2/\partial\log\sigma^2 = \sigma^2`, and
       :math:`\partial\sigma^2/\partial\theta = 0` (additive reparameterization).
    2. :math:`\partial\log\alpha/\partial\log\sigma^2 = 1`.
    3. :math:`\partial\log\alpha/\partial\theta = -2\theta/(\theta^2 + 10^{-8})`.
    """
    theta, theta2_eps, var = cache
    xp = xp_of(theta=theta, dvar=dvar, dlog_alpha=dlog_alpha)
    dlog_sigma2 = xp.zeros_like(theta)
    dtheta = xp.zeros_like(theta)
    if dvar is not None:
        check_upstream("dvar", dvar, theta.shape, "same as theta", like=theta)
        dlog_sigma2 += dvar * var  # step 1
    if dlog_alpha is not None:
        check_upstream("dlog_alpha", dlog_alpha, theta.shape, "same as theta", like=theta)
        dlog_sigma2 += dlog_alpha  # step 2
        dtheta -= 2 * dlog_alpha * theta / theta2_eps  # step 3
    return dtheta, dlog_sigma2
