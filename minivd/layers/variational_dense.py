"""Variational dense layer: type-B (independent weight) Gaussian dropout with four samplers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..functional import (
    dense_backward,
    dense_forward,
    lrt_dense_backward,
    lrt_dense_forward,
    per_example_dense_backward,
    per_example_dense_forward,
    shared_weight_dense_backward,
    shared_weight_dense_forward,
)
from ..functional._checks import check_float
from ..random import standard_normal
from .base import check_positive_int, init_generator
from .weight_posterior import VariationalLayer, WeightPosterior, alpha_shape

__all__ = ["VariationalDense", "SAMPLERS", "check_sampler"]

SAMPLERS = ("lrt", "per_example_weights", "shared_weights", "mean")
"""The gradient estimators of K15 Table 1."""

_OPS = {
    "lrt": (lrt_dense_forward, lrt_dense_backward, lambda n, di, do: (n, do)),
    "shared_weights": (shared_weight_dense_forward, shared_weight_dense_backward,
                       lambda n, di, do: (di, do)),
    "per_example_weights": (per_example_dense_forward, per_example_dense_backward,
                            lambda n, di, do: (n, di, do)),
}


def check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    return sampler


class VariationalDense(VariationalLayer):
    r"""Dense layer with a factorised Gaussian posterior over the weights (type B).

    ``q(w_ij) = N(θ_ij, σ²_ij)`` with, by default (K15), ``σ² = α θ²`` and learned ``log α``
    (variational dropout B); ``sparse=True`` switches to M17's additive parameterisation
    (learned ``log σ²``, ``log α = log σ² − log(θ² + 1e-8)``, no upper bound on α).

    Parameters
    ----------
    d_in, d_out : int
    p : float
        Initial dropout rate, ``α = p/(1−p)`` (K15 only; the paper starts ``vd-b`` at p = 0.5
        on hidden units and 0.2 on the input).
    learn_alpha : bool
        False gives Gaussian dropout B with a fixed α (no KL, no ``log_alpha`` parameter).
    alpha_per : {"weight", "unit", "layer"}
        Shape of ``log α`` (K15): ``(D_in, D_out)`` (the default, as in the paper's
        experiments), ``(1, D_out)`` per output unit, or ``(1, 1)`` per layer.
    sparse : bool
        M17 parameterisation (per weight), ``log σ²`` initialised at ``log_sigma2_init``.
    log_sigma2_init : float
        Initial ``log σ²`` of every weight when ``sparse`` (default −10, M17's); ignored by
        K15 layers.
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
    weights θ; sparse layers also zero weights with ``log α ≥ 3``. All gradients of a step,
    the KL's included, are taken at the parameters of that step's training forward pass.
    """

    _OPS = _OPS
    _MEAN_BACKWARD = staticmethod(dense_backward)
    _SKIPS_DX = frozenset({"lrt", "per_example_weights", "shared_weights", "mean"})

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
        la_shape = alpha_shape(alpha_per, {"weight": (d_in, d_out), "unit": (1, d_out),
                                        "layer": (1, 1)}, sparse)
        self.alpha_per = alpha_per
        theta0 = init_generator(seed).standard_normal((d_in, d_out)) * math.sqrt(2.0 / d_in)
        self.posterior = WeightPosterior(
            self.params, theta0, alpha_shape=la_shape, p=p, learn_alpha=learn_alpha,
            sparse=sparse, log_sigma2_init=log_sigma2_init, backend=backend, dtype=dtype)
        if bias:
            self.params["b"] = self.params["theta"][0] * 0

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        b = self.params.get("b")
        if not train:
            self._cache = None
            return dense_forward(x, self.mean_weights(), b)[0]
        sampler = check_sampler(self.sampler)
        if sampler == "mean":
            out, cache = dense_forward(x, self.params["theta"], b)
            self._remember(sampler, cache, None)
            return out
        fwd, _, noise_shape = _OPS[sampler]
        d_in, d_out = self.params["theta"].shape
        check_float("x", x, 2)  # before drawing noise of x's dtype
        noise = standard_normal(self._need_rng(rng, "VariationalDense"),
                                noise_shape(x.shape[0], d_in, d_out), x.dtype)
        var, map_cache = self.posterior.variance()
        out, op_cache = fwd(x, self.params["theta"], var, b, noise)
        self._remember(sampler, op_cache, map_cache)
        return out
