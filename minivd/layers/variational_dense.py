"""Variational dense layer: type-B (independent weight) Gaussian dropout with four samplers."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp
from ..functional import (
    dense_backward,
    dense_forward,
    k15_variance_backward,
    k15_variance_forward,
    lrt_dense_backward,
    lrt_dense_forward,
    m17_variance_backward,
    m17_variance_forward,
    per_example_dense_backward,
    per_example_dense_forward,
    shared_weight_dense_backward,
    shared_weight_dense_forward,
)
from ..functional._checks import check_float
from ..kl import K15_LOG_ALPHA_MAX, kl_k15, kl_k15_grad, kl_m17, kl_m17_grad
from .base import Layer, check_positive_int, init_generator, p_to_log_alpha, place

__all__ = ["VariationalDense", "SAMPLERS", "SPARSE_LOG_ALPHA_THRESHOLD"]

SAMPLERS = ("lrt", "per_example_weights", "shared_weights", "mean")
"""The gradient estimators of K15 Table 1."""

SPARSE_LOG_ALPHA_THRESHOLD = 3.0
"""Sparse layers zero weights with ``log α ≥ 3`` (α ≈ 20, p ≈ 0.95) at evaluation."""

_OPS = {
    "lrt": (lrt_dense_forward, lrt_dense_backward, lambda n, di, do: (n, do)),
    "shared_weights": (shared_weight_dense_forward, shared_weight_dense_backward,
                       lambda n, di, do: (di, do)),
    "per_example_weights": (per_example_dense_forward, per_example_dense_backward,
                            lambda n, di, do: (n, di, do)),
}


class _Cache(NamedTuple):
    sampler: str
    op_cache: Any
    map_cache: Any


def check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    return sampler


class VariationalDense(Layer):
    r"""Dense layer with a factorised Gaussian posterior over the weights (type B).

    ``q(w_ij) = N(θ_ij, σ²_ij)`` with, by default (K15), ``σ² = α θ²`` and learned ``log α``
    (variational dropout B); ``sparse=True`` switches to M17's additive parameterisation
    (learned ``log σ²``, ``log α = log σ² − log(θ² + 1e-8)``, no upper bound on α).

    Parameters
    ----------
    d_in, d_out : int
    p : float
        Initial dropout rate, ``α = p/(1−p)`` (K15 only; the paper starts ``vd-b`` at p = 0.5).
    learn_alpha : bool
        False gives Gaussian dropout B with a fixed α (no KL, no ``log_alpha`` parameter).
    alpha_per : {"weight", "unit", "layer"}
        Shape of ``log α`` (K15): ``(D_in, D_out)`` (the default, as in the paper's
        experiments), ``(1, D_out)`` per output unit, or ``(1, 1)`` per layer.
    sparse : bool
        M17 parameterisation (per weight), ``log σ²`` initialised at ``log_sigma2_init``.
    sampler : {"lrt", "per_example_weights", "shared_weights", "mean"}
        How training forward passes sample: local reparameterization (noise ``(N, D_out)``),
        a weight sample per example (``(N, D_in, D_out)``), one weight sample per minibatch
        (``(D_in, D_out)``), or no noise. May be changed between passes.
    bias, seed, backend, dtype
        Deterministic bias; the seed (or NumPy ``Generator``) of the He-normal initial θ; where
        and in which float type the parameters live.

    Notes
    -----
    Parameters: ``theta``, then ``log_alpha`` (K15, if learned) or ``log_sigma2`` (sparse),
    then ``b``. The KL is summed over weights: ``Σ_ij KL(α_ij)``; with a shared α each weight
    still counts (``D_in · Σ_j KL(α_j)`` per unit). Evaluation (``train=False``) uses the mean
    weights θ; sparse layers also zero weights with ``log α ≥ 3``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        p: float = 0.5,
        learn_alpha: bool = True,
        alpha_per: str = "weight",
        sparse: bool = False,
        log_sigma2_init: float = -10.0,
        sampler: str = "lrt",
        bias: bool = True,
        seed: int | np.random.Generator | None = 0,
        backend: str = "numpy",
        dtype: Any = "float32",
    ) -> None:
        super().__init__()
        d_in, d_out = check_positive_int("d_in", d_in), check_positive_int("d_out", d_out)
        self.sampler = check_sampler(sampler)
        self.sparse = bool(sparse)
        self.learn_alpha = bool(learn_alpha) or self.sparse
        g = init_generator(seed)
        self.params["theta"] = place(g.standard_normal((d_in, d_out)) * math.sqrt(2.0 / d_in),
                                     backend, dtype)
        if self.sparse:
            self.alpha_per = "weight"
            self.params["log_sigma2"] = place(np.full((d_in, d_out), log_sigma2_init),
                                              backend, dtype)
        else:
            shapes = {"weight": (d_in, d_out), "unit": (1, d_out), "layer": (1, 1)}
            if alpha_per not in shapes:
                raise ValueError(f"alpha_per must be one of {tuple(shapes)}, got {alpha_per!r}")
            self.alpha_per = alpha_per
            la0 = p_to_log_alpha(p)
            if self.learn_alpha and la0 > K15_LOG_ALPHA_MAX:
                raise ValueError(f"the K15 KL is valid for α ≤ 1 (p ≤ 0.5); got p = {p}")
            la = place(np.full(shapes[alpha_per], la0), backend, dtype)
            if self.learn_alpha:
                self.params["log_alpha"] = la
            else:
                self._fixed_log_alpha = la
        if bias:
            self.params["b"] = place(np.zeros(d_out), backend, dtype)

    # -- parameter maps -------------------------------------------------------------------
    @property
    def log_alpha(self) -> Any:
        """``log α`` of every weight's posterior (broadcastable to θ)."""
        if self.sparse:
            (_, la), _ = m17_variance_forward(self.params["theta"], self.params["log_sigma2"])
            return la
        return self.params["log_alpha"] if self.learn_alpha else self._fixed_log_alpha

    def _variance(self) -> tuple[Any, Any]:
        theta = self.params["theta"]
        if self.sparse:
            (var, _), cache = m17_variance_forward(theta, self.params["log_sigma2"])
        else:
            var, cache = k15_variance_forward(theta, self.log_alpha)
        return var, cache

    def mean_weights(self) -> Any:
        """θ, with weights of ``log α ≥ 3`` zeroed for sparse layers."""
        theta = self.params["theta"]
        if not self.sparse:
            return theta
        return theta * (self.log_alpha < SPARSE_LOG_ALPHA_THRESHOLD)

    # -- forward / backward ---------------------------------------------------------------
    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        b = self.params.get("b")
        if not train:
            self._cache = None
            out, _ = dense_forward(x, self.mean_weights(), b)
            return out
        sampler = check_sampler(self.sampler)
        if sampler == "mean":
            out, cache = dense_forward(x, self.params["theta"], b)
            self._cache = _Cache(sampler, cache, None)
            return out
        fwd, _, noise_shape = _OPS[sampler]
        d_in, d_out = self.params["theta"].shape
        check_float("x", x, 2)  # before drawing noise of x's dtype
        noise = self._need_rng(rng, "VariationalDense").standard_normal(
            noise_shape(x.shape[0], d_in, d_out), dtype=x.dtype)
        var, map_cache = self._variance()
        out, op_cache = fwd(x, self.params["theta"], var, b, noise)
        self._cache = _Cache(sampler, op_cache, map_cache)
        return out

    def backward(self, dout: Any) -> Any:
        sampler, op_cache, map_cache = self._need_cache()
        if sampler == "mean":
            g = dense_backward(dout, op_cache)
            self.grads["theta"] = g.dw
            dx, db = g.dx, g.db
            for k in ("log_alpha", "log_sigma2"):
                if k in self.params:
                    self.grads[k] = get_xp(g.dw).zeros_like(self.params[k])
        else:
            g = _OPS[sampler][1](dout, op_cache)
            dx, db = g.dx, g.db
            if self.sparse:
                dtheta_map, dls2 = m17_variance_backward(g.dw_var, None, map_cache)
                self.grads["log_sigma2"] = dls2
                self.grads["theta"] = g.dw_mean  # M17: σ² does not depend on θ
            else:
                dtheta_map, dla = k15_variance_backward(g.dw_var, map_cache)
                dtheta_map += g.dw_mean
                self.grads["theta"] = dtheta_map
                if self.learn_alpha:
                    self.grads["log_alpha"] = dla
        if "b" in self.params:
            self.grads["b"] = db
        return dx

    # -- KL -------------------------------------------------------------------------------
    def _copies(self) -> int:
        return self.params["theta"].size // self.log_alpha.size

    def kl(self) -> Any:
        if not self.learn_alpha:
            return 0.0
        if self.sparse:
            return kl_m17(self.log_alpha).sum()
        return kl_k15(self.params["log_alpha"]).sum() * self._copies()

    def kl_backward(self, scale: float) -> None:
        if not self.learn_alpha:
            return
        if self.sparse:
            (_, la), cache = m17_variance_forward(self.params["theta"], self.params["log_sigma2"])
            dtheta, dls2 = m17_variance_backward(None, scale * kl_m17_grad(la), cache)
            self.grads["theta"] += dtheta
            self.grads["log_sigma2"] += dls2
        else:
            la = self.params["log_alpha"]
            self.grads["log_alpha"] += (scale * self._copies()) * kl_k15_grad(la)

    def project(self) -> None:
        if self.learn_alpha and not self.sparse:
            la = self.params["log_alpha"]
            get_xp(la).minimum(la, K15_LOG_ALPHA_MAX, out=la)
