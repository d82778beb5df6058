"""Paired timing against a floor measured in the same run (shared by the speed benchmarks)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def synchronizer(xp: Any) -> Callable[[], None]:
    """A function that waits for the device (a no-op on NumPy)."""
    if xp.__name__.split(".")[0] == "cupy":
        return lambda: xp.cuda.Stream.null.synchronize()
    return lambda: None


def paired(op: Callable[[], Any], floor: Callable[[], Any], pairs: int, sync: Callable[[], None],
           warmup: int = 3) -> dict[str, float]:
    """Alternate ``op`` and ``floor`` ``pairs`` times; medians of per-pair ratios and of times."""
    for _ in range(warmup):
        op()
        floor()
    sync()
    ratios, t_op, t_floor = [], [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        op()
        sync()
        t1 = time.perf_counter()
        floor()
        sync()
        t2 = time.perf_counter()
        t_op.append(t1 - t0)
        t_floor.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return {
        "ratio": statistics.median(ratios),
        "op_ms": 1e3 * statistics.median(t_op),
        "floor_ms": 1e3 * statistics.median(t_floor),
    }


def bench_parser(doc: str, default_pairs: int) -> Any:
    """The arguments every speed benchmark takes: --backend, --pairs, --quick."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--pairs", type=int, default=default_pairs)
    ap.add_argument("--quick", action="store_true", help="the first shape only, 5 pairs")
    return ap


def device_name(xp: Any) -> str:
    """The GPU's name on CuPy, the processor's on NumPy."""
    import platform

    if xp.__name__.split(".")[0] == "cupy":
        return xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return platform.processor() or platform.machine()
