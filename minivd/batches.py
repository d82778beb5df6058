"""Minibatches: a seeded host-side shuffle, batches moved to the model's backend."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from .backend import asarray, get_xp

__all__ = ["iterate_minibatches"]


def iterate_minibatches(
    x: Any, y: Any, batch_size: int, rng: np.random.Generator | None,
    xp: ModuleType | str = np, shuffle: bool = True, drop_last: bool = False,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(xb, yb)`` minibatches that cover ``x, y`` once, placed on the backend ``xp``.

    Parameters
    ----------
    x, y : array
        Examples and labels of the same length (NumPy arrays, or both CuPy).
    batch_size : int
        Positive number of examples per batch; the last batch may be smaller.
    rng : numpy.random.Generator
        Host generator that draws the epoch's order (``rng.permutation``) when this function is
        called; may be ``None`` when ``shuffle`` is false.
    xp : module or str
        Backend the batches are moved to (``numpy``/``cupy`` or their names).
    shuffle : bool
        Draw a random order; otherwise keep the stored order.
    drop_last : bool
        Leave out a final batch smaller than ``batch_size``.

    Yields
    ------
    tuple
        ``(x[idx], y[idx])`` on ``xp``.
    """
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y differ in length: {n} != {len(y)}")
    if shuffle and not isinstance(rng, np.random.Generator):
        raise TypeError(f"shuffling needs a numpy.random.Generator (host side), got {rng!r}")
    order = rng.permutation(n) if shuffle else np.arange(n)
    src = get_xp(x, y)
    if src is not np:
        order = src.asarray(order)
    size = int(batch_size)
    stop = n - n % size if drop_last else n
    return ((asarray(x[order[i:i + size]], xp), asarray(y[order[i:i + size]], xp))
            for i in range(0, stop, size))
