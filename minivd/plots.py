"""PNG figures of a training run: loss and error curves, and ``log α`` histograms per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .model import Sequential

__all__ = ["plot_curves", "plot_log_alpha"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Training objective (mean CE + β·KL/N: the negative ELBO per example when β = 1) and
    validation error against epochs."""
    plt = _pyplot()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["train_loss"] for h in history], "o-",
           label="train objective (−ELBO / N at β = 1)")
    a.plot(ep, [h["train_ce"] for h in history], "s--", label="train cross-entropy")
    a.set_xlabel("epoch")
    a.set_ylabel("nats per example")
    a.legend()
    b.plot(ep, [100 * h["valid_error"] for h in history], "o-", label="validation")
    b.set_xlabel("epoch")
    b.set_ylabel("error (%)")
    b.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_log_alpha(model: Sequential, path: str | Path) -> Path | None:
    """Histogram of ``log α`` for every layer that has one (None if the model has none)."""
    layers = model.variational_layers()
    if not layers:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3), squeeze=False)
    for ax, (i, layer) in zip(axes[0], layers):
        la = np.ravel(to_numpy(layer.log_alpha)).astype(np.float64)
        ax.hist(la, bins=50, color="tab:blue")
        ax.axvline(3.0, color="tab:red", lw=1, ls="--")
        ax.set_title(f"{i}. {type(layer).__name__}", fontsize=9)
        ax.set_xlabel("log α")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
