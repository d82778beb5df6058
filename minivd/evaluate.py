"""Evaluation modes: mean weights (sparse layers masked at ``log α ≥ 3``) and Monte-Carlo
predictive averaging over S stochastic passes; sparsity and compression of sparse models."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import asarray, get_xp, to_numpy
from .layers import SPARSE_LOG_ALPHA_THRESHOLD
from .model import Sequential

__all__ = ["evaluate", "sparsity_report"]


def _softmax(xp: Any, z: Any) -> Any:
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_split(name: str, x: Any, y: Any) -> None:
    """Raise ``ValueError`` unless ``x`` is a non-empty host array with one row per label in
    ``y``, a 1-D integer array (a ``(n, 1)`` label column would broadcast against the
    predictions and count n² comparisons)."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise ValueError(f"{name}: x and y must be NumPy (host) arrays, got "
                         f"{type(x).__name__} and {type(y).__name__}")
    if x.ndim < 2 or not len(x):
        raise ValueError(f"{name}: x must hold at least one example (rows), got shape "
                         f"{x.shape}")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: y must be a 1-D integer array of {len(x)} labels, got "
                         f"shape {y.shape} and dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{name}: labels must be ≥ 0, got {y.min()}")


def _finite(scores: Any, lo: int) -> Any:
    """``scores`` (logits or predictive probabilities) of the batch starting at example
    ``lo``, refused unless finite: ``argmax`` would call a NaN row class 0, and the error rate
    would look plausible."""
    if not bool(get_xp(scores).isfinite(scores).all()):
        raise ValueError(f"the model's outputs are not finite on examples {lo}.."
                         f"{lo + len(scores) - 1} (NaN or inf parameters?): no error rate can "
                         "be computed")
    return scores


def evaluate(model: Sequential, x: np.ndarray, y: np.ndarray, *, xp: Any = np,
             mode: str = "mean", samples: int = 10, rng: Any = None,
             batch: int = 1000) -> dict[str, float]:
    """Classification error (a fraction) of ``model`` on host arrays ``x, y``.

    Parameters
    ----------
    model : Sequential
        The network; its parameters are not changed.
    x, y : numpy.ndarray
        Host inputs (one example per row) and their integer labels (≥ 0), checked by
        :func:`check_split`.
    xp : module
        The array module the model's parameters live on; ``x`` is copied to it batch by batch.
    mode : {"mean", "mc"}
        ``"mean"``: one deterministic pass with the mean weights (masked for sparse layers).
        ``"mc"``: the predictive distribution averaged over ``samples`` stochastic passes
        (``rng`` required); also returns ``entropy``, the mean entropy (nats) of that
        predictive distribution.
    samples : int
        Stochastic passes per batch in ``"mc"`` mode (≥ 1).
    rng : Generator, optional
        The noise generator for ``"mc"`` mode (on the model's backend); unused for ``"mean"``.
    batch : int
        Examples per forward pass (≥ 1): it bounds the memory; the ``"mean"`` result does not
        depend on it (the ``"mc"`` noise is drawn batch by batch, so that result does).
    """
    if mode not in ("mean", "mc"):
        raise ValueError(f"mode must be 'mean' or 'mc', got {mode!r}")
    check_split("evaluate", x, y)
    for name, v in (("batch", batch), ("samples", samples)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int ≥ 1, got {v!r}")
    if mode == "mc" and rng is None:
        raise ValueError("mode='mc' needs rng=")
    wrong, entropy = 0, 0.0
    for lo in range(0, len(x), batch):
        xb, yb = asarray(x[lo:lo + batch], xp), y[lo:lo + batch]
        if mode == "mean":
            scores = model.predict_logits(xb)
        else:  # the predictive distribution
            scores = sum(_softmax(xp, model.predict_logits(xb, rng=rng, train=True))
                         for _ in range(int(samples))) / int(samples)
            ent = -(scores * xp.log(xp.maximum(scores, 1e-30))).sum(axis=1)
            entropy += float(ent.sum())
        _finite(scores, lo)
        if lo == 0 and y.max() >= scores.shape[1]:  # checked once, on the host labels
            raise ValueError(f"label {y.max()} is out of range for a model of "
                             f"{scores.shape[1]} classes")
        wrong += int((to_numpy(scores.argmax(axis=1)) != yb).sum())
    out = {"error": wrong / len(x)}
    if mode == "mc":
        out["entropy"] = entropy / len(x)
    return out


def sparsity_report(model: Sequential) -> dict[str, Any]:
    """Per variational layer, the fraction of weights with ``log α ≥ 3`` (dropped at test
    time), and the compression ratio ``#weights / #kept weights`` over those layers' weights
    (biases excluded, as M17 counts)."""
    layers, total, kept = {}, 0, 0
    for i, layer in model.variational_layers():
        if "theta" not in layer.params:
            continue
        la = layer.log_alpha
        xp = get_xp(la)
        la = xp.broadcast_to(la, layer.params["theta"].shape)
        dropped = int((la >= SPARSE_LOG_ALPHA_THRESHOLD).sum())
        n = int(la.size)
        layers[f"{i}.{type(layer).__name__}"] = dropped / n
        total += n
        kept += n - dropped
    return {"sparsity": layers, "compression": total / max(kept, 1)}
