"""Conv layers: Conv2D, VariationalConv2D (type B, four samplers), MaxPool2D, Flatten."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..functional import (
    conv2d_backward,
    conv2d_forward,
    flatten_backward,
    flatten_forward,
    lrt_conv2d_backward,
    lrt_conv2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    per_example_conv2d_backward,
    per_example_conv2d_forward,
    shared_weight_conv2d_backward,
    shared_weight_conv2d_forward,
)
from ..functional._im2col import check_conv_args, check_stride_padding
from ..functional.pooling import pair
from ..random import standard_normal
from .base import Layer, check_positive_int, init_generator, place
from .variational_dense import check_sampler
from .weight_posterior import VariationalLayer, WeightPosterior, alpha_shape

__all__ = ["Conv2D", "VariationalConv2D", "MaxPool2D", "Flatten"]

_OPS = {
    "lrt": (lrt_conv2d_forward, lrt_conv2d_backward, lambda x, w, g: g.out_shape),
    "shared_weights": (shared_weight_conv2d_forward, shared_weight_conv2d_backward,
                       lambda x, w, g: tuple(w.shape)),
    "per_example_weights": (per_example_conv2d_forward, per_example_conv2d_backward,
                            lambda x, w, g: (x.shape[0],) + tuple(w.shape)),
}


def _he_normal(seed: Any, shape: tuple) -> np.ndarray:
    """He-normal initial kernel: std ``sqrt(2 / (C_in·KH·KW))`` (the fan-in of one output)."""
    fan_in = shape[1] * shape[2] * shape[3]
    return init_generator(seed).standard_normal(shape) * math.sqrt(2.0 / fan_in)


def _kernel_shape(c_in: int, c_out: int, kernel_size: Any) -> tuple[int, int, int, int]:
    c_in, c_out = check_positive_int("c_in", c_in), check_positive_int("c_out", c_out)
    return (c_out, c_in) + pair("kernel_size", kernel_size)


class Conv2D(Layer):
    """Plain conv (cross-correlation, NCHW) with He-normal initial kernel.

    Parameters
    ----------
    c_in, c_out : int
    kernel_size : int or (KH, KW)
    stride, padding : int
    bias, seed, backend, dtype
        As for :class:`~minivd.layers.Dense`. Parameters: ``w (C_out, C_in, KH, KW)``, ``b``.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int | tuple[int, int], *, stride: int = 1,
        padding: int = 0, bias: bool = True, seed: int | np.random.Generator | None = 0,
        backend: str = "numpy", dtype: Any = "float32",
    ) -> None:
        super().__init__()
        shape = _kernel_shape(c_in, c_out, kernel_size)
        self.stride, self.padding = check_stride_padding(stride, padding)
        self.params["w"] = place(_he_normal(seed, shape), backend, dtype)
        if bias:
            self.params["b"] = place(np.zeros(shape[0]), backend, dtype)

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        out, cache = conv2d_forward(x, self.params["w"], self.params.get("b"), self.stride,
                                    self.padding)
        self._cache = cache if train else None
        return out

    def backward(self, dout: Any) -> Any:
        g = conv2d_backward(dout, self._need_cache())
        self.grads["w"] = g.dw
        if "b" in self.params:
            self.grads["b"] = g.db
        return g.dx


class VariationalConv2D(VariationalLayer):
    r"""Conv layer with a factorised Gaussian posterior over the kernel (type B).

    ``q(w) = N(θ, σ²)`` per kernel entry, with (K15) ``σ² = α θ²`` and learned ``log α``, or
    ``sparse=True`` for M17's ``(θ, log σ²)``; see :class:`~minivd.layers.VariationalDense`,
    whose posterior code (:class:`~minivd.layers.WeightPosterior`) this layer shares.

    Parameters
    ----------
    c_in, c_out : int
    kernel_size : int or (KH, KW)
    stride, padding : int
    p, learn_alpha, sparse, log_sigma2_init, bias, seed, backend, dtype
        As for :class:`~minivd.layers.VariationalDense`.
    alpha_per : {"weight", "channel", "layer"}
        Shape of ``log α`` (K15): ``(C_out, C_in, KH, KW)`` per kernel entry (the default),
        ``(C_out, 1, 1, 1)`` per output channel, or ``(1, 1, 1, 1)`` per layer.
    sampler : {"lrt", "per_example_weights", "shared_weights", "mean"}
        ``"lrt"``: noise of the output shape ``(N, C_out, H_out, W_out)``
        (:func:`~minivd.functional.lrt_conv2d_forward`: exact marginals, but the correlation
        between outputs of one example and channel, which share a kernel sample, is
        dropped); ``"per_example_weights"``: a kernel per example,
        ``(N, C_out, C_in, KH, KW)`` (the exact model); ``"shared_weights"``: one kernel for
        the minibatch; ``"mean"``: no noise. May be changed between passes.

    Notes
    -----
    The KL is summed over kernel entries (a shared α counts once per entry it covers).
    Evaluation (``train=False``) uses the mean kernel θ; sparse layers also zero entries with
    ``log α ≥ 3``. Initial θ is He-normal with std ``sqrt(2 / (C_in·KH·KW))``.
    """

    _OPS = _OPS
    _MEAN_BACKWARD = staticmethod(conv2d_backward)
    _SKIPS_DX = frozenset({"lrt"})

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int | tuple[int, int], *, stride: int = 1,
        padding: int = 0, p: float = 0.5, learn_alpha: bool = True, alpha_per: str = "weight",
        sparse: bool = False, log_sigma2_init: float = -10.0, sampler: str = "lrt",
        bias: bool = True, seed: int | np.random.Generator | None = 0, backend: str = "numpy",
        dtype: Any = "float32",
    ) -> None:
        super().__init__()
        shape = _kernel_shape(c_in, c_out, kernel_size)
        self.stride, self.padding = check_stride_padding(stride, padding)
        self.sampler = check_sampler(sampler)
        la_shape = alpha_shape(alpha_per, {"weight": shape, "channel": (shape[0], 1, 1, 1),
                                           "layer": (1, 1, 1, 1)}, sparse)
        self.alpha_per = alpha_per
        self.posterior = WeightPosterior(
            self.params, _he_normal(seed, shape), alpha_shape=la_shape, p=p,
            learn_alpha=learn_alpha, sparse=sparse, log_sigma2_init=log_sigma2_init,
            backend=backend, dtype=dtype)
        if bias:
            self.params["b"] = place(np.zeros(shape[0]), backend, dtype)

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        b, theta = self.params.get("b"), self.params["theta"]
        conv = (self.stride, self.padding)
        if not train:
            self._cache = None
            return conv2d_forward(x, self.mean_weights(), b, *conv)[0]
        sampler = check_sampler(self.sampler)
        if sampler == "mean":
            out, cache = conv2d_forward(x, theta, b, *conv)
            self._remember(sampler, cache, None)
            return out
        fwd, _, noise_shape = _OPS[sampler]
        _, g = check_conv_args(x, theta, None, b, *conv)  # before drawing noise of x's dtype
        noise = standard_normal(self._need_rng(rng, "VariationalConv2D"),
                                noise_shape(x, theta, g), x.dtype)
        var, map_cache = self.posterior.variance()
        out, op_cache = fwd(x, theta, var, b, noise, *conv)
        self._remember(sampler, op_cache, map_cache)
        return out


class MaxPool2D(Layer):
    """Max pooling over ``kernel`` windows (stride defaults to the kernel; no padding)."""

    def __init__(self, kernel: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kernel = pair("kernel", kernel)
        self.stride = self.kernel if stride is None else pair("stride", stride)

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        out, cache = maxpool2d_forward(x, self.kernel, self.stride)
        self._cache = cache if train else None
        return out

    def backward(self, dout: Any) -> Any:
        return maxpool2d_backward(dout, self._need_cache())


class Flatten(Layer):
    """``(N, C, H, W)`` (or any ``(N, ...)``) → ``(N, C·H·W)``."""

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        out, self._cache = flatten_forward(x)
        return out

    def backward(self, dout: Any) -> Any:
        return flatten_backward(dout, self._need_cache())
