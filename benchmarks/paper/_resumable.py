"""Table 1's estimates that survive a stop: the signal flag checked between minibatches, and
the saved state of an estimate in progress (used by :mod:`table1`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from _variance import VarianceSums

from minivd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["StopFlag", "stop_on_signals", "save_measuring", "load_measuring"]


class StopFlag:
    """Set by SIGINT/SIGTERM while measuring (:func:`stop_on_signals`); checked between
    minibatches, so a stop never leaves the sums half-updated."""

    requested = False


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag):
    """Route SIGINT and SIGTERM to ``flag`` (main thread only; elsewhere nothing changes).
    The first signal says so and lets the minibatch in progress finish; a second one stops at
    once (the last periodic save is kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        print(f"{signal.Signals(signum).name}: stopping after the minibatch in progress "
              "(its state is then saved; signal again to stop now)", flush=True)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def save_measuring(path: Path, settings: dict | None, acc: VarianceSums, host, rng,
                   xp) -> None:
    """Save an estimate in progress: its sums (``acc``), the generators' states (the noise
    generator's on NumPy only) and ``settings``, atomically."""
    meta = {"settings": settings, "done": acc.count, "host_state": host.bit_generator.state,
            "noise_state": rng.bit_generator.state if xp.__name__ == "numpy" else None}
    save_checkpoint(path, acc.arrays(), meta)


def load_measuring(path: Path, settings: dict | None, xp) -> tuple:
    """``(sums, host state, noise state)`` of a saved estimate; SystemExit, naming the fix,
    for one made with other settings or damaged (or by a version without the standard
    error's increments)."""
    try:
        arrays, meta = load_checkpoint(path)
        acc = VarianceSums.from_arrays(arrays, 2, meta["done"], xp)
        host_state, noise_state = meta["host_state"], meta["noise_state"]
        saved = meta["settings"]
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise SystemExit(f"table1.py: {path} cannot be read ({type(exc).__name__}: {exc}; a "
                         "file written before session 10 has no standard-error increments): "
                         "remove it (that estimate starts again)") from None
    if isinstance(saved, dict) and "net" not in saved and settings is not None:
        # written before the net's fingerprint was recorded (session 8's first version)
        settings = {k: v for k, v in settings.items() if k != "net"}
    if saved != settings:
        raise SystemExit(f"table1.py: {path} was made with {saved}, not {settings}: remove it "
                         "(that estimate starts again) or choose another --out")
    return acc, host_state, noise_state
