import subprocess
import sys

import numpy as np
import pytest

import minivd
from minivd.backend import BackendUnavailableError, asarray, get_xp, resolve_backend, to_numpy


class FakeCupyArray:
    """Looks like a cupy.ndarray to get_xp (its module name starts with 'cupy')."""


FakeCupyArray.__module__ = "cupy._core.core"


def test_import_does_not_import_cupy():
    code = "import sys, minivd, minivd.layers, minivd.functional; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("first, env, expected", [
    ("minivd", None, "4"),  # imported before NumPy: OpenBLAS's idle threads sleep at once
    ("minivd", "28", "28"),  # the user's own setting wins
    ("numpy", None, "None"),  # NumPy (so OpenBLAS) already loaded: minivd leaves it alone
])
def test_openblas_thread_timeout_default(first, env, expected):
    import os

    code = (f"import os, {first}, minivd; "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env is not None:
        environ["OPENBLAS_THREAD_TIMEOUT"] = env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=environ)
    assert out.stdout.strip() == expected


def test_get_xp_numpy_and_ignores_none():
    assert get_xp(np.zeros(2), None, 1.0) is np
    assert get_xp() is np


def test_get_xp_mixed_backends_raise():
    with pytest.raises(TypeError, match="mixed backends"):
        get_xp(np.zeros(2), FakeCupyArray())


def test_get_xp_rejects_lists():
    with pytest.raises(TypeError, match="list"):
        get_xp([1.0, 2.0])


def test_resolve_backend_names():
    assert resolve_backend("numpy") is np
    with pytest.raises(ValueError, match="numpy"):
        resolve_backend("torch")


def test_cupy_missing_or_no_device_is_one_clear_error():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match=r"not installed.*\[gpu\]"):
            resolve_backend("cupy")
        return
    try:
        resolve_backend("cupy")
    except BackendUnavailableError as exc:
        assert "CUDA device" in str(exc)
    else:
        pytest.skip("CuPy and a CUDA device both work here: there is no error to check")


def test_to_numpy_and_asarray():
    a = np.arange(3.0)
    assert to_numpy(a) is a
    b = asarray([1, 2], "numpy", dtype="float32")
    assert b.dtype == np.float32


def test_make_rng_is_seeded_and_validates():
    a = minivd.make_rng(5).standard_normal(4)
    b = minivd.make_rng(5).standard_normal(4)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="seed"):
        minivd.make_rng(-1)
    with pytest.raises(ValueError, match="seed"):
        minivd.make_rng(1.5)


@pytest.mark.gpu
def test_get_xp_cupy_and_mixed(xp):
    if xp is np:
        pytest.skip("CuPy only")
    a = xp.zeros(3)
    assert get_xp(a) is xp
    with pytest.raises(TypeError, match="mixed backends"):
        get_xp(a, np.zeros(3))
    np.testing.assert_array_equal(to_numpy(a), np.zeros(3))


def test_parallel_noise_is_reproducible_and_independent_of_threads(monkeypatch):
    from minivd import _rowwise
    from minivd.random import standard_normal

    draws = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("MINIVD_NUM_THREADS", threads)
        monkeypatch.setattr(_rowwise, "_pool", None)
        draws.append(standard_normal(minivd.make_rng(3), (700, 400), np.float32))
    assert draws[0].dtype == np.float32 and draws[0].shape == (700, 400)
    np.testing.assert_array_equal(draws[0], draws[1])
    np.testing.assert_array_equal(draws[0], draws[2])
    # chunks come from distinct streams: no two chunks repeat each other
    flat = draws[0].reshape(-1)
    assert not np.array_equal(flat[: 1 << 16], flat[1 << 16: 2 << 16])
    # 280000 standard normals: mean within 5/sqrt(n), variance within 5*sqrt(2/n)
    n = flat.size
    assert abs(flat.mean()) < 5 / np.sqrt(n) and abs(flat.var() - 1) < 5 * np.sqrt(2 / n)


def test_rowwise_sums_are_the_same_bits_for_any_threads(monkeypatch):
    # the partial sums of the blocks are added in block order, whatever thread finished first
    # (the KL value in a training log would otherwise change in its last bits between runs)
    from minivd import _rowwise

    a = (np.random.default_rng(5).standard_normal((512, 784)) ** 3).astype(np.float32)
    rows = _rowwise._BLOCK_ELEMENTS // a.shape[1]
    want = np.sum([np.exp(a[lo:lo + rows] / 4).sum() for lo in range(0, len(a), rows)],
                  dtype=np.float32)
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("MINIVD_NUM_THREADS", threads)
        monkeypatch.setattr(_rowwise, "_pool", None)
        for _ in range(10):
            got = _rowwise.rowwise(lambda b: np.exp(b / 4).sum(), a)
            assert got.dtype == np.float32 and got == want


def test_a_thread_count_that_is_not_a_number_is_named(monkeypatch):
    from minivd import _rowwise

    monkeypatch.setenv("MINIVD_NUM_THREADS", "abc")
    with pytest.raises(ValueError, match="MINIVD_NUM_THREADS must be a whole number.*'abc'"):
        _rowwise.num_threads()
    monkeypatch.setenv("MINIVD_NUM_THREADS", "0")
    assert _rowwise.num_threads() == 1
