"""Run an elementwise function over row blocks of large NumPy arrays, on all CPU cores.

Weight-sized elementwise work (the K15 map, the KL and its derivative, optimiser updates)
costs as much as the matrix products on a CPU: each NumPy ufunc streams its arrays through
main memory once and runs on one core. :func:`rowwise` cuts the arrays into row blocks that
stay in cache (so a chain of ufuncs reads memory once, not once per ufunc) and hands
contiguous runs of blocks to a thread pool (NumPy ufuncs release the GIL).

The function is the reference math itself, so nothing is written twice: ``rowwise(f, a, b)``
returns exactly ``f(a, b)`` for elementwise ``f``. CuPy arrays, small arrays and arrays of
different leading dimension go straight to ``f``.

The pool is created once, lazily; it holds no numerical state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["rowwise", "num_threads"]

_BLOCK_ELEMENTS = 1 << 16  # elements per block per array: 256 KiB of float32, stays in L2
_MIN_PARALLEL = 1 << 17  # below this, threads cost more than they save
_pool: ThreadPoolExecutor | None = None


def num_threads() -> int:
    """Threads used by :func:`rowwise`: ``MINIVD_NUM_THREADS`` or the number of CPUs."""
    v = os.environ.get("MINIVD_NUM_THREADS")
    if v is None:
        return os.cpu_count() or 1
    try:
        return max(1, int(v))
    except ValueError:
        raise ValueError(f"MINIVD_NUM_THREADS must be a whole number of threads, got {v!r}"
                         ) from None


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=num_threads(), thread_name_prefix="minivd")
    return _pool


def rowwise(fn: Callable[..., Any], *arrays: Any, out: int | tuple | None = None) -> Any:
    """``fn(*arrays)``, evaluated block by block over the leading axis on a thread pool.

    ``fn`` must be elementwise along axis 0: row ``i`` of each result depends only on row ``i``
    of the inputs. ``None`` inputs are passed through. Two kinds of ``fn``:

    * ``out=k`` (an int) or ``out=(arrays...)``: ``fn(*blocks, out=out_blocks)`` writes its
      ``k`` results into the given blocks (ufuncs' ``out=``), so nothing is copied; with an int,
      the outputs are allocated like ``arrays[0]``. Unblocked, ``fn(*arrays, out=None)`` (int)
      or ``fn(*arrays, out=out)`` is called and its return value returned.
    * ``out=None``: ``fn`` returns 0-d partial sums, added up over the blocks (so
      ``rowwise(lambda a: f(a).sum(), a)`` never builds ``f(a)`` in full).
    """
    lead = arrays[0]
    present = [a for a in arrays if a is not None]
    if isinstance(out, tuple):
        present += list(out)
    if (
        not isinstance(lead, np.ndarray)
        or lead.size < _MIN_PARALLEL
        or any(not isinstance(a, np.ndarray) or a.ndim == 0 or a.shape[0] != lead.shape[0]
               for a in present)
    ):
        if out is None:
            return fn(*arrays)
        return fn(*arrays, out=None if isinstance(out, int) else out)
    n = lead.shape[0]
    rows = max(1, _BLOCK_ELEMENTS // max(1, lead.size // n))
    blocks = [(i, lo, min(n, lo + rows)) for i, lo in enumerate(range(0, n, rows))]
    outs = tuple(np.empty_like(lead) for _ in range(out)) if isinstance(out, int) else out
    # one slot per block, summed in block order: the sum never depends on the threads
    partial: list[Any] = [None] * len(blocks)

    def run(span: list[tuple[int, int, int]]) -> None:
        for i, lo, hi in span:
            args = (None if a is None else a[lo:hi] for a in arrays)
            if outs is None:
                partial[i] = fn(*args)
            else:
                fn(*args, out=tuple(o[lo:hi] for o in outs))

    t = min(num_threads(), len(blocks))
    size = -(-len(blocks) // t)
    spans = [blocks[i:i + size] for i in range(0, len(blocks), size)]
    futures = [_get_pool().submit(run, sp) for sp in spans[1:]]
    run(spans[0])  # the calling thread takes the first span
    for f in futures:
        f.result()
    if outs is None:
        return np.sum(partial, dtype=partial[0].dtype)
    return outs[0] if len(outs) == 1 else outs


def parallel_for(body: Callable[[int], None], n: int) -> None:
    """Run ``body(i)`` for ``i`` in ``range(n)``, split in contiguous runs over the pool."""
    t = min(num_threads(), n)
    size = -(-n // max(t, 1))

    def run(lo: int) -> None:
        for i in range(lo, min(n, lo + size)):
            body(i)

    futures = [_get_pool().submit(run, lo) for lo in range(size, n, size)]
    run(0)
    for f in futures:
        f.result()
