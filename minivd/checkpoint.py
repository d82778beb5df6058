"""Checkpoints: one ``.npz`` of plain arrays plus a JSON string, written atomically.

Layout: ``param/<name>``, ``opt/<name>/<m|v|u>``, ``avg/<name>`` arrays (host NumPy) and
``meta``, a JSON document (config, position in training, generator states, history). Loaded
with ``allow_pickle=False``; a file that is truncated, corrupt or made for another model is
refused with a :class:`CheckpointError`, never half-loaded. :func:`write_json` writes the
metrics and result files the same atomic way.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "write_json", "fingerprint",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, Any], meta: dict) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: to_numpy(v) for k, v in arrays.items()}
    payload["meta"] = np.array(json.dumps({**meta, "format": FORMAT_VERSION}))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(arrays, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            f"delete it (rm '{path}') and train again without --resume"
        ) from None
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no 'meta' entry: not a minivd checkpoint")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its metadata is a JSON "
                              f"{type(meta).__name__}, not an object: not a minivd checkpoint")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')}, "
                              f"this minivd reads format {FORMAT_VERSION}")
    return arrays, meta


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomic JSON write (temp file, then rename); arrays are written as lists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=lambda o: to_numpy(o).tolist()))
    tmp.replace(path)


def fingerprint(*arrays: Any) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes (~0.1 s for MNIST's training set)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(to_numpy(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
