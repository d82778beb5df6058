"""``benchmarks/paper/table1_gap.py``: the full-data gradient at one shared weight sample, and
a tiny run beside a tiny ``table1.py`` run (generated data)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "paper"))
import table1  # noqa: E402
import table1_gap  # noqa: E402

from .test_cli import blobs_file  # noqa: E402


def test_every_chunk_sees_the_same_weight_sample():
    """Chunks of 7 (the last one short) give the one-pass gradient (float64: to rounding); a
    version that drew a new sample per chunk would differ at the level of the noise, which a
    second seed measures."""
    from minivd.model import build_mlp

    r = np.random.default_rng(0)
    x, y = r.random((40, 300)), r.integers(0, 3, 40)
    # 300·256 > 65,536 weights: the bottom layer's draw takes the parallel path of
    # minivd.random.standard_normal (child generators), as the real 784×1000 layer does
    model = build_mlp([300, 256, 3], "vd-b", seed=0, dtype="float64")
    whole = table1_gap.full_gradient(model, x, y, [1, 5, 0], 40, np)
    chunked = table1_gap.full_gradient(model, x, y, [1, 5, 0], 7, np)
    other = table1_gap.full_gradient(model, x, y, [1, 5, 1], 40, np)
    for a, b, c in zip(whole, chunked, other):
        scale = np.abs(a - c).max()  # what another weight sample moves
        assert scale > 1e-3 * np.abs(a).max()
        assert np.abs(a - b).max() < 1e-9 * scale
    assert all(layer.sampler == "lrt" for layer in model.layers if hasattr(layer, "sampler"))
    with pytest.raises(ValueError, match="VariationalDense and ReLU"):  # activation noise
        table1_gap.full_gradient(build_mlp([300, 8, 3], "dropout"), x, y, [1], 7, np)


def test_tiny_run_beside_table1(tmp_path):
    f = blobs_file(tmp_path / "blobs.npz")
    run = tmp_path / "run"
    common = ["--data-file", str(f), "--width", "8", "--out", str(run)]
    with pytest.raises(SystemExit, match="cannot be read"):  # table1.py has not run yet
        table1_gap.main([*common, "--samples", "3"])
    table1.main([*common, "--epochs", "1", "--k", "3", "--m", "60", "--speed-steps", "0"])
    r = table1_gap.main([*common, "--samples", "4", "--chunk", "70", "--json",
                         str(tmp_path / "gap.json")])
    assert (r["epoch"], r["m"], r["samples"], r["examples"]) == (1, 60, 4, 300)
    for w in ("bottom", "top"):
        assert r["full_gradient_variance"][w] > 0 and r["full_gradient_variance_se"][w] > 0
        assert r["predicted_gap"][w] == pytest.approx((1 - 1 / 60) * r["full_gradient_variance"][w])
        assert r["measured_gap_se"][w] > 0  # table1.py stored the standard errors
        assert np.isfinite(r["z"][w]) and r["measured_gap_se_kind"][w] == "paired"
    assert (tmp_path / "gap.json").exists()
    with pytest.raises(SystemExit, match="other settings"):  # another width
        table1_gap.main([*common[:3], "9", "--out", str(run), "--samples", "3"])
    stored = json.loads((run / "measured.json").read_text())
    stored["settings"]["width"] = 9  # a measured.json from another run beside this checkpoint
    (run / "measured.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="was measured with"):
        table1_gap.main([*common, "--samples", "3"])


def test_arguments():
    assert table1_gap.parse(["--width", "64"]).out == Path("runs/table1/w64_s0")
    for bad in (["--samples", "2"], ["--chunk", "0"]):
        with pytest.raises(SystemExit):
            table1_gap.parse(bad)
