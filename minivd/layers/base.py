"""The layer protocol shared by every layer, and helpers for building parameters."""

from __future__ import annotations

import math
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from .._rowwise import rowwise
from ..backend import backend_name, get_xp, resolve_backend
from ..functional._checks import FLOATS, is_real

__all__ = ["Layer", "init_generator", "p_to_log_alpha", "clip_to_bounds"]


def clip_to_bounds(a: Any, lo: float | None, hi: float | None, out: tuple | None = None
                   ) -> None:
    """``a ← min(max(a, lo), hi)`` in place (``None``: no bound on that side); what
    :meth:`Layer.project` does per block and the optimisers do after each update. ``out`` is
    ignored (``a`` is written), so :func:`~minivd._rowwise.rowwise` can call it on blocks."""
    xp = get_xp(a)
    if hi is not None:
        xp.minimum(a, hi, out=a)
    if lo is not None:
        xp.maximum(a, lo, out=a)


class Layer:
    """Base class: a thin stateful wrapper over pure functional ops.

    Protocol
    --------
    ``forward(x, *, rng=None, train=True)``
        Returns the output. Stochastic layers need ``rng`` (a NumPy or CuPy ``Generator`` on
        the layer's backend) when ``train`` is true; ``train=False`` is the deterministic
        evaluation map. The noise drawn is kept for ``backward``.
    ``backward(dout) -> dx``
        Gradient of the **data term** only; *writes* ``grads`` (one entry per key of
        ``params``).
    ``kl()``
        The layer's summed KL divergence (a 0-d array, or ``0.0`` for layers without one).
    ``kl_backward(scale)``
        *Adds* ``scale · ∂KL/∂params`` into ``grads``; call it after ``backward``. The model
        passes ``β/N`` (``β/(3N)`` for variational dropout A2).
    ``backward_with_kl(dout, scale, need_dx=True) -> dx``
        ``backward(dout)`` then ``kl_backward(scale)``, the same gradients; a layer may fuse
        the two (the variational layers share their weight-sized passes). Models call this,
        with ``need_dx=False`` for their first layer with parameters: a layer may then skip
        ``dx`` and return None (``Dense`` and ``VariationalDense`` with every sampler do,
        ``VariationalConv2D`` with ``sampler="lrt"``).
    ``bounds() -> {key: (lo, hi)}``
        The range of each constrained parameter (K15's ``log α ≤ 0`` is ``(None, 0.0)``;
        ``None``: unbounded on that side); empty for unconstrained layers. Optimisers take
        them to clip in the same pass as their update (``step(..., bounds=...)``).
    ``project()``
        Clips every constrained parameter into its ``bounds()`` (in place): what to call
        after an optimiser step that was not given the bounds.
    """

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self._cache: Any = None

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        raise NotImplementedError

    def backward(self, dout: Any) -> Any:
        raise NotImplementedError

    def kl(self) -> Any:
        return 0.0

    def kl_backward(self, scale: float) -> None:
        return None

    def backward_with_kl(self, dout: Any, scale: float, need_dx: bool = True) -> Any:
        scale = check_kl_scale(scale)  # before any gradient is written
        dx = self.backward(dout)
        self.kl_backward(scale)
        return dx

    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        return {}

    def project(self) -> None:
        for key, (lo, hi) in self.bounds().items():
            p = self.params[key]
            rowwise(partial(clip_to_bounds, lo=lo, hi=hi), p, out=(p,))

    def _need_cache(self) -> Any:
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a training forward pass "
                "(forward(x, rng=..., train=True) first)"
            )
        return self._cache

    @staticmethod
    def _need_rng(rng: Any, name: str, draws: str = "standard_normal") -> Any:
        """``rng``, checked to be a generator with the method ``draws`` (RandomState's
        methods take no ``dtype``)."""
        if rng is None:
            raise ValueError(
                f"{name}.forward(train=True) draws noise: pass rng=minivd.make_rng(seed, backend)"
            )
        if isinstance(rng, np.random.RandomState) or not hasattr(rng, draws):
            raise TypeError(f"{name}.forward: rng must be a NumPy or CuPy Generator "
                            f"(minivd.make_rng(seed, backend)), got {type(rng).__name__}")
        return rng

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


def check_kl_scale(scale: Any) -> float:
    """The KL gradient's scale as a Python float: a finite real number. Training passes
    β/N ≥ 0 (``Sequential`` checks that); a layer takes any sign, as ``kl_backward`` is the
    VJP of the KL with ``scale`` as its upstream gradient (the gradient checks use both)."""
    if not (is_real(scale) and math.isfinite(scale)):
        raise ValueError(f"the KL scale must be a finite number, got {scale!r}")
    return float(scale)


def need_grad(grads: dict, key: str, owner: str) -> Any:
    """``grads[key]``, which ``kl_backward`` adds into: backward must have made it."""
    if key not in grads:
        raise RuntimeError(f"{owner}.kl_backward adds the KL gradient into the data gradient of "
                           f"{key!r}: call backward(dout) first")
    return grads[key]


def init_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Host generator for parameter initialisation (identical weights on every backend)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError("layers with weights need seed= (an int) or a numpy Generator")
    return np.random.default_rng(seed)


def place(a: np.ndarray, backend: str | ModuleType, dtype: Any) -> Any:
    """Put a host array on ``backend`` with ``dtype`` (float32 or float64)."""
    xp = resolve_backend(backend)
    dtype = np.dtype(dtype)
    if dtype not in FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {dtype} (float16 loses the "
                        "1e-8 that keeps the LRT's square roots and gradients finite)")
    if backend_name(xp) == "numpy":
        return np.ascontiguousarray(a, dtype=dtype)
    return xp.asarray(np.ascontiguousarray(a, dtype=dtype))


def p_to_log_alpha(p: float) -> float:
    """Dropout rate ``p`` to Gaussian-dropout ``log α`` with ``α = p/(1−p)`` (a variance)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout rate p must lie in (0, 1), got {p}")
    return math.log(p / (1.0 - p))


def check_positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)
