"""Random generators, always passed explicitly (no global RNG anywhere in minivd).

Library code calls only ``rng.random(shape, dtype=...)`` and ``rng.standard_normal(shape,
dtype=...)``: the two methods NumPy's and CuPy's ``Generator`` share (and
:func:`stable_permutation`, a host-side shuffle over PCG64's raw stream, whose values NumPy
keeps stable across versions, for the Fashion-MNIST split). Layers draw their noise with
:func:`standard_normal`, which on NumPy turns ``rng.random`` uniforms into normals by Box–Muller
(faster here than NumPy's own sampler) and fills large draws on all cores. NumPy and CuPy
streams differ for the same seed, so cross-backend checks compare statistics or inject the
noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .backend import resolve_backend

__all__ = ["make_rng", "child_seed", "standard_normal", "box_muller", "stable_permutation"]


def make_rng(seed: int | Sequence[int], xp: ModuleType | str = "numpy") -> Any:
    """A new ``Generator`` on backend ``xp`` (module or ``"numpy"``/``"cupy"``) from ``seed``.

    ``seed`` is a non-negative int or a sequence of them, such as ``[seed, 2]``: a stream of
    its own for each purpose (NumPy's ``SeedSequence`` hashes the list; on CuPy, whose
    generators take one int, the list is first hashed to one). Streams ``seed + k`` would
    not be: the trainer initialises layer ``i`` from ``seed + i``. (``SeedSequence`` reads
    an int as its 32-bit words, padded with zeros: ``[s, 0]`` is the stream of ``s``, so give
    purposes non-zero keys, and ``[s, k]`` is that of ``s + k·2³²``, so keep int seeds below
    2³², as the trainer's config does.)
    """
    keys = list(seed) if isinstance(seed, (list, tuple)) else [seed]
    if not keys or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0
                       for k in keys):
        raise ValueError(f"seed must be a non-negative int or a non-empty sequence of them, "
                         f"got {seed!r}")
    xp = resolve_backend(xp)
    if len(keys) == 1:
        return xp.random.default_rng(int(keys[0]))
    if xp is np:
        return np.random.default_rng([int(k) for k in keys])
    return xp.random.default_rng(int(np.random.SeedSequence(
        [int(k) for k in keys]).generate_state(1)[0]))


def child_seed(rng: Any) -> int:
    """Draw a fresh 52-bit seed from ``rng`` (to make replayable child generators)."""
    return int(float(rng.random()) * 2**52)


_NOISE_CHUNK = 1 << 16  # values per child generator; fixed, so results never depend on threads
_NOISE_PARALLEL = _NOISE_CHUNK + 1  # from two chunks up: a (100, 1024) draw already gains
_TWO_PI = 2 * np.pi


def box_muller(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    r"""Fill the 1-d float32/float64 ``out`` with standard normals from ``rng.random`` (in place).

    Box & Muller (1958): for independent :math:`U_1, U_2 \sim U[0, 1)`,
    :math:`R = \sqrt{-2\log(1 - U_1)}` and :math:`\Theta = 2\pi U_2` give two independent
    standard normals :math:`R\cos\Theta` and :math:`R\sin\Theta`. ``1 − U₁`` lies in
    ``(0, 1]``, so the log is finite. Its nine vectorised ufunc calls (the log, sqrt, cos and
    sin among them) cost about 2.5× less here than NumPy's ziggurat ``standard_normal`` in
    float32.

    The uniforms have ``out``'s precision: in float32 they are multiples of ``2⁻²⁴``, so
    ``|z| ≤ √(48 log 2) ≈ 5.77`` (the mass cut off beyond is ``8·10⁻⁹``), as in PyTorch's CPU
    float32 sampler; in float64 the cap is ``8.57``. (CuPy generators use cuRAND's own
    sampler, whose 32-bit uniforms cap at ≈ 6.76.)
    """
    if not isinstance(out, np.ndarray) or out.ndim != 1 or out.dtype not in (np.float32,
                                                                             np.float64):
        raise TypeError("box_muller: out must be a 1-d float32/float64 NumPy array, got "
                        f"{type(out).__name__} {getattr(out, 'shape', '')} "
                        f"{getattr(out, 'dtype', '')} (CuPy: use standard_normal, which calls "
                        "the generator's own sampler)")
    n = out.size
    h = (n + 1) // 2  # pairs; an odd n drops the last sine
    u = rng.random(2 * h, dtype=out.dtype)
    radius, angle = u[:h], u[h:]
    np.subtract(1, radius, out=radius)
    np.log(radius, out=radius)
    radius *= -2
    np.sqrt(radius, out=radius)
    angle *= _TWO_PI
    np.cos(angle, out=out[:h])
    out[:h] *= radius
    np.sin(angle[:n - h], out=out[h:])
    out[h:] *= radius[:n - h]
    return out


def standard_normal(rng: Any, shape: tuple, dtype: Any = "float32") -> Any:
    """Standard normals of ``shape`` and ``dtype`` from ``rng``; on NumPy by :func:`box_muller`,
    on all CPU cores for large draws.

    On NumPy the values come from ``rng.random`` through :func:`box_muller` (float32 or
    float64). A large draw takes one seed from ``rng`` and fills fixed chunks of
    ``_NOISE_CHUNK`` values, chunk ``i`` from its own generator seeded with ``(seed, i)``
    (NumPy releases the GIL while it fills and computes). The values depend only on ``rng``'s
    state, never on the number of threads. CuPy generators call ``rng.standard_normal``
    (cuRAND's own fast sampler).
    """
    if not isinstance(rng, np.random.Generator):
        return rng.standard_normal(shape, dtype=dtype)
    size = int(np.prod(shape))
    out = np.empty(size, dtype=dtype)
    if out.dtype not in (np.float32, np.float64):
        raise TypeError(f"standard_normal draws float32 or float64, not {out.dtype}")
    if size < _NOISE_PARALLEL:
        return box_muller(rng, out).reshape(shape)
    from ._rowwise import parallel_for

    seed = child_seed(rng)
    starts = range(0, size, _NOISE_CHUNK)

    def fill(i: int) -> None:
        lo = starts[i]
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, i))))
        box_muller(g, out[lo:lo + _NOISE_CHUNK])

    parallel_for(fill, len(starts))
    return out.reshape(shape)


def stable_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends on ``seed`` only, on every NumPy version.

    NumPy promises a stable stream for its bit generators, not for ``Generator`` methods, so a
    split drawn by ``default_rng(seed).permutation(n)`` could change with NumPy. This is the
    same Fisher–Yates shuffle that NumPy 1.17–2.x runs there, written out over the PCG64 raw
    stream: for ``i = n−1 … 1`` draw a 32-bit value (the low, then the high half of each 64-bit
    output), mask it to ``i``'s bit length, redraw while it exceeds ``i``, then swap ``a[i]``
    and ``a[j]``. It gives the same permutation as that method for ``n < 2³²``.
    """
    for name, v in (("n", n), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"stable_permutation: {name} must be an int ≥ 0, got {v!r}")
    if n >= 2**32:
        raise ValueError(f"stable_permutation needs n < 2**32, got {n}")
    bits = np.random.PCG64(np.random.SeedSequence(seed))
    a = list(range(n))
    words: list[int] = []
    for i in range(n - 1, 0, -1):
        mask = (1 << i.bit_length()) - 1
        while True:
            if not words:  # next 64-bit outputs, each as its low then its high 32 bits
                words = [h for w in bits.random_raw(2048).tolist()
                         for h in (w & 0xFFFFFFFF, w >> 32)][::-1]
            j = words.pop() & mask
            if j <= i:
                break
        a[i], a[j] = a[j], a[i]
    return np.array(a, dtype=np.int64)
