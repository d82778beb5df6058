"""The MNIST-figure script: cells stored, skipped, stopped and resumed, on generated data
(the real cells are the results page's)."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "paper"))

from .test_cli import blobs_file  # noqa: E402


def _no_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _stop_in_epoch_2(monkeypatch):
    """From now on the 2nd ``Trainer.train_epoch`` call raises KeyboardInterrupt, as Ctrl-C
    does (the fit loop saves a checkpoint and re-raises); returns what undoes it."""
    from minivd.train import Trainer

    calls = {"n": 0}
    train_epoch = Trainer.train_epoch

    def stopping(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return train_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", stopping)
    return lambda: monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


def test_mnist_figure_cells_are_stored_and_skipped(tmp_path):
    import mnist_figure

    f = blobs_file(tmp_path / "blobs.npz")
    args = ["--methods", "vd-b", "none", "--widths", "8", "--epochs", "2", "--data-file", str(f),
            "--results", str(tmp_path / "res")]
    assert mnist_figure.main(args) == 0
    cells = mnist_figure.load_cells(tmp_path / "res")
    assert {c["method"] for c in cells} == {"vd-b", "none"}
    for c in cells:
        assert 1 <= c["best_epoch"] <= 2 and 0 <= c["test_error"] <= 1
    assert (tmp_path / "res" / "mnist_figure.png").exists()
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "res").glob("*.json")}
    assert mnist_figure.main(args) == 0  # nothing left to run: files untouched
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "res").glob("*.json")}
    with pytest.raises(SystemExit):
        mnist_figure.parse(["--methods", "bayes"])


def test_mnist_figure_cell_stopped_then_resumed_equals_uninterrupted(tmp_path, monkeypatch,
                                                                      capsys):
    import mnist_figure

    f = blobs_file(tmp_path / "blobs.npz")
    base = ["--methods", "vd-b", "--widths", "8", "--epochs", "3", "--data-file", str(f)]
    assert mnist_figure.main([*base, "--results", str(tmp_path / "a")]) == 0
    (whole,) = mnist_figure.load_cells(tmp_path / "a")

    train_on = _stop_in_epoch_2(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        mnist_figure.main([*base, "--results", str(tmp_path / "b")])
    assert mnist_figure.load_cells(tmp_path / "b") == []  # no record for an unfinished cell
    train_on()
    capsys.readouterr()
    assert mnist_figure.main([*base, "--results", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "vd-b w=8 seed=0: resuming after epoch 1 of 3" in out
    assert "vd-b w=8 seed=0: epoch 3/3, valid" in out and "epoch 1/3" not in out
    (resumed,) = mnist_figure.load_cells(tmp_path / "b")
    assert resumed["resumed_from_epoch"] == 1 and whole["resumed_from_epoch"] == 0
    assert _no_seconds(resumed["history"]) == _no_seconds(whole["history"])  # bit-for-bit
    assert all("test_error" in h for h in whole["history"])
    for k in ("test_error", "best_epoch", "best_valid_error", "final_test_error"):
        assert resumed[k] == whole[k]
    best = min(whole["history"], key=lambda h: h["valid_error"])
    assert (whole["best_epoch"], whole["test_error"]) == (best["epoch"], best["test_error"])


def test_mnist_figure_p_input_trains_and_resumes_its_own_net(tmp_path, monkeypatch, capsys):
    import mnist_figure

    from minivd.train import Trainer

    f = blobs_file(tmp_path / "blobs.npz")
    base = ["--methods", "gaussian-b", "--widths", "8", "--epochs", "3", "--data-file", str(f)]
    input_log_alpha = []
    fit = Trainer.fit

    def fit_and_look(self, *a, **kw):  # the input layer's fixed α as training starts
        input_log_alpha.append(float(self.model.layers[0].log_alpha.max()))
        return fit(self, *a, **kw)

    monkeypatch.setattr(Trainer, "fit", fit_and_look)
    assert mnist_figure.main([*base, "--results", str(tmp_path / "recipe")]) == 0
    assert mnist_figure.main([*base, "--p-input", "0.5", "--results", str(tmp_path / "a")]) == 0
    assert input_log_alpha == [pytest.approx(np.log(0.25)), 0.0]  # α 0.25, then 1
    (recipe,) = mnist_figure.load_cells(tmp_path / "recipe")
    (whole,) = mnist_figure.load_cells(tmp_path / "a")
    assert whole["p_input"] == 0.5 and "p_input" not in recipe
    assert whole["history"][0]["train_ce"] != recipe["history"][0]["train_ce"]

    # stopped in epoch 2 and resumed: the resumed trainer has α = 1 on its input too
    train_on = _stop_in_epoch_2(monkeypatch)
    args_b = [*base, "--p-input", "0.5", "--results", str(tmp_path / "b")]
    with pytest.raises(KeyboardInterrupt):
        mnist_figure.main(args_b)
    train_on()
    assert mnist_figure.main(args_b) == 0
    (resumed,) = mnist_figure.load_cells(tmp_path / "b")
    assert resumed["resumed_from_epoch"] == 1 and input_log_alpha[-1] == 0.0
    assert _no_seconds(resumed["history"]) == _no_seconds(whole["history"])

    # the rate is part of the run's settings: a checkpoint or a cell made with another one
    # is refused, not continued or skipped
    from minivd.checkpoint import CheckpointError

    _stop_in_epoch_2(monkeypatch)
    args_c = [*base, "--p-input", "0.5", "--results", str(tmp_path / "c")]
    with pytest.raises(KeyboardInterrupt):
        mnist_figure.main(args_c)
    with pytest.raises(CheckpointError, match="other settings.*p_input"):
        mnist_figure.main([*base, "--results", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="another --p-input"):
        mnist_figure.main([*base, "--p-input", "0.3", "--results", str(tmp_path / "b")])
    for bad, says in ((["--p-input", "1.5", "--results", str(tmp_path / "d")], "in \\(0, 1\\)"),
                      (["--p-input", "0.5"], "own --results")):  # not the figure's folder
        with pytest.raises(SystemExit):
            mnist_figure.parse(bad)
        assert re.search(says, capsys.readouterr().err)


def test_mnist_figure_restarts_a_cell_whose_checkpoint_lacks_test_errors(tmp_path, capsys):
    import mnist_figure

    from minivd.checkpoint import load_checkpoint, save_checkpoint

    f = blobs_file(tmp_path / "blobs.npz")
    args = ["--methods", "none", "--widths", "8", "--epochs", "1", "--data-file", str(f),
            "--results", str(tmp_path / "res")]
    assert mnist_figure.main(args) == 0
    (cell,) = (tmp_path / "res").glob("*.json")
    cell.unlink()
    ckpt = tmp_path / "res" / "runs" / "none_w8_s0" / "checkpoint.npz"
    arrays, meta = load_checkpoint(ckpt)
    for h in meta["history"]:  # as the script wrote them before it kept per-epoch test errors
        del h["test_error"]
    save_checkpoint(ckpt, arrays, meta)
    capsys.readouterr()
    assert mnist_figure.main(args) == 0
    assert "has no per-epoch test error; starting the cell over" in capsys.readouterr().out
    rec = json.loads(cell.read_text())
    assert rec["resumed_from_epoch"] == 0 and "test_error" in rec["history"][0]
