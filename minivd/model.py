"""Sequential models, the SGVB objective, and builders for the paper's networks and methods.

The per-example negative ELBO is ``mean CE + β · KL / N`` with ``N`` the training-set size
(never the batch size): :meth:`Sequential.loss_and_grads` computes it and every gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .backend import get_xp
from .functional import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .functional._checks import is_real
from .layers import (
    Dense,
    Dropout,
    GaussianDropout,
    Layer,
    ReLU,
    Reshape,
    VariationalDense,
)

__all__ = ["Sequential", "METHODS", "MODELS", "build_model", "build_mlp", "check_matching",
           "non_finite"]

METHODS = ("none", "dropout", "gaussian-a", "gaussian-b", "vd-a", "vd-a2", "vd-b", "sparse-vd")
"""K15's seven methods (no dropout, binary dropout, Gaussian A/B, variational A/A2/B) and M17."""
MODELS = ("mlp", "lenet-300-100", "lenet-5")
P_INPUT, P_HIDDEN = 0.2, 0.5  # Srivastava et al.'s rates: on the input, on hidden layers


def check_matching(what: str, got: dict[str, Any], want: dict[str, Any], *,
                   dtype: bool = False) -> None:
    """Raise ``ValueError`` unless ``got`` has exactly the names of ``want``, each with its
    shape (and, with ``dtype``, its dtype)."""
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(f"{what} do not match the model: missing {missing}, unexpected {extra}")
    for name, p in want.items():
        a = got[name]
        if tuple(a.shape) != tuple(p.shape) or (dtype and a.dtype != p.dtype):
            raise ValueError(f"{what}: {name} is {a.dtype} {tuple(a.shape)}, the model needs "
                             f"{p.dtype} {tuple(p.shape)}")


def non_finite(arrays: dict[str, Any]) -> list[str]:
    """The names of the arrays (NumPy or CuPy) that hold NaN or inf."""
    return [name for name, a in arrays.items() if not bool(get_xp(a).isfinite(a).all())]


class Sequential:
    """A stack of layers with one loss: mean softmax cross-entropy plus the scaled KL.

    Parameters
    ----------
    layers : list of Layer
    kl_factor : float
        Multiplies every layer's KL: 1, or 1/3 for variational dropout A2.
    """

    def __init__(self, layers: list[Layer], *, kl_factor: float = 1.0) -> None:
        self.layers = list(layers)
        self.kl_factor = float(kl_factor)

    def forward(self, x: Any, *, rng: Any = None, train: bool = True) -> Any:
        for layer in self.layers:
            x = layer.forward(x, rng=rng, train=train)
        return x

    def backward(self, dout: Any) -> Any:
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def backward_with_kl(self, dout: Any, scale: float, need_dx: bool = True) -> Any:
        """:meth:`backward` then :meth:`kl_backward` (``scale = β/N``), fused per layer.

        With ``need_dx=False`` (training: the input is data) nothing below the first layer
        with parameters is run, that layer may skip its input gradient, and None is returned.
        """
        first = 0
        if not need_dx:  # layers before the first with parameters need no gradient at all
            first = next((i for i, layer in enumerate(self.layers) if layer.params),
                         len(self.layers))
        for i in reversed(range(first, len(self.layers))):
            dout = self.layers[i].backward_with_kl(dout, scale * self.kl_factor,
                                                   need_dx=need_dx or i > first)
        return dout if need_dx else None

    def kl(self) -> Any:
        """``kl_factor · Σ_layers KL`` (summed over every noise variable, not averaged)."""
        return sum((layer.kl() for layer in self.layers), 0.0) * self.kl_factor

    def kl_backward(self, scale: float) -> None:
        """Add ``scale · kl_factor · ∂KL/∂params`` into every layer's grads (``scale = β/N``;
        with K15 only ``log α`` gets a KL gradient, with M17 ``θ`` and ``log σ²`` both do)."""
        for layer in self.layers:
            layer.kl_backward(scale * self.kl_factor)

    def project(self) -> None:
        """Clip every constrained parameter into its range (after an optimiser step that was
        not given :meth:`bounds`)."""
        for layer in self.layers:
            layer.project()

    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """``{name: (lo, hi)}`` of the constrained parameters, named as in :meth:`parameters`:
        ``opt.step(model.parameters(), bounds=model.bounds())`` is ``opt.step(...)`` then
        :meth:`project`, with the clip done in the optimiser's pass over each parameter."""
        return {f"{i}.{type(layer).__name__}.{k}": b
                for i, layer in enumerate(self.layers) for k, b in layer.bounds().items()}

    def parameters(self) -> Iterator[tuple[str, Any, Any]]:
        """``(name, param, grad)`` triples, names like ``"2.VariationalDense.theta"``."""
        for i, layer in enumerate(self.layers):
            for k, p in layer.params.items():
                yield f"{i}.{type(layer).__name__}.{k}", p, layer.grads.get(k)

    def state(self) -> dict[str, Any]:
        return {name: p for name, p, _ in self.parameters()}

    def load_state(self, arrays: dict[str, Any]) -> None:
        """Copy ``arrays`` into the parameters; every name, shape and dtype must match exactly
        (no silent cast), and the values must be finite."""
        own = self.state()
        check_matching("parameters", arrays, own, dtype=True)
        bad = non_finite(arrays)
        if bad:
            raise ValueError(f"parameters: {bad[0]} holds NaN or inf")
        for name, p in own.items():
            p[...] = arrays[name]

    def loss_and_grads(self, x: Any, y: Any, *, rng: Any, kl_scale: float
                       ) -> tuple[Any, Any]:
        """One stochastic step's objective and gradients (written into the layers' grads).

        Parameters
        ----------
        x, y : arrays
            A minibatch on the model's backend.
        rng : Generator
            Noise for the stochastic layers.
        kl_scale : float
            ``β / N``. The KL value is not computed here (it costs a weight-sized pass and is
            only needed for reporting: call :meth:`kl`).

        Returns
        -------
        ce : 0-d array
            Mean cross-entropy of the minibatch.
        logits : array
        """
        if not (is_real(kl_scale) and np.isfinite(kl_scale) and kl_scale >= 0):
            raise ValueError(f"kl_scale (β/N) must be a finite number ≥ 0, got {kl_scale!r}")
        logits = self.forward(x, rng=rng, train=True)
        ce, cache = softmax_cross_entropy_forward(logits, y)
        self.backward_with_kl(softmax_cross_entropy_backward(1.0, cache), kl_scale, need_dx=False)
        return ce, logits

    def predict_logits(self, x: Any, *, rng: Any = None, train: bool = False) -> Any:
        """Logits of the evaluation map (mean weights, sparse mask) or, with ``train=True``
        and an ``rng``, of one stochastic pass (for Monte-Carlo prediction)."""
        return self.forward(x, rng=rng, train=train)

    def variational_layers(self) -> list[tuple[int, Layer]]:
        """Layers with a ``log α`` (learned or fixed)."""
        return [(i, layer) for i, layer in enumerate(self.layers) if hasattr(layer, "log_alpha")]

    def __repr__(self) -> str:
        return "Sequential(\n  " + ",\n  ".join(map(repr, self.layers)) + "\n)"


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return method


def _check_rate(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 < v < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")


def _input_noise(method: str, d: int, p: float, kw: dict) -> list[Layer]:
    """Activation noise before a weight layer with ``d`` inputs (type A and binary dropout)."""
    if method == "dropout":
        return [Dropout(p)]
    if method in ("gaussian-a", "vd-a", "vd-a2"):
        return [GaussianDropout(d, p=p, learn_alpha=method != "gaussian-a", **kw)]
    return []


def _dense(method: str, d_in: int, d_out: int, p: float, seed: int, kw: dict) -> Layer:
    if method in ("gaussian-b", "vd-b"):
        return VariationalDense(d_in, d_out, p=p, learn_alpha=method == "vd-b", seed=seed, **kw)
    if method == "sparse-vd":
        return VariationalDense(d_in, d_out, sparse=True, seed=seed, **kw)
    return Dense(d_in, d_out, seed=seed, **kw)


def build_mlp(widths: list[int], method: str = "vd-b", *, seed: int = 0,
              backend: str = "numpy", dtype: Any = "float32", p_input: float = P_INPUT,
              p_hidden: float = P_HIDDEN) -> Sequential:
    """A ReLU MLP with layer sizes ``widths`` (input first, classes last) and ``method``.

    Noise sits on every weight layer's input (``p_input`` = 0.2 on the data, ``p_hidden`` =
    0.5 on hidden units) as activation noise (binary dropout, type A) or weight noise (type B),
    as in Srivastava et al. and K15 section 5; the Gaussian methods take α = p/(1 − p), as
    the initial α where it is learned. Sparse VD ignores these rates and starts every weight at
    ``log σ² = −10``.
    """
    _check_method(method)
    if len(widths) < 2 or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths must list at least two positive sizes, got {widths}")
    _check_rate("p_input", p_input)
    _check_rate("p_hidden", p_hidden)
    kw = dict(backend=backend, dtype=dtype)
    layers: list[Layer] = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        p = p_input if i == 0 else p_hidden
        layers += _input_noise(method, d_in, p, kw)
        layers.append(_dense(method, d_in, d_out, p, seed + i, kw))
        if i < len(widths) - 2:
            layers.append(ReLU())
    return Sequential(layers, kl_factor=1 / 3 if method == "vd-a2" else 1.0)


def _build_lenet5(method: str, seed: int, backend: str, dtype: Any,
                  p_input: float = P_INPUT) -> Sequential:
    from .layers.conv import Conv2D, Flatten, MaxPool2D, VariationalConv2D

    kw = dict(backend=backend, dtype=dtype)

    def conv(c_in: int, c_out: int, p: float, s: int) -> list[Layer]:
        if method in ("gaussian-b", "vd-b"):
            c = VariationalConv2D(c_in, c_out, 5, p=p, learn_alpha=method == "vd-b", seed=s, **kw)
        elif method == "sparse-vd":
            c = VariationalConv2D(c_in, c_out, 5, sparse=True, seed=s, **kw)
        else:
            c = Conv2D(c_in, c_out, 5, seed=s, **kw)
        return _input_noise(method, c_in, p, kw) + [c, ReLU(), MaxPool2D(2)]

    layers: list[Layer] = [Reshape((1, 28, 28))]
    _check_rate("p_input", p_input)
    layers += conv(1, 20, p_input, seed) + conv(20, 50, P_HIDDEN, seed + 1) + [Flatten()]
    for i, (d_in, d_out) in enumerate([(800, 500), (500, 10)]):
        layers += _input_noise(method, d_in, P_HIDDEN, kw)
        layers.append(_dense(method, d_in, d_out, P_HIDDEN, seed + 2 + i, kw))
        if i == 0:
            layers.append(ReLU())
    return Sequential(layers, kl_factor=1 / 3 if method == "vd-a2" else 1.0)


def build_model(model: str = "mlp", method: str = "vd-b", *, width: int = 512, depth: int = 2,
                in_features: int = 784, n_classes: int = 10, seed: int = 0,
                backend: str = "numpy", dtype: Any = "float32",
                p_input: float = P_INPUT) -> Sequential:
    """Build ``"mlp"`` (``depth`` hidden layers of ``width``), ``"lenet-300-100"`` or
    ``"lenet-5"`` (20@5×5, pool, 50@5×5, pool, FC 500, FC 10; 28×28 inputs) with ``method``
    and noise rate ``p_input`` on the input layer (:func:`build_mlp`)."""
    _check_method(method)
    for name, v, lo in (("seed", seed, 0), ("width", width, 1), ("depth", depth, 0),
                        ("in_features", in_features, 1), ("n_classes", n_classes, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int ≥ {lo}, got {v!r}")
    if model == "mlp":
        widths = [in_features] + [int(width)] * int(depth) + [n_classes]
        return build_mlp(widths, method, seed=seed, backend=backend, dtype=dtype,
                         p_input=p_input)
    if model == "lenet-300-100":
        return build_mlp([in_features, 300, 100, n_classes], method, seed=seed, backend=backend,
                         dtype=dtype, p_input=p_input)
    if model == "lenet-5":
        if in_features != 784 or n_classes != 10:
            raise ValueError("lenet-5 takes 28×28 images (784 features) and 10 classes")
        return _build_lenet5(method, seed, backend, dtype, p_input)
    raise ValueError(f"unknown model {model!r}; valid models: {', '.join(MODELS)}")
