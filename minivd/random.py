"""Random generators, always passed explicitly (no global RNG anywhere in minivd).

Library code calls only ``rng.random(shape, dtype=...)`` and ``rng.standard_normal(shape,
dtype=...)``: the two methods NumPy's and CuPy's ``Generator`` share. NumPy and CuPy streams
differ for the same seed, so cross-backend checks compare statistics or inject the noise.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .backend import resolve_backend

__all__ = ["make_rng", "child_seed"]


def make_rng(seed: int, xp: ModuleType | str = "numpy") -> Any:
    """A new ``Generator`` on the backend ``xp`` (module or ``"numpy"``/``"cupy"``) from ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    xp = resolve_backend(xp)
    return xp.random.default_rng(int(seed))


def child_seed(rng: Any) -> int:
    """Draw a fresh 52-bit seed from ``rng`` (to make replayable child generators)."""
    return int(float(rng.random()) * 2**52)
