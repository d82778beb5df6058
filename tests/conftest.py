"""Shared fixtures: the array backend, and hypothesis profiles chosen by environment."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minivd import _data_sources
from minivd.backend import BackendUnavailableError, resolve_backend
from minivd.data import data_dir

settings.register_profile("dev", max_examples=25, deadline=None)
# CI: a fixed, reproducible set of examples (derandomize) and no wall-clock deadline.
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# GPU runs: every finite-difference evaluation is a round of kernel launches, so fewer examples
settings.register_profile("gpu", max_examples=4, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session", params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: NumPy always; CuPy (marked ``gpu``) when a device exists."""
    try:
        return resolve_backend(request.param)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


# MINIVD_CUPY_STANDIN=1: NumPy stands in for CuPy in the ``cp`` fixture, so the GPU-only test
# files run on a CPU (tests/test_gpu_standin.py). That says nothing about CuPy, but every call
# they make must still exist and run, so a change that breaks them shows up without a GPU.
STANDIN = os.environ.get("MINIVD_CUPY_STANDIN") == "1"


def _stand_in_for_cupy(mp: pytest.MonkeyPatch) -> None:
    """Make ``resolve_backend("cupy")`` return NumPy in every minivd module that imported it."""
    real = resolve_backend

    def standin(backend):
        return np if backend == "cupy" else real(backend)

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "minivd" and getattr(module, "resolve_backend", None) is real:
            mp.setattr(module, "resolve_backend", standin)


@pytest.fixture(scope="module")
def cp():
    """The CuPy module, for the parity tests (marked ``gpu``); skips without a device."""
    if STANDIN:
        with pytest.MonkeyPatch.context() as mp:
            _stand_in_for_cupy(mp)
            yield np
        return
    try:
        module = resolve_backend("cupy")
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    yield module


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """For the data tests: an empty cache in ``$MINIVD_DATA``, a private tempdir, no system
    Fashion-MNIST, a tiny validation split (``data_helpers.N_VALID``), and pip must not run."""
    from .data_helpers import N_VALID

    def no_pip(args):
        raise AssertionError(f"pip must not run here: {args}")

    monkeypatch.setenv("MINIVD_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(_data_sources, "SYSTEM_FASHION_DIRS", (tmp_path / "system",))
    monkeypatch.setattr(_data_sources, "N_VALID", N_VALID)
    monkeypatch.setattr(_data_sources, "run_pip", no_pip)
    return data_dir()
