"""Array backends: NumPy always, CuPy when asked for and usable.

The backend follows the data: every op calls :func:`get_xp` on its input arrays and uses the
module it returns. A backend is *named* only where arrays or generators are created
(:func:`resolve_backend`). Importing :mod:`minivd` never imports CuPy; asking for CuPy when it is
missing, or when no CUDA device is usable, raises :class:`BackendUnavailableError` saying which
and how to fix it. There is no silent fallback to NumPy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "BackendUnavailableError",
    "get_xp",
    "resolve_backend",
    "to_numpy",
    "asarray",
    "backend_name",
    "is_cupy_array",
    "synchronizer",
]

BACKENDS = ("numpy", "cupy")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine (the message says why and how to fix)."""


def is_cupy_array(a: Any) -> bool:
    """True for a ``cupy.ndarray`` (checked by type name, so CuPy is never imported here)."""
    return type(a).__module__.split(".")[0] == "cupy"


def get_xp(*arrays: Any) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) that holds ``arrays``.

    ``None`` and Python scalars are ignored. Mixing NumPy and CuPy arrays raises ``TypeError``:
    move data explicitly (``cupy.asarray`` / :func:`to_numpy`) instead of relying on a hidden
    transfer.
    """
    kinds = set()
    for a in arrays:
        if a is None or isinstance(a, (bool, int, float)):
            continue
        if is_cupy_array(a):
            kinds.add("cupy")
        elif isinstance(a, (np.ndarray, np.generic)):
            kinds.add("numpy")
        else:
            raise TypeError(f"expected a NumPy or CuPy array, got {type(a).__name__}")
    if len(kinds) > 1:
        raise TypeError(
            "mixed backends: some inputs are NumPy arrays and some are CuPy arrays; "
            "move them to one device first (cupy.asarray(...) or minivd.to_numpy(...))"
        )
    if kinds == {"cupy"}:
        return sys.modules["cupy"]
    return np


def resolve_backend(name: str | ModuleType) -> ModuleType:
    """Return the array module for a backend name, ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    ValueError
        For an unknown name.
    BackendUnavailableError
        When CuPy is not installed, or is installed but finds no usable CUDA device.
    """
    if isinstance(name, ModuleType):
        name = name.__name__
    if name == "numpy":
        return np
    if name != "cupy":
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'cupy' asked for, but CuPy is not installed: install the GPU extra with "
            "pip install -e \".[gpu]\" (or the cupy-cudaXXx wheel that matches your CUDA "
            f"driver), or use backend 'numpy'. ({exc})"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing driver library, ...
        raise BackendUnavailableError(
            "backend 'cupy' asked for: CuPy is installed but no usable CUDA device was found "
            f"({type(exc).__name__}: {exc}); check the NVIDIA driver with nvidia-smi, or use "
            "backend 'numpy'"
        ) from exc
    if count < 1:
        raise BackendUnavailableError(
            "backend 'cupy' asked for: CuPy is installed but reports 0 CUDA devices; "
            "check the NVIDIA driver with nvidia-smi, or use backend 'numpy'"
        )
    return cupy


def backend_name(xp: ModuleType) -> str:
    """``"numpy"`` or ``"cupy"`` for an array module."""
    return "cupy" if xp.__name__.split(".")[0] == "cupy" else "numpy"


def synchronizer(xp: ModuleType) -> Callable[[], None]:
    """A function that waits for the device's current stream (a no-op on NumPy): call it
    before reading a clock, as CuPy returns from a kernel launch before the kernel ends."""
    if backend_name(xp) == "cupy":
        return lambda: xp.cuda.get_current_stream().synchronize()
    return lambda: None


def to_numpy(a: Any) -> np.ndarray:
    """Copy a CuPy array to the host, or return a NumPy array as it is."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def asarray(a: Any, xp: ModuleType | str, dtype: Any = None) -> Any:
    """Place ``a`` on the backend ``xp`` (module or name), optionally casting to ``dtype``."""
    xp = resolve_backend(xp) if isinstance(xp, str) else xp
    if backend_name(xp) == "numpy":
        return np.asarray(to_numpy(a), dtype=dtype)
    return xp.asarray(a, dtype=dtype)
