"""Random generators, always passed explicitly (no global RNG anywhere in minivd).

Library code calls only ``rng.random(shape, dtype=...)`` and
``rng.standard_normal(shape, dtype=...)``: the two methods NumPy's and CuPy's ``Generator``
share. NumPy and CuPy streams
differ for the same seed, so cross-backend checks compare statistics or inject the noise.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .backend import resolve_backend

__all__ = ["make_rng", "child_seed", "standard_normal"]


def make_rng(seed: int, xp: ModuleType | str = "numpy") -> Any:
    """A new ``Generator`` on backend ``xp`` (module or ``"numpy"``/``"cupy"``) from ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    xp = resolve_backend(xp)
    return xp.random.default_rng(int(seed))


def child_seed(rng: Any) -> int:
    """Draw a fresh 52-bit seed from ``rng`` (to make replayable child generators)."""
    return int(float(rng.random()) * 2**52)


_NOISE_CHUNK = 1 << 16  # values per child generator; fixed, so results never depend on threads
_NOISE_PARALLEL = _NOISE_CHUNK + 1  # from two chunks up: a (100, 1024) draw already gains


def standard_normal(rng: Any, shape: tuple, dtype: Any = "float32") -> Any:
    """``rng.standard_normal(shape, dtype=dtype)``, drawn on all CPU cores for large NumPy draws.

    A large NumPy draw takes one seed from ``rng`` and fills fixed chunks of
    ``_NOISE_CHUNK`` values, chunk ``i`` from its own generator seeded with ``(seed, i)``
    (NumPy's generators release the GIL while filling). The values depend only on ``rng``'s
    state, never on the number of threads; they differ from a single ``rng.standard_normal``
    call's. CuPy generators and small draws call ``rng.standard_normal`` directly.
    """
    if not isinstance(rng, np.random.Generator):
        return rng.standard_normal(shape, dtype=dtype)
    size = int(np.prod(shape))
    if size < _NOISE_PARALLEL:
        return rng.standard_normal(shape, dtype=dtype)
    from ._rowwise import parallel_for

    seed = child_seed(rng)
    out = np.empty(size, dtype=dtype)
    starts = range(0, size, _NOISE_CHUNK)

    def fill(i: int) -> None:
        lo = starts[i]
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, i))))
        g.standard_normal(out=out[lo:lo + _NOISE_CHUNK], dtype=dtype)

    parallel_for(fill, len(starts))
    return out.reshape(shape)
