"""Paired timing against a floor measured in the same run (shared by the speed benchmarks)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def paired(op: Callable[[], Any], floor: Callable[[], Any], pairs: int, sync: Callable[[], None],
           warmup: int = 3, alt: Callable[[], Any] | None = None) -> dict[str, float]:
    """Alternate ``op`` and ``floor`` (and ``alt``, a second floor) ``pairs`` times; medians of
    the per-round ratios and of the times.

    The order within a round flips every round (op first, then the floors first), so neither
    side always runs in the other's wake (caches, a BLAS pool just woken or just asleep); with
    an odd number of rounds the op goes first once more than the floors."""
    steps = {"op": op, "floor": floor} if alt is None else {"op": op, "floor": floor, "alt": alt}
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    for r in range(pairs):
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            steps[k]()
            sync()
            times[k].append(time.perf_counter() - t0)
    out = {"ratio": statistics.median(o / f for o, f in zip(times["op"], times["floor"])),
           "op_ms": 1e3 * statistics.median(times["op"]),
           "floor_ms": 1e3 * statistics.median(times["floor"])}
    if alt is not None:
        out["ratio_alt"] = statistics.median(o / f for o, f in zip(times["op"], times["alt"]))
        out["alt_ms"] = 1e3 * statistics.median(times["alt"])
    return out


def bench_parser(doc: str, default_pairs: int) -> Any:
    """The arguments every speed benchmark takes: --backend, --pairs, --quick."""
    ap = _MinPairsParser(description=doc.splitlines()[0], least=default_pairs)
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--pairs", type=int, default=default_pairs,
                    help=f"at least {default_pairs} (the issue's minimum)")
    ap.add_argument("--quick", action="store_true",
                    help="the first shape only, 5 pairs (a smoke test, not a measurement)")
    return ap


class _MinPairsParser(argparse.ArgumentParser):
    """Refuses fewer pairs than the issue asks for, except with --quick."""

    def __init__(self, *a: Any, least: int, **k: Any) -> None:
        super().__init__(*a, **k)
        self.least = least

    def parse_args(self, *a: Any, **k: Any) -> Any:  # type: ignore[override]
        args = super().parse_args(*a, **k)
        if args.pairs < self.least and not args.quick:
            self.error(f"--pairs must be at least {self.least} (got {args.pairs}); "
                       "--quick runs a 5-pair smoke test")
        return args


def device_name(xp: Any) -> str:
    """The GPU's name on CuPy, the processor's on NumPy."""
    import platform

    if xp.__name__.split(".")[0] == "cupy":
        return xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return platform.processor() or platform.machine()
