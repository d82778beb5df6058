"""The GPU-only tests, run on the CPU with NumPy standing in for CuPy.

``tests/test_gpu_parity.py`` and ``tests/test_conv_gpu.py`` compare NumPy with CuPy and run
only where a GPU is lent, which is rare. Here they run with ``MINIVD_CUPY_STANDIN=1`` (see
``conftest.py``): the comparisons become NumPy against NumPy and check nothing about CuPy, but
every function, argument and fake generator they use must still work, so an API change that
would break them on the GPU machine fails here first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_ONLY = ["tests/test_gpu_parity.py", "tests/test_conv_gpu.py"]


def test_gpu_only_tests_run_with_numpy_standing_in_for_cupy():
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # CI's profile overrides "gpu"
    env.update(MINIVD_CUPY_STANDIN="1", HYPOTHESIS_PROFILE="gpu")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-o", "addopts=", "-m", "gpu", "-rs", *GPU_ONLY],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    tail = r.stdout[-4000:] + r.stderr[-2000:]
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and "skipped" not in r.stdout and "error" not in r.stdout, tail
