"""Multiplicative noise on activations: Bernoulli dropout and Gaussian dropout ``x·(1 + √α·ε)``.

The noise is an argument (uniforms ``u`` for Bernoulli, standard normals ``eps`` for Gaussian),
so the ops are pure and their gradients can be checked with the noise held fixed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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
    "bernoulli_dropout_forward",
    "bernoulli_dropout_backward",
    "gaussian_dropout_forward",
    "gaussian_dropout_backward",
]


class BernoulliCache(NamedTuple):
    scaled_mask: Any


class GaussianCache(NamedTuple):
    x: Any
    eps: Any
    sqrt_alpha: Any
    mult: Any
    log_alpha_shape: tuple


def bernoulli_dropout_forward(x: Any, p_drop: float, u: Any) -> tuple[Any, BernoulliCache]:
    """Inverted dropout: zero each unit with probability ``p_drop``, scale the rest by 1/(1−p).

    Parameters
    ----------
    x : array, any shape
    p_drop : float in [0, 1)
        Probability of *dropping* a unit.
    u : array, same shape as ``x``
        Uniform[0, 1) draws; a unit is kept where ``u >= p_drop``.
    """
    xp_of(x=x, u=u)
    check_float("x", x)
    check_float("u", u)
    check_shape("u", u, x.shape, "same as x")
    if not 0.0 <= float(p_drop) < 1.0:
        raise ValueError(f"p_drop must lie in [0, 1), got {p_drop}")
    scaled_mask = (u >= p_drop).astype(x.dtype)
    scaled_mask *= x.dtype.type(1.0 / (1.0 - p_drop))
    return x * scaled_mask, BernoulliCache(scaled_mask)


def bernoulli_dropout_backward(dout: Any, cache: BernoulliCache) -> Any:
    r"""Gradient of inverted dropout.

    Notes
    -----
    Forward: :math:`y = x\,m/(1-p)` with the mask :math:`m\in\{0,1\}` fixed.

    1. :math:`\partial y/\partial x = m/(1-p)`: ``dx = dout * scaled_mask``.
    """
    check_upstream("dout", dout, cache.scaled_mask.shape, "same as x", like=cache.scaled_mask)
    return dout * cache.scaled_mask  # step 1


def gaussian_dropout_forward(x: Any, log_alpha: Any, eps: Any) -> tuple[Any, GaussianCache]:
    r"""Gaussian dropout: ``out = x · (1 + sqrt(α) · eps)`` with ``α = exp(log_alpha)``.

    The multiplier has mean 1 and **variance** α (α = p/(1−p) matches Bernoulli dropout with
    drop probability p), so there is no rescaling at test time.

    Parameters
    ----------
    x : array (N, ...)
    log_alpha : array broadcastable to ``x``
        ``(D,)`` per unit of a dense input, ``(C, 1, 1)`` per channel of a conv input, ``()`` or
        ``(1,)`` per layer.
    eps : array of ``x``'s rank and batch size, broadcastable to ``x``
        Standard normals: ``x.shape`` (independent per unit) or e.g. ``(N, C, 1, 1)`` (one value
        per example and channel, shared over positions). Noise without its own value for each
        example (``(1, D)``, ``(D,)``) is refused: it would share one draw across the
        minibatch, the single-sample estimator.
    """
    xp = xp_of(x=x, log_alpha=log_alpha, eps=eps)
    check_float("x", x)
    check_float("log_alpha", log_alpha)
    check_float("eps", eps)
    check_same_dtype(x=x, log_alpha=log_alpha, eps=eps)
    check_broadcasts_to("log_alpha", log_alpha, x.shape, "x")
    check_broadcasts_to("eps", eps, x.shape, "x")
    if eps.ndim != x.ndim or (x.ndim and eps.shape[0] != x.shape[0]):
        raise ValueError(f"eps {tuple(eps.shape)} must have x's rank and batch size (x "
                         f"{tuple(x.shape)}): one noise value per example at least")
    sqrt_alpha = xp.exp(0.5 * log_alpha)
    mult = sqrt_alpha * eps
    mult += 1
    return x * mult, GaussianCache(x, eps, sqrt_alpha, mult, tuple(log_alpha.shape))


def gaussian_dropout_backward(dout: Any, cache: GaussianCache) -> tuple[Any, Any]:
    r"""Gradients of Gaussian dropout with respect to ``x`` and ``log_alpha``.

    Returns
    -------
    dx : array, shape of ``x``
    dlog_alpha : array, shape of ``log_alpha``

    Notes
    -----
    Forward: :math:`y = x\,(1 + \sqrt{\alpha}\,\varepsilon)`,
    :math:`\sqrt{\alpha} = e^{\frac12\log\alpha}`.

    1. :math:`\partial y/\partial x = 1 + \sqrt\alpha\,\varepsilon`: ``dx = dout * mult``.
    2. :math:`\partial y/\partial\log\alpha = x\,\varepsilon\,\partial\sqrt\alpha/\partial\log\alpha
       = \tfrac12\sqrt\alpha\,x\,\varepsilon`.
    3. ``log_alpha`` was broadcast over the batch (and over units or positions when shared), so
       its gradient sums ``dout · ½√α · x · ε`` over every broadcast axis.
    """
    x, eps, sqrt_alpha, mult, la_shape = cache
    check_upstream("dout", dout, x.shape, "same as x", like=x)
    dx = dout * mult  # step 1
    g = dout * x  # step 2
    g *= eps
    dlog_alpha = sum_to_shape(g, la_shape) * (0.5 * sqrt_alpha)  # step 3 (sum, then scale)
    return dx, dlog_alpha.reshape(la_shape)
