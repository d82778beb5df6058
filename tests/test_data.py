"""Data loading on generated files only: the cache folder, IDX files, the Fashion-MNIST
split, the other data set's files; real MNIST is ``slow``. Bad cache and wheel files are in
``test_data_files.py``, minibatches in ``test_batches.py``."""

from __future__ import annotations

import hashlib
import shlex

import numpy as np
import pytest

from minivd import _data_sources as sources
from minivd.data import DataError, data_dir, load_dataset, load_fashion_mnist, load_mnist

from .data_helpers import (
    N_TEST,
    N_TRAIN,
    N_VALID,
    check_dataset,
    images,
    listing,
    train_labels_digest,
    write_idx,
    write_idx_set,
)

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
