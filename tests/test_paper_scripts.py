"""The paper scripts: argument parsing and one tiny run on generated data (the real runs are
`slow`)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "paper"))
import table1  # noqa: E402

from .test_cli import blobs_file  # noqa: E402


def test_table1_arguments():
    a = table1.parse(["--quick"])
    assert (a.width, a.train_limit, a.k, a.m, a.epochs) == (128, 10_000, 100, 1000, [3])
    assert table1.parse(["--epochs", "100", "10"]).epochs == [10, 100]
    with pytest.raises(SystemExit):
        table1.parse(["--k", "1"])


def test_table1_tiny_run_writes_the_schema(tmp_path):
    f = blobs_file(tmp_path / "blobs.npz")
    out = tmp_path / "t1.json"
    table1.main(["--data-file", str(f), "--width", "8", "--epochs", "1", "--k", "3", "--m", "60",
                 "--speed-steps", "1", "--out", str(tmp_path / "run"), "--json", str(out)])
    r = json.loads(out.read_text())
    cell = r["epochs"]["1"]
    for w in ("top", "bottom"):
        assert set(cell[w]) == set(table1.ESTIMATORS)
        assert all(v >= 0 for v in cell[w].values())
        # noise adds variance: only minibatch resampling moves the noise-free estimator, and
        # the shared weight sample adds its own; with K = 3 each element's variance has 2
        # degrees of freedom, but averaged over 80 (top) or 6272 (bottom) elements the ratio
        # measured 31–770× over seeds 0–5 (the full ordering at K = 3 is not safe, only this)
        assert cell[w]["mean"] < cell[w]["shared_weights"]
    assert set(r["seconds_per_epoch"]) == set(table1.ESTIMATORS)
    for w in ("top", "bottom"):  # K = 3: two increments each, whose mean is the variance
        for est, v in cell[w].items():
            inc = r["increments"]["1"][w][est]
            assert len(inc) == 2 and np.mean(inc) == pytest.approx(v, rel=1e-9)
            assert r["standard_errors"]["1"][w][est] > 0


def _tiny_table1(tmp_path, out, *extra):
    f = tmp_path / "blobs.npz"
    if not f.exists():
        blobs_file(f)
    return table1.main(["--data-file", str(f), "--width", "8", "--k", "3", "--m", "60",
                        "--speed-steps", "0", "--out", str(tmp_path / out), *extra])


def test_table1_default_out_names_the_run():
    assert table1.parse(["--width", "64"]).out == Path("runs/table1/w64_s0")
    assert table1.parse(["--quick"]).out == Path("runs/table1/w128_s0_n10000")


def test_table1_same_command_continues_a_stopped_run(tmp_path, capsys):
    whole = _tiny_table1(tmp_path, "whole", "--epochs", "1", "2", "3")
    _tiny_table1(tmp_path, "split", "--epochs", "1", "2")  # a run stopped after epoch 2
    capsys.readouterr()
    cont = _tiny_table1(tmp_path, "split", "--epochs", "1", "2", "3")
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert cont["resumed_from_epoch"] == 2
    # epochs 1 and 2 come from measured.json, epoch 3 is trained on from the checkpoint: on
    # NumPy the continued run gives the uninterrupted run's values exactly
    assert cont["epochs"] == whole["epochs"]
    assert whole["resumed_from_epoch"] == 0


def test_table1_refuses_a_folder_it_cannot_continue(tmp_path):
    _tiny_table1(tmp_path, "r", "--epochs", "2")
    with pytest.raises(SystemExit, match="never measured"):  # epoch 1 was trained past
        _tiny_table1(tmp_path, "r", "--epochs", "1", "3")
    with pytest.raises(SystemExit, match="measured with"):  # other K: not the same estimate
        _tiny_table1(tmp_path, "r", "--epochs", "2", "--k", "4")
    with pytest.raises(SystemExit, match="choose another --out"):  # another net, same folder
        table1.main(["--data-file", str(tmp_path / "blobs.npz"), "--width", "9", "--k", "3",
                     "--m", "60", "--speed-steps", "0", "--epochs", "3",
                     "--out", str(tmp_path / "r")])
    (tmp_path / "r" / "measured.json").write_text("{")
    with pytest.raises(SystemExit, match="cannot be read"):
        _tiny_table1(tmp_path, "r", "--epochs", "2")
    (tmp_path / "r" / "checkpoint.npz").unlink()  # values no checkpoint ties to a net
    with pytest.raises(SystemExit, match="no checkpoint beside it"):
        _tiny_table1(tmp_path, "r", "--epochs", "2")


def test_table1_keeps_every_measured_epoch_and_refuses_a_net_past_one(tmp_path):
    from minivd.checkpoint import load_checkpoint, save_checkpoint

    _tiny_table1(tmp_path, "r", "--epochs", "1", "2")
    r = _tiny_table1(tmp_path, "r", "--epochs", "3")  # a later epoch only
    assert list(r["epochs"]) == ["3"]
    stored = json.loads((tmp_path / "r" / "measured.json").read_text())
    assert list(stored["epochs"]) == ["1", "2", "3"]  # 1 and 2 are not dropped

    _tiny_table1(tmp_path, "p", "--epochs", "3")
    ckpt = tmp_path / "p" / "checkpoint.npz"
    arrays, meta = load_checkpoint(ckpt)  # the state of a run stopped 2 steps into epoch 3
    steps = meta["step"] // meta["epoch"]
    assert steps > 2
    meta.update(epoch=2, batch_index=2, step=2 * steps + 2, opt_t=2 * steps + 2,
                history=meta["history"][:2])
    save_checkpoint(ckpt, arrays, meta)
    (tmp_path / "p" / "measured.json").unlink()
    with pytest.raises(SystemExit, match="past epoch"):  # that net is not the epoch-2 net
        _tiny_table1(tmp_path, "p", "--epochs", "2", "3")


@pytest.mark.slow
def test_table1_quick_shows_the_ordering(tmp_path):
    from minivd.data import data_dir

    if not (data_dir() / "mnist.npz").exists():
        pytest.skip("MNIST is not cached (run python -m minivd train once)")
    out = tmp_path / "q.json"
    table1.main(["--quick", "--speed-steps", "0", "--out", str(tmp_path / "r"),
                 "--json", str(out)])
    r = json.loads(out.read_text())
    order = ("shared_weights", "per_example_weights", "lrt", "mean")
    for epoch, cell in r["epochs"].items():
        for w in ("top", "bottom"):
            v, se = cell[w], r["standard_errors"][epoch][w]
            # the issue's target: shared > per-example > LRT > mean. Each variance carries the
            # standard error of its K = 100 repeats (the script's standard_errors), so each
            # neighbouring pair must differ by 3 combined standard errors, not only in sign
            # (a tie would pass a bare ">" half the time); the recorded --quick run
            # (benchmarks/results/table1_quick.json) has its closest pair 10.9 apart
            for hi, lo in zip(order, order[1:]):
                assert v[hi] - v[lo] > 3 * np.hypot(se[hi], se[lo]), (epoch, w, hi, lo, v, se)


def test_sparse_vd_tiny_run(tmp_path, capsys):
    import sparse_vd

    f = blobs_file(tmp_path / "blobs.npz")
    args = ["--models", "lenet-300-100", "--epochs", "1", "--data-file", str(f),
            "--results", str(tmp_path / "res")]
    assert sparse_vd.main(args) == 0
    out = capsys.readouterr().out
    assert "compression" in out and "M17 68x" in out
    (path,) = (tmp_path / "res").glob("*.json")
    rec = json.loads(path.read_text())
    assert len(rec["sparsity"]) == 3 and rec["compression"] >= 1
    assert rec["resumed_from_epoch"] == 0
    # without its JSON, the run continues from its checkpoint (here: already at the end)
    path.unlink()
    assert sparse_vd.main(args) == 0
    assert "resuming after epoch 1 of 1" in capsys.readouterr().out
    again = json.loads(path.read_text())
    assert again["resumed_from_epoch"] == 1
    assert again["test_error"] == rec["test_error"] and again["history"] == rec["history"]
    with pytest.raises(SystemExit):
        sparse_vd.parse(["--epochs", "0"])


def test_bench_step_runs_and_rejects_bad_steps(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_step

    bench_step.main(["--model", "mlp", "--width", "8", "--depth", "1", "--method", "vd-b",
                     "--steps", "2", "--polyak"])
    out = capsys.readouterr().out
    assert "mlp 8x1, vd-b, polyak" in out and "s per epoch" in out
    with pytest.raises(SystemExit):
        bench_step.main(["--steps", "0"])


def test_bench_late_state_reads_a_run_and_compares_it_with_a_fresh_start(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_late_state
    import mnist_figure

    f = blobs_file(tmp_path / "blobs.npz")
    assert mnist_figure.main(["--methods", "gaussian-b", "--widths", "8", "--epochs", "1",
                              "--data-file", str(f), "--results", str(tmp_path / "res")]) == 0
    run = tmp_path / "res" / "runs" / "gaussian-b_w8_s0"
    before = (run / "checkpoint.npz").read_bytes()
    bench_late_state.main([str(run), "--steps", "2", "--warmup", "1", "--data-file", str(f)])
    out = capsys.readouterr().out
    assert "at epoch 1 of 1" in out and "late / fresh: fwd+bwd" in out
    assert (run / "checkpoint.npz").read_bytes() == before  # read, never written
    with pytest.raises(SystemExit):
        bench_late_state.main([str(tmp_path / "nowhere")])


def _timing():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import _timing

    return _timing


def test_paired_flips_the_order_each_round_and_takes_medians_of_per_round_ratios(monkeypatch):
    """A fake clock that each call advances by its own cost: the ratios are exact, and the
    calls show the order (op first in even rounds, the floors first in odd ones)."""
    t = _timing()
    clock, calls = [0.0], []

    def step(name, cost):
        def f():
            calls.append(name)
            clock[0] += cost
        return f

    def costs(name, *values):  # the n-th call costs values[n] (the warm-up call first)
        it = iter(values)

        def f():
            calls.append(name)
            clock[0] += next(it)
        return f

    monkeypatch.setattr(t.time, "perf_counter", lambda: clock[0])
    r = t.paired(costs("op", 9, 3, 3, 30, 3), costs("floor", 9, 1, 2, 3, 4), pairs=4,
                 sync=lambda: None, warmup=1, alt=costs("alt", 9, 6, 6, 6, 6))
    assert calls[:3] == ["op", "floor", "alt"]  # the warm-up
    assert calls[3:] == ["op", "floor", "alt", "alt", "floor", "op"] * 2
    # per-round ratios 3, 1.5, 10, 0.75: median 2.25 (a ratio of medians would be 3/2.5)
    assert (r["ratio"], r["ratio_alt"], r["op_ms"], r["floor_ms"], r["alt_ms"]) == \
        (2.25, 0.5, 3000.0, 2500.0, 6000.0)
    assert "ratio_alt" not in t.paired(step("op", 1.0), step("floor", 1.0), 2, lambda: None)


def test_speed_benchmarks_refuse_fewer_pairs_than_the_issue_asks(capsys):
    ap = _timing().bench_parser("doc", 11)
    with pytest.raises(SystemExit):
        ap.parse_args(["--pairs", "10"])
    assert "at least 11" in capsys.readouterr().err
    assert ap.parse_args(["--pairs", "5", "--quick"]).quick
    assert ap.parse_args([]).pairs == 11


def test_table1_estimate_stopped_and_continued_gives_the_same_bits(tmp_path, monkeypatch):
    """A stop between minibatches saves the estimate in progress; the same call continues it
    and ends where an uninterrupted one does (NumPy); other settings are refused."""
    from minivd.model import build_mlp

    r = np.random.default_rng(0)
    x, y = r.random((300, 12), dtype=np.float32), r.integers(0, 3, 300)
    model = build_mlp([12, 8, 3], "vd-b", seed=0)
    args = (model, x, y, "lrt", 6, 40, 5, np)
    whole = table1.gradient_variance(*args)

    flag, calls, grads = table1.StopFlag(), [0], table1.minibatch_grads

    def stop_after_two(*a, **k):
        calls[0] += 1
        flag.requested = calls[0] == 2
        return grads(*a, **k)

    monkeypatch.setattr(table1, "minibatch_grads", stop_after_two)
    state = tmp_path / "measuring.npz"
    with pytest.raises(KeyboardInterrupt):
        table1.gradient_variance(*args, state=state, settings={"k": 6}, stop=flag)
    assert state.exists() and calls[0] == 2
    with pytest.raises(SystemExit, match="was made with"):
        table1.gradient_variance(*args, state=state, settings={"k": 7}, stop=flag)
    flag.requested = False
    cont = table1.gradient_variance(*args, state=state, settings={"k": 6}, stop=flag)
    assert calls[0] == 2 + 4  # the refused call ran none; the continued one the other 4
    assert cont == whole  # (the caller removes the state file once it has stored this)


def test_table1_stopped_while_measuring_keeps_the_estimators_done(tmp_path, monkeypatch):
    whole = _tiny_table1(tmp_path, "whole", "--epochs", "1")
    real, seen = table1.gradient_variance, []

    def stop_at_the_second(*a, **k):
        seen.append(a[3])
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(table1, "gradient_variance", stop_at_the_second)
    with pytest.raises(SystemExit, match="interrupted while measuring epoch 1"):
        _tiny_table1(tmp_path, "r", "--epochs", "1")
    stored = json.loads((tmp_path / "r" / "measured.json").read_text())
    assert list(stored["partial"]["1"]["top"]) == [table1.ESTIMATORS[0]]
    monkeypatch.setattr(table1, "gradient_variance", real)
    cont = _tiny_table1(tmp_path, "r", "--epochs", "1")
    assert cont["epochs"] == whole["epochs"]
    for key in table1.STATS:  # kept for the estimator done before the stop, too
        assert cont[key] == whole[key]
    assert json.loads((tmp_path / "r" / "measured.json").read_text())["partial"] == {}


def test_table1_a_real_signal_while_measuring_loses_no_minibatch(tmp_path, monkeypatch):
    """SIGINT in the per-example estimate's second minibatch: the run stops after it, and
    the same command measures only what is left (12 minibatches in all, K = 3 for each of
    the 4 estimators) and gives the uninterrupted values. Then a crash (no signal) after a
    periodic save: the continued run redoes only the minibatch in progress."""
    import os
    import signal

    whole = _tiny_table1(tmp_path, "whole", "--epochs", "1")
    real, calls = table1.minibatch_grads, [0]

    def counting(*a, at=None, act=None, **k):
        calls[0] += 1
        out = real(*a, **k)
        if calls[0] == at:
            act()
        return out

    def run(out, at=None, act=None):
        monkeypatch.setattr(table1, "minibatch_grads",
                            lambda *a, **k: counting(*a, at=at, act=act, **k))
        return _tiny_table1(tmp_path, out, "--epochs", "1")

    with pytest.raises(SystemExit, match="interrupted while measuring epoch 1"):
        run("sig", at=5, act=lambda: os.kill(os.getpid(), signal.SIGINT))
    assert calls[0] == 5 and (tmp_path / "sig" / "measuring_e1_per_example_weights.npz").exists()
    cont = run("sig")
    assert calls[0] == 12 and cont["epochs"] == whole["epochs"]
    assert cont["standard_errors"] == whole["standard_errors"]
    assert not list((tmp_path / "sig").glob("measuring_*"))

    def crash():
        raise RuntimeError("killed")

    calls[0] = 0
    monkeypatch.setattr(table1, "SAVE_EVERY", -1.0)  # a save after every minibatch
    with pytest.raises(RuntimeError, match="killed"):
        run("crash", at=5, act=crash)  # in minibatch 5, before its sums are added
    cont = run("crash")
    assert calls[0] == 5 + 8 and cont["epochs"] == whole["epochs"]
