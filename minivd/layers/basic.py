"""Deterministic layers and activation noise: Dense, ReLU, Dropout, GaussianDropout (type A)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..functional import (
    bernoulli_dropout_backward,
    bernoulli_dropout_forward,
    dense_backward,
    dense_forward,
    gaussian_dropout_backward,
    gaussian_dropout_forward,
    relu_backward,
    relu_forward,
)
from ..functional._checks import check_float
from ..kl import K15_LOG_ALPHA_MAX, kl_k15, kl_k15_grad
from ..random import standard_normal
from .base import (
    Layer,
    check_kl_scale,
    check_positive_int,
    init_generator,
    need_grad,
    p_to_log_alpha,
    place,
)

__all__ = ["Dense", "ReLU", "Dropout", "GaussianDropout", "Reshape"]


class Dense(Layer):
    """Affine layer ``x @ w + b`` with He-normal initial weights (std ``sqrt(2/D_in)``)."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        bias: bool = True,
        seed: int | np.random.Generator | None = 0,
        backend: str = "numpy",
        dtype: Any = "float32",
    ) -> None:
        super().__init__()
        d_in, d_out = check_positive_int("d_in", d_in), check_positive_int("d_out", d_out)
        g = init_generator(seed)
        self.params["w"] = place(g.standard_normal((d_in, d_out)) * math.sqrt(2.0 / d_in),
                                 backend, dtype)
        if bias:
            self.params["b"] = place(np.zeros(d_out), backend, dtype)

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        out, cache = dense_forward(x, self.params["w"], self.params.get("b"))
        self._cache = cache if train else None
        return out

    def backward(self, dout: Any) -> Any:
        return self.backward_with_kl(dout, 0.0)

    def backward_with_kl(self, dout: Any, scale: float, need_dx: bool = True) -> Any:
        """``backward`` (there is no KL); ``need_dx=False`` skips ``dx`` and returns None."""
        g = dense_backward(dout, self._need_cache(), need_dx=need_dx)
        self.grads["w"] = g.dw
        if "b" in self.params:
            self.grads["b"] = g.db
        return g.dx


class ReLU(Layer):
    """``max(x, 0)``."""

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        out, self._cache = relu_forward(x)
        return out

    def backward(self, dout: Any) -> Any:
        return relu_backward(dout, self._need_cache())


class Dropout(Layer):
    """Bernoulli (inverted) dropout with drop probability ``p_drop``; identity at evaluation."""

    def __init__(self, p_drop: float) -> None:
        super().__init__()
        if not 0.0 <= float(p_drop) < 1.0:
            raise ValueError(f"p_drop must lie in [0, 1), got {p_drop}")
        self.p_drop = float(p_drop)

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        check_float("x", x)
        if not train or self.p_drop == 0.0:
            self._cache = None
            return x
        u = self._need_rng(rng, "Dropout", "random").random(x.shape, dtype=x.dtype)
        out, self._cache = bernoulli_dropout_forward(x, self.p_drop, u)
        return out

    def backward(self, dout: Any) -> Any:
        if self.p_drop == 0.0:
            return dout
        return bernoulli_dropout_backward(dout, self._need_cache())


class GaussianDropout(Layer):
    r"""Type-A Gaussian dropout on a layer's inputs: ``x · (1 + √α · ε)``, ``ε ~ N(0, 1)``.

    This is the posterior ``w_i = s_i θ_i``, ``q(s_i) = N(1, α)`` of K15 eq. 11: one noise
    variable per input unit (dense input ``(N, D)``) or per input channel (conv input
    ``(N, C, H, W)``: noise ``(N, C, 1, 1)``, shared over positions), drawn for every example.

    Parameters
    ----------
    num_units : int
        D (dense) or C (conv).
    p : float
        Initial (or fixed) dropout rate; ``α = p/(1−p)``.
    learn_alpha : bool
        False: Gaussian dropout A (α fixed, no KL). True: variational dropout A (``log_alpha``
        is a parameter, trained with the K15 KL, kept at ``log α ≤ 0`` by :meth:`project`).
    alpha_per : {"unit", "layer"}
        One α per unit/channel, or one shared by the layer.
    backend, dtype
        Where and in which float type ``log_alpha`` (or the fixed α) lives.

    Notes
    -----
    The KL is counted once per noise variable: ``Σ_i KL(α_i)`` over the ``num_units`` units
    (with ``alpha_per="layer"``, ``num_units · KL(α)``). It does not grow with the batch or,
    for conv inputs, with the number of positions: those share the unit's noise variable.
    """

    def __init__(
        self,
        num_units: int,
        *,
        p: float = 0.5,
        learn_alpha: bool = False,
        alpha_per: str = "unit",
        backend: str = "numpy",
        dtype: Any = "float32",
    ) -> None:
        super().__init__()
        self.num_units = check_positive_int("num_units", num_units)
        if alpha_per not in ("unit", "layer"):
            raise ValueError(f"alpha_per must be 'unit' or 'layer', got {alpha_per!r}")
        self.alpha_per = alpha_per
        self.learn_alpha = bool(learn_alpha)
        log_alpha = p_to_log_alpha(p)
        if self.learn_alpha and log_alpha > K15_LOG_ALPHA_MAX:
            raise ValueError(f"learned α uses the K15 KL, valid for α ≤ 1 (p ≤ 0.5); got p = {p}")
        n = self.num_units if alpha_per == "unit" else 1
        la = place(np.full(n, log_alpha), backend, dtype)
        if self.learn_alpha:
            self.params["log_alpha"] = la
        else:
            self._fixed_log_alpha = la

    @property
    def log_alpha(self) -> Any:
        return self.params["log_alpha"] if self.learn_alpha else self._fixed_log_alpha

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        check_float("x", x)
        if x.ndim not in (2, 4) or x.shape[1] != self.num_units:
            raise ValueError(
                f"GaussianDropout({self.num_units}) takes x of shape (N, {self.num_units}) or "
                f"(N, {self.num_units}, H, W), got {tuple(x.shape)}"
            )
        if not train:
            self._cache = None
            return x
        la = self.log_alpha
        noise_shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
        if x.ndim == 4:
            la = la.reshape((la.shape[0], 1, 1))
        eps = standard_normal(self._need_rng(rng, "GaussianDropout"), noise_shape, x.dtype)
        out, self._cache = gaussian_dropout_forward(x, la, eps)
        return out

    def backward(self, dout: Any) -> Any:
        dx, dla = gaussian_dropout_backward(dout, self._need_cache())
        if self.learn_alpha:
            self.grads["log_alpha"] = dla.reshape(self.params["log_alpha"].shape)
        return dx

    def _copies(self) -> int:
        return self.num_units // self.log_alpha.shape[0]

    def kl(self) -> Any:
        if not self.learn_alpha:
            return 0.0
        return kl_k15(self.params["log_alpha"]).sum() * self._copies()

    def kl_backward(self, scale: float) -> None:
        scale = check_kl_scale(scale)
        if self.learn_alpha:
            need_grad(self.grads, "log_alpha", "GaussianDropout")
            self.grads["log_alpha"] += (scale * self._copies()) * kl_k15_grad(
                self.params["log_alpha"])

    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """A learned ``log α`` stays ``≤ 0``, where the K15 KL is valid."""
        return {"log_alpha": (None, K15_LOG_ALPHA_MAX)} if self.learn_alpha else {}


class Reshape(Layer):
    """Reshape each example: ``(N, ...) -> (N, *shape)`` (e.g. flat images to NCHW)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        if int(np.prod(x.shape[1:])) != int(np.prod(self.shape)):
            raise ValueError(f"cannot reshape examples of shape {tuple(x.shape[1:])} to "
                             f"{self.shape}")
        self._cache = tuple(x.shape)
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, dout: Any) -> Any:
        return dout.reshape(self._need_cache())
