"""Shared fixtures: the array backend, and hypothesis profiles chosen by environment."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from minivd.backend import BackendUnavailableError, resolve_backend

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


@pytest.fixture(scope="module")
def cp():
    """The CuPy module, for the parity tests (marked ``gpu``); skips without a device."""
    try:
        return resolve_backend("cupy")
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
