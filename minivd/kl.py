r"""KL divergence approximations for the log-uniform prior, as functions of ``log α``.

Sign convention (one for the whole library): these functions return **KL(q‖p) ≥ 0**, elementwise,
and the training loss **adds** it: ``loss = mean CE + β · Σ KL / N``. Their derivatives are
``∂KL/∂log α``. The true KL against the improper log-uniform prior is defined up to a
constant, fixed so that it tends to 0 as α → ∞ (see the test of quadrature): M17 tends to 0
there, and K15's constant is fitted to that true KL on α ≤ 1, the only range where K15 is used
(beyond it :func:`kl_k15` stays at its value at α = 1, 0.415).

K15 (Kingma et al. 2015, eq. 18 and appendix C), valid for α ≤ 1:

.. math:: \mathrm{KL} \approx -\big(C + \tfrac12\log\alpha + c_1\alpha + c_2\alpha^2
          + c_3\alpha^3\big), \quad C = -0.661

M17 (Molchanov et al. 2017, eq. 14), valid for every α:

.. math:: \mathrm{KL} \approx k_1 - k_1\,\mathrm{sigmoid}(k_2 + k_3\log\alpha)
          + \tfrac12\log(1 + \alpha^{-1})

computed as :math:`k_1\,\mathrm{sigmoid}(-(k_2 + k_3\log\alpha))`, and its derivative's
:math:`s(1-s)` as :math:`\mathrm{sigmoid}(u)\,\mathrm{sigmoid}(-u)`: the difference from 1
would cancel for large α (in float32 every digit of it is gone by :math:`\log\alpha \approx 10`).

**Bounds and dead zones.** K15's polynomial diverges above α = 1 (at α = 7.4 it gives KL ≈ −164,
an impossible negative KL), and K15 trains with the constraint α ≤ 1. We enforce it by
*projection*: layers that learn ``log α`` with the K15 KL clip the parameter into ``log α ≤ 0``
after each optimiser step (``project()``), so it never sits beyond the bound. Inside
:func:`kl_k15` the input is clipped to the bound too (for fixed-α callers), and the derivative
at the bound itself is the polynomial's one-sided derivative (−0.416, not 0): ``vd-b``'s hidden
layers start at α = 1 exactly (p = 0.5; the input layer at α = 0.25, p = 0.2), and there the
data term and the KL both still move ``log α``, so a parameter on the bound can always come
back. A gradient that would push it past the bound is undone by the projection, never by a zero
gradient.

M17 needs no clip at all: written with ``softplus(−log α) = log(1 + 1/α)`` it is finite with a
finite derivative for every ``log α`` (we checked ``±20`` and beyond). M17's authors clip
``log α`` to [−8, 8]; a clip would give zero gradient outside, a dead zone, so we leave it out
(the KL differs from the clipped one by < 3e-4 above 8 and grows as −½ log α below −8, which is
the true KL's behaviour).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._rowwise import rowwise
from .backend import get_xp
from .functional._checks import check_float

__all__ = [
    "K15_C",
    "K15_COEFFS",
    "K15_LOG_ALPHA_MAX",
    "M17_K",
    "kl_k15",
    "kl_k15_grad",
    "kl_m17",
    "kl_m17_grad",
    "kl_m17_grad_kernel",
]

K15_C = -0.661
"""Pinned constant of the K15 polynomial (minimax fit on α ∈ [e⁻⁴, 1], max error 0.0145)."""
K15_COEFFS = (1.16145124, -1.50204118, 0.58629921)
K15_LOG_ALPHA_MAX = 0.0
"""K15 is valid for α ≤ 1: the upper bound of ``log α``."""
M17_K = (0.63576, 1.87320, 1.48695)


def _log_alpha(log_alpha: Any) -> Any:
    """A float32/float64 array (a Python float or any int becomes a float64 0-d array)."""
    if isinstance(log_alpha, (float, int, np.integer)) and not isinstance(log_alpha, bool):
        log_alpha = np.asarray(log_alpha, dtype=np.float64)
    check_float("log_alpha", log_alpha)
    return log_alpha


def kl_k15(log_alpha: Any) -> Any:
    """Elementwise K15 KL (≥ 0 on its range) at ``min(log_alpha, 0)``."""
    return rowwise(_kl_k15, _log_alpha(log_alpha), out=1)


def _kl_k15(log_alpha: Any, out: tuple | None = None) -> Any:
    xp = get_xp(log_alpha)
    la = xp.minimum(log_alpha, K15_LOG_ALPHA_MAX)
    a = xp.exp(la)
    c1, c2, c3 = K15_COEFFS
    kl = xp.multiply(-c3, a, out=None if out is None else out[0])
    # step by step: kl = −C − ½ la − a·(c1 + a·(c2 + c3 a))
    kl -= c2
    kl *= a
    kl -= c1
    kl *= a
    kl -= 0.5 * la
    kl -= K15_C
    return kl


def kl_k15_grad(log_alpha: Any, alpha: Any = None) -> Any:
    r"""``∂ kl_k15 / ∂ log α``: :math:`-\tfrac12 - \alpha(c_1 + 2c_2\alpha + 3c_3\alpha^2)`.

    Evaluated at ``min(log_alpha, 0)``: at the bound it is the one-sided derivative; above it
    (only reachable when the caller skips the projection) the clipped KL is flat and its true
    derivative is 0, which we return. ``alpha``, if given, is ``exp(log_alpha)`` already
    computed (its entries above the bound are ignored, as they are masked).
    """
    log_alpha = _log_alpha(log_alpha)
    if log_alpha.ndim == 0:  # the in-place mask below needs an array
        return kl_k15_grad(log_alpha.reshape(1), None if alpha is None else alpha.reshape(1))[0]
    return rowwise(kl_k15_grad_kernel, log_alpha, alpha, out=1)


def kl_k15_grad_kernel(log_alpha: Any, alpha: Any = None, out: tuple | None = None,
                       scale: float = 1.0) -> Any:
    """``scale ·`` :func:`kl_k15_grad` elementwise on an array of rank ≥ 1, written into
    ``out`` if given (``scale`` is folded into the coefficients: no extra pass)."""
    xp = get_xp(log_alpha, alpha)
    a = xp.exp(xp.minimum(log_alpha, K15_LOG_ALPHA_MAX)) if alpha is None else alpha
    c1, c2, c3 = (scale * c for c in K15_COEFFS)
    g = xp.multiply(-3 * c3, a, out=None if out is None else out[0])
    # step by step: g = scale · (−0.5 − a·(c1 + a·(2 c2 + 3 c3 a)))
    g -= 2 * c2
    g *= a
    g -= c1
    g *= a
    g -= 0.5 * scale
    above = log_alpha > K15_LOG_ALPHA_MAX  # the clipped KL is flat there
    if xp is not np:
        xp.copyto(g, 0, where=above)  # a boolean-mask write would sync with the host on CuPy
    elif above.any():  # rare after the projection: skip the masked write (faster on NumPy)
        g[above] = 0
    return g


def _sigmoid(xp: Any, z: Any, negate: bool = False) -> Any:
    """``sigmoid(z)`` (``sigmoid(−z)`` with ``negate``) as ``1 / (1 + exp(−z))``.

    Accurate in both tails: for large ``z`` the exp is tiny; for very negative ``z`` it
    overflows to inf (beyond −88 in float32) and ``1/(1 + inf) = 0`` is the right limit, so
    that warning is silenced. No ``where``: NumPy's three-array ``where`` alone cost
    several times this whole function here (4–7 ns per element against 1.5)."""
    with np.errstate(over="ignore"):
        e = xp.exp(z) if negate else xp.exp(-z)
    return 1 / (e + 1)


def _softplus(xp: Any, z: Any) -> Any:
    """``log(1 + exp(z))`` as ``max(z, 0) + log1p(exp(−|z|))``: no overflow for any ``z``
    (NumPy's ``logaddexp`` computes the same at 30 ns per element here)."""
    return xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))


def kl_m17(log_alpha: Any) -> Any:
    """Elementwise M17 KL (≥ 0), finite for every ``log_alpha``."""
    return rowwise(_kl_m17, _log_alpha(log_alpha), out=1)


def _kl_m17(log_alpha: Any, out: tuple | None = None) -> Any:
    xp = get_xp(log_alpha)
    k1, k2, k3 = M17_K
    if out is not None:
        out[0][...] = _kl_m17(log_alpha)
        return out[0]
    # k1 − k1·sigmoid(u) written as k1·sigmoid(−u): no cancellation when sigmoid(u) → 1
    with np.errstate(over="ignore"):  # k3·log α beyond float32's range: inf, the right limit
        u = k2 + k3 * log_alpha
    return k1 * _sigmoid(xp, u, negate=True) + 0.5 * _softplus(xp, -log_alpha)


def kl_m17_grad(log_alpha: Any) -> Any:
    r"""``∂ kl_m17 / ∂ log α``: :math:`-k_1k_3\,s(1-s) - \tfrac12\,\mathrm{sigmoid}(-\log\alpha)`,
    :math:`s = \mathrm{sigmoid}(k_2 + k_3\log\alpha)`."""
    return rowwise(_kl_m17_grad, _log_alpha(log_alpha), out=1)


def kl_m17_grad_kernel(log_alpha: Any, scale: float = 1.0) -> Any:
    """``scale ·`` :func:`kl_m17_grad` elementwise in one call (no blocks: for a caller that
    already works on a block)."""
    g = _kl_m17_grad(log_alpha)
    g *= scale
    return g


def _kl_m17_grad(log_alpha: Any, out: tuple | None = None) -> Any:
    xp = get_xp(log_alpha)
    k1, k2, k3 = M17_K
    if out is not None:
        out[0][...] = _kl_m17_grad(log_alpha)
        return out[0]
    # s(1 − s) = sigmoid(u)·sigmoid(−u) = 1/(1 + e) · 1/(1 + 1/e), e = exp(−u): no 1 − s,
    # which cancels when s → 1 (float32: every digit gone by log α ≈ 10, where this term is
    # still 0.2% of the gradient). e = 0 or inf give the right limit 0, so warnings are off.
    # (No out= arguments: a 0-d input makes NumPy scalars here.)
    with np.errstate(over="ignore", divide="ignore"):
        e = xp.exp(-(k2 + k3 * log_alpha))
        g = e + 1
        g *= 1 / e + 1
        g = 1 / g
    g *= -(k1 * k3)
    g -= 0.5 * _sigmoid(xp, log_alpha, negate=True)
    return g
