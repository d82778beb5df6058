"""Every tutorial runs top to bottom in its fast setting and writes at least one figure.

Each tutorial is run as a script (``__main__``) in a fresh interpreter, in a temporary working
directory, with ``MINIVD_FAST=1``. The tutorials assert their own numbers, so a wrong claim
fails here. The default run uses generated digits only: ``MINIVD_DATA`` points at an empty
folder (in the fast setting the tutorials never download; ``PIP_NO_INDEX`` makes sure). The
``slow`` variant repeats the data-hungry tutorials on the real MNIST cache, when there is one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def run_tutorial(path: Path, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MINIVD_BACKEND", None)  # NumPy: the default suite needs no GPU
    env.update(MINIVD_FAST="1", MINIVD_DATA=str(data_dir), PIP_NO_INDEX="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    # One BLAS thread: the fast runs use small matrices, and OpenBLAS threads that spin while
    # waiting slow everything down many times over when other jobs share the cores.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-W", "error::RuntimeWarning", str(path)], cwd=cwd,
                          env=env, capture_output=True, text=True)


def check_run(path: Path, cwd: Path, data_dir: Path) -> None:
    proc = run_tutorial(path, cwd, data_dir)
    assert proc.returncode == 0, (
        f"{path.name} failed (exit {proc.returncode})\n--- stdout (end) ---\n"
        f"{proc.stdout[-4000:]}\n--- stderr (end) ---\n{proc.stderr[-6000:]}")
    figures = sorted(p.name for p in cwd.glob("*.png"))
    assert figures, f"{path.name} wrote no PNG figure into its working directory"
    assert all(f.startswith(path.name[:3]) for f in figures), figures  # "NN_" prefix


def test_tutorials_are_found():
    assert len(TUTORIALS) >= 7, [p.name for p in TUTORIALS]
    assert [p.name[:2] for p in TUTORIALS] == [f"{i:02d}" for i in range(1, len(TUTORIALS) + 1)]


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_fast_on_generated_data(path, tmp_path):
    data_dir = tmp_path / "empty-data-cache"
    data_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    check_run(path, work, data_dir)
    assert not any(data_dir.iterdir()), "a tutorial wrote into the data cache (a download?)"


def _mnist_cache() -> Path | None:
    env = os.environ.get("MINIVD_DATA")
    folder = Path(env).expanduser() if env else Path.home() / ".cache" / "minivd"
    return folder if (folder / "mnist.npz").is_file() else None


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_fast_on_cached_mnist(path, tmp_path):
    if "tutorial_data" not in path.read_text(encoding="utf-8"):
        pytest.skip("this tutorial uses no digit data")
    cache = _mnist_cache()
    if cache is None:
        pytest.skip("no MNIST cache (mnist.npz) in $MINIVD_DATA or ~/.cache/minivd")
    check_run(path, tmp_path, cache)
