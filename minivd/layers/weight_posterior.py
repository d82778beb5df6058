"""The factorised Gaussian posterior over one weight tensor, shared by the variational layers.

:class:`WeightPosterior` owns the parameter entries (``theta``, then ``log_alpha`` for K15 or
``log_sigma2`` for M17) in the layer's ``params`` dict, maps them to the posterior variance
the LRT ops take, carries the map's gradients back, and holds the KL and its gradient. The
dense and the conv layer differ only in the op they call and the shape of ``log α``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .. import _fused
from .._fused import kernel
from .._rowwise import rowwise
from ..backend import get_xp
from ..functional import (
    k15_variance_backward,
    k15_variance_forward,
    m17_variance_backward,
    m17_variance_forward,
)
from ..functional._checks import is_real
from ..functional.posterior import K15Cache, M17Cache, k15_backward_kernel
from ..kl import (
    K15_LOG_ALPHA_MAX,
    kl_k15,
    kl_k15_grad_kernel,
    kl_m17,
    kl_m17_grad,
    kl_m17_grad_kernel,
)
from .base import Layer, check_kl_scale, need_grad, p_to_log_alpha, place

__all__ = ["WeightPosterior", "VariationalLayer", "SPARSE_LOG_ALPHA_THRESHOLD"]


def _k15_backward_plus_mean(dvar: Any, dw_mean: Any, theta: Any, alpha: Any, var: Any,
                            out: tuple | None = None) -> tuple[Any, Any]:
    """The K15 map's backward with θ's mean-path gradient added, in one blocked pass."""
    dtheta, dla = k15_backward_kernel(dvar, theta, alpha, var, out=out)
    dtheta += dw_mean
    return dtheta, dla


class M17Step(NamedTuple):
    """What a training forward keeps of the M17 map: its cache and the ``log α`` it computed
    (the KL gradient needs it; no second pass of logs)."""

    cache: M17Cache
    log_alpha: Any


SPARSE_LOG_ALPHA_THRESHOLD = 3.0
"""Sparse layers zero weights with ``log α ≥ 3`` (α ≈ 20, p ≈ 0.95) at evaluation."""


def alpha_shape(alpha_per: str, shapes: dict[str, tuple], sparse: bool) -> tuple:
    """The shape of ``log α`` that ``alpha_per`` names in ``shapes`` (the layer's kinds, the
    full weight shape under ``"weight"``); sparse (M17) layers learn it per weight only."""
    if alpha_per not in shapes:
        raise ValueError(f"alpha_per must be one of {tuple(shapes)}, got {alpha_per!r}")
    if sparse and alpha_per != "weight":
        raise ValueError("sparse=True (M17) learns log σ² per weight: it takes no shared "
                         f"alpha_per, got {alpha_per!r}")
    return shapes[alpha_per]


class WeightPosterior:
    """``q(w) = N(θ, σ²)``: K15 ``σ² = α θ²`` (learned or fixed ``log α`` of ``alpha_shape``)
    or, with ``sparse``, M17 ``σ² = exp(log σ²)`` per weight.

    Parameters
    ----------
    params : dict
        The layer's parameter dict; ``theta`` and ``log_alpha``/``log_sigma2`` are added to it.
    theta0 : ndarray
        Initial θ (host array; fixes the weight shape).
    alpha_shape : tuple
        Shape of ``log α`` (K15), broadcastable to θ: the full shape (per weight), or with ones
        where α is shared.
    p : float
        Initial dropout rate, ``α = p/(1−p)`` (K15).
    learn_alpha : bool
        False: Gaussian dropout with a fixed α (no ``log_alpha`` parameter, no KL).
    sparse : bool
        M17 parameterisation, ``log σ²`` initialised at ``log_sigma2_init``.
    log_sigma2_init : float
        Initial ``log σ²`` (M17 only; must be finite).
    backend, dtype
        Where and in which float type the parameters live.
    """

    def __init__(
        self,
        params: dict,
        theta0: np.ndarray,
        *,
        alpha_shape: tuple,
        p: float,
        learn_alpha: bool,
        sparse: bool,
        log_sigma2_init: float,
        backend: str,
        dtype: Any,
    ) -> None:
        self.params = params
        self.sparse = bool(sparse)
        if self.sparse and not learn_alpha:
            raise ValueError("sparse=True (M17) learns log σ² per weight: it takes no "
                             "learn_alpha=False")
        if self.sparse and not (is_real(log_sigma2_init) and math.isfinite(log_sigma2_init)):
            raise ValueError(f"log_sigma2_init must be a finite number, got {log_sigma2_init!r}")
        self.learn_alpha = bool(learn_alpha) or self.sparse
        params["theta"] = place(theta0, backend, dtype)
        if self.sparse:
            params["log_sigma2"] = place(np.full(theta0.shape, log_sigma2_init), backend, dtype)
            return
        la0 = p_to_log_alpha(p)
        if self.learn_alpha and la0 > K15_LOG_ALPHA_MAX:
            raise ValueError(f"the K15 KL is valid for α ≤ 1 (p ≤ 0.5); got p = {p}")
        la = place(np.full(alpha_shape, la0), backend, dtype)
        if self.learn_alpha:
            params["log_alpha"] = la
        else:
            self._fixed_log_alpha = la

    @property
    def log_alpha(self) -> Any:
        """``log α`` of every weight's posterior (broadcastable to θ)."""
        if self.sparse:
            (_, la), _ = m17_variance_forward(self.params["theta"], self.params["log_sigma2"])
            return la
        return self.params["log_alpha"] if self.learn_alpha else self._fixed_log_alpha

    def variance(self) -> tuple[Any, Any]:
        """``(σ², map_cache)`` at the current parameters."""
        theta = self.params["theta"]
        if self.sparse:
            (var, la), cache = m17_variance_forward(theta, self.params["log_sigma2"])
            return var, M17Step(cache, la)
        return k15_variance_forward(theta, self.log_alpha)

    def backward(self, dw_mean: Any, dw_var: Any, map_cache: Any, grads: dict,
                 kl_scale: float | None = None) -> None:
        """Write ``grads`` for the posterior parameters from the op's ``dw_mean``/``dw_var``.

        θ is the mean, so ``dθ = dw_mean`` plus, for K15 (σ² = αθ²), the path through σ².
        With ``kl_scale``, ``kl_scale · ∂KL/∂params`` is added too (what :meth:`kl_backward`
        adds): for a learned per-weight K15 ``log α`` and for M17, on NumPy, in the same
        blocked pass, which overwrites ``dw_mean`` and ``dw_var`` with the results (the op made
        them for us); otherwise, or with ``minivd._fused.FUSE = False``, as the two plain calls.
        """
        if kl_scale is not None:
            kl_scale = check_kl_scale(kl_scale)  # a float: NumPy's float64 would promote
            numpy = _fused.FUSE and isinstance(dw_var, np.ndarray)
            if (numpy and self.learn_alpha and not self.sparse
                    and isinstance(map_cache, K15Cache)
                    and map_cache.log_alpha_shape == tuple(dw_var.shape)):
                self._k15_backward_with_kl(dw_mean, dw_var, map_cache, grads, kl_scale)
            elif numpy and self.sparse and isinstance(map_cache, M17Step):
                self._m17_backward_with_kl(dw_mean, dw_var, map_cache, grads, kl_scale)
            else:
                self.backward(dw_mean, dw_var, map_cache, grads)
                self.kl_backward(kl_scale, grads, map_cache)
            return
        if self.sparse:
            cache = map_cache.cache if isinstance(map_cache, M17Step) else map_cache
            _, grads["log_sigma2"] = m17_variance_backward(dw_var, None, cache)
            grads["theta"] = dw_mean  # M17: σ² does not depend on θ
            return
        fused = kernel("k15_backward_plus_mean", dw_var)
        if fused is not None and map_cache.log_alpha_shape == tuple(dw_var.shape):
            dtheta, dla = fused(dw_var, dw_mean, map_cache.theta, map_cache.alpha, map_cache.var)
        elif map_cache.log_alpha_shape == tuple(dw_var.shape):  # per weight: one blocked pass
            dtheta, dla = rowwise(_k15_backward_plus_mean, dw_var, dw_mean, map_cache.theta,
                                  map_cache.alpha, map_cache.var, out=2)
        else:
            dtheta, dla = k15_variance_backward(dw_var, map_cache)
            dtheta += dw_mean
        grads["theta"] = dtheta
        if self.learn_alpha:
            grads["log_alpha"] = dla

    def _k15_backward_with_kl(self, dw_mean: Any, dw_var: Any, cache: K15Cache, grads: dict,
                              scale: float) -> None:
        """:meth:`backward` then :meth:`kl_backward` (per-weight K15, NumPy) in one blocked
        pass over the weights, in place: ``dw_mean`` becomes ``dθ``, ``dw_var`` ``d log α``.
        The same operations in the same order as the two separate calls, so the same bits."""
        c = scale * self._copies()

        def fn(dm: Any, dv: Any, theta: Any, alpha: Any, var: Any, la: Any,
               out: tuple | None = None) -> tuple[Any, Any]:
            # the map's backward (d log α = dvar·σ² written over dvar, after dθ is read off it)
            t, _ = k15_backward_kernel(dv, theta, alpha, var, out=(None, dv))
            dm += t  # dθ = dvar·2αθ + dw_mean
            dv += kl_k15_grad_kernel(la, alpha, scale=c)  # + c·∂KL/∂log α
            return dm, dv

        grads["theta"], grads["log_alpha"] = rowwise(
            fn, dw_mean, dw_var, cache.theta, cache.alpha, cache.var, self.params["log_alpha"],
            out=(dw_mean, dw_var))

    def _m17_backward_with_kl(self, dw_mean: Any, dw_var: Any, step: M17Step, grads: dict,
                              scale: float) -> None:
        """:meth:`backward` then :meth:`kl_backward` (M17, NumPy) in one blocked pass over the
        weights, in place: ``dw_mean`` becomes ``dθ``, ``dw_var`` ``d log σ²``. The operations
        of :func:`~minivd.functional.m17_variance_backward` in its order, so the same values
        as the two calls (up to the sign of a zero)."""

        def fn(dm: Any, dv: Any, theta: Any, t2e: Any, var: Any, la: Any,
               out: tuple | None = None) -> tuple[Any, Any]:
            dv *= var  # step 1: d log σ² = dvar·σ² (dθ gets nothing from σ²)
            k = kl_m17_grad_kernel(la, scale=scale)  # c·∂KL/∂log α
            dv += k  # step 2
            k *= 2
            k *= theta
            k /= t2e
            dm -= k  # step 3: dθ = dw_mean − 2c·∂KL/∂log α·θ/(θ² + 1e-8)
            return dm, dv

        c = step.cache
        grads["theta"], grads["log_sigma2"] = rowwise(
            fn, dw_mean, dw_var, c.theta, c.theta2_eps, c.var, step.log_alpha,
            out=(dw_mean, dw_var))

    def zero_grads(self, grads: dict) -> None:
        """Zero gradients for the variance parameters (a pass without noise)."""
        for k in ("log_alpha", "log_sigma2"):
            if k in self.params:
                grads[k] = get_xp(self.params[k]).zeros_like(self.params[k])

    def mean_weights(self) -> Any:
        """θ, with weights of ``log α ≥ 3`` zeroed for sparse posteriors."""
        theta = self.params["theta"]
        if not self.sparse:
            return theta
        return theta * (self.log_alpha < SPARSE_LOG_ALPHA_THRESHOLD)

    def _copies(self) -> int:
        return self.params["theta"].size // self.params["log_alpha"].size

    def kl(self) -> Any:
        """``Σ_weights KL(α)`` (a shared α counts once per weight it covers)."""
        if not self.learn_alpha:
            return 0.0
        if self.sparse:
            return rowwise(lambda la: kl_m17(la).sum(), self.log_alpha)
        return rowwise(lambda la: kl_k15(la).sum(), self.params["log_alpha"]) * self._copies()

    def kl_backward(self, scale: float, grads: dict, map_cache: Any = None) -> None:
        """Add ``scale · ∂KL/∂params`` into ``grads``.

        ``map_cache`` (from this step's training forward) lets K15 reuse ``α = exp(log α)``
        and M17 its ``log α``: like the data gradient, the KL gradient is then taken at the
        forward pass's parameters (call it before the optimiser step, as training does).
        """
        scale = check_kl_scale(scale)
        if not self.learn_alpha:
            return
        if self.sparse:
            need_grad(grads, "theta", "the sparse layer")
            need_grad(grads, "log_sigma2", "the sparse layer")
            if isinstance(map_cache, M17Step):  # this step's forward pass computed log α
                cache, la = map_cache
            else:
                (_, la), cache = m17_variance_forward(self.params["theta"],
                                                      self.params["log_sigma2"])
            dtheta, dls2 = m17_variance_backward(None, scale * kl_m17_grad(la), cache)
            grads["theta"] += dtheta
            grads["log_sigma2"] += dls2
            return
        c = scale * self._copies()
        la, g = self.params["log_alpha"], need_grad(grads, "log_alpha", "the variational layer")
        alpha = None
        if isinstance(map_cache, K15Cache) and map_cache.alpha.shape == la.shape:
            alpha = map_cache.alpha  # exp(log α) of this step's forward pass

        def add_kl_grad(la: Any, a: Any, g: Any, out: tuple | None = None) -> Any:
            k = kl_k15_grad_kernel(la, a, scale=c)
            return get_xp(g).add(g, k, out=None if out is None else out[0])

        fused = kernel("k15_kl_grad_add", g)
        if fused is not None:
            fused(la, c, g)  # in place
        else:
            rowwise(add_kl_grad, la, alpha, g, out=(g,))  # in place

    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """A learned K15 ``log α`` stays ``≤ 0`` (M17's ``log σ²`` is unbounded)."""
        if self.learn_alpha and not self.sparse:
            return {"log_alpha": (None, K15_LOG_ALPHA_MAX)}
        return {}


class _StepCache(NamedTuple):
    sampler: str
    op_cache: Any
    map_cache: Any


class VariationalLayer(Layer):
    """What :class:`VariationalDense` and ``VariationalConv2D`` share: a
    :class:`WeightPosterior` in ``self.posterior``, a sampler, and the backward, KL and
    projection around it. Subclasses set ``_OPS`` (sampler name → ``(forward, backward,
    noise_shape)`` of their functional ops) and ``_MEAN_BACKWARD`` (the plain op's backward,
    for the ``"mean"`` sampler), and write ``forward``.
    """

    _OPS: dict = {}
    _MEAN_BACKWARD: Any = None
    _SKIPS_DX: frozenset = frozenset()  # samplers whose backward can skip dx (need_dx=False)
    posterior: WeightPosterior

    @property
    def sparse(self) -> bool:
        return self.posterior.sparse

    @property
    def log_alpha(self) -> Any:
        """``log α`` of every weight's posterior (broadcastable to θ)."""
        return self.posterior.log_alpha

    def mean_weights(self) -> Any:
        """θ, with weights of ``log α ≥ 3`` zeroed for sparse layers."""
        return self.posterior.mean_weights()

    def _remember(self, sampler: str, op_cache: Any, map_cache: Any) -> None:
        self._cache = _StepCache(sampler, op_cache, map_cache)

    def backward(self, dout: Any) -> Any:
        return self._backward(dout, None)

    def backward_with_kl(self, dout: Any, scale: float, need_dx: bool = True) -> Any:
        """``backward`` and ``kl_backward(scale)``, with the weight-sized passes of the two
        fused into one where the posterior can (see :meth:`WeightPosterior.backward`).
        ``need_dx=False`` lets the samplers in ``_SKIPS_DX`` skip the input gradient (and
        return None)."""
        scale = check_kl_scale(scale)  # before any gradient is written
        if self._need_cache().sampler == "mean":
            dx = self._backward(dout, None, need_dx)
            self.kl_backward(scale)
            return dx
        return self._backward(dout, scale, need_dx)

    def _backward(self, dout: Any, kl_scale: float | None, need_dx: bool = True) -> Any:
        sampler, op_cache, map_cache = self._need_cache()
        skip = {"need_dx": False} if not need_dx and sampler in self._SKIPS_DX else {}
        if sampler == "mean":
            g = type(self)._MEAN_BACKWARD(dout, op_cache, **skip)
            self.grads["theta"] = g.dw
            self.posterior.zero_grads(self.grads)
        else:
            g = self._OPS[sampler][1](dout, op_cache, **skip)
            self.posterior.backward(g.dw_mean, g.dw_var, map_cache, self.grads, kl_scale)
        if "b" in self.params:
            self.grads["b"] = g.db
        return g.dx

    def kl(self) -> Any:
        return self.posterior.kl()

    def kl_backward(self, scale: float) -> None:
        map_cache = self._cache.map_cache if self._cache is not None else None
        self.posterior.kl_backward(scale, self.grads, map_cache)

    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        return self.posterior.bounds()
