"""What the trainer refuses: bad configs, bad data, checkpoints that do not fit or are damaged;
and how it stops on a signal. Generated data only."""

import io
import json
import os
import signal

import numpy as np
import pytest

from minivd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minivd.data import Dataset
from minivd.evaluate import evaluate
from minivd.train import NonFiniteLossError, TrainConfig, Trainer

from .test_train import xor_data


def trainer(cfg, data, path):
    return Trainer(cfg, data, path, log=io.StringIO())


CFG = dict(dataset="xor", width=8, depth=1, method="vd-b", epochs=1, batch=50)


@pytest.mark.parametrize("kw, match", [
    (dict(width=2.7), "width must be an integer"), (dict(depth=-1), "depth"),
    (dict(seed=-1), "seed must be an integer ≥ 0"), (dict(mc_samples=2.5), "mc_samples"),
    (dict(kl_delay=float("nan")), "kl_delay must be a finite"), (dict(batch=True), "batch"),
    (dict(lr=float("inf")), "lr must be a finite"), (dict(momentum=-0.1), "momentum"),
    (dict(lr_schedule="linear", lr_decay_start=5, epochs=5), "must be less than epochs"),
    (dict(seed=2**31), "seed must be < 2"), (dict(p_input=1.0), r"p_input must lie in \(0, 1\)"),
    (dict(p_input=0), "p_input must lie in"), (dict(p_input=float("nan")), "p_input must be a")])
def test_config_rejects_non_integers_and_non_finite_numbers(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw).check()


def test_config_takes_numpy_integers_as_plain_ints():
    cfg = TrainConfig(batch=np.int64(10), width=np.int32(4)).check()
    assert type(cfg.batch) is int and type(cfg.width) is int and json.dumps(cfg.batch) == "10"


def _with(data, **kw):
    return Dataset(**{**data._asdict(), **kw})


@pytest.mark.parametrize("change, match", [
    (lambda d: dict(y_valid=d.y_valid[:, None]), "y must be a 1-D integer array"),
    (lambda d: dict(y_test=d.y_test[:-1]), "y must be a 1-D integer array of 500"),
    (lambda d: dict(y_train=d.y_train.astype(np.float32)), "integer"),
    (lambda d: dict(x_valid=d.x_valid[:0], y_valid=d.y_valid[:0]), "at least one example"),
    (lambda d: dict(x_train=np.where(np.arange(8) == 3, np.nan, d.x_train).astype(np.float32)),
     "NaN or inf"),
    (lambda d: dict(x_test=(d.x_test * 100).astype(np.int64)), "must be float32"),
    (lambda d: dict(x_test=d.x_test.astype(np.float64)), "must be float32"),
    (lambda d: dict(y_valid=d.y_valid - 1), "labels must be ≥ 0")])
def test_trainer_refuses_bad_splits(tmp_path, change, match):
    data = xor_data(n=200)
    with pytest.raises(ValueError, match=match):
        trainer(TrainConfig(**CFG), _with(data, **change(data)), tmp_path)


def test_evaluate_refuses_mismatched_labels(tmp_path):
    data = xor_data(n=200)
    t = trainer(TrainConfig(**CFG), data, tmp_path)
    assert 0 <= evaluate(t.model, data.x_test, data.y_test)["error"] <= 1
    with pytest.raises(ValueError, match="1-D integer array of 500"):
        evaluate(t.model, data.x_test, data.y_test[:, None])  # was an error of 0.5·500
    with pytest.raises(ValueError, match="at least one example"):
        evaluate(t.model, data.x_test[:0], data.y_test[:0])


def test_a_checkpoint_whose_metadata_is_not_an_object_is_refused(tmp_path):
    t, cfg, data = _trained(tmp_path)
    with np.load(t.checkpoint_path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array("[1, 2]")  # valid JSON, but a list
    np.savez(t.checkpoint_path, **arrays)
    with pytest.raises(CheckpointError, match="metadata is a JSON list, not an object"):
        trainer(cfg, data, tmp_path).resume()


def _trained(tmp_path, **kw):
    data = xor_data(n=200)
    cfg = TrainConfig(**{**CFG, **kw})
    t = trainer(cfg, data, tmp_path)
    t.fit()
    return t, cfg, data


def test_resume_refuses_other_data_under_the_same_name(tmp_path):
    t, cfg, data = _trained(tmp_path)
    other = xor_data(n=200, seed=1)  # same name "xor", same size, other examples
    with pytest.raises(CheckpointError, match="trained on other data"):
        trainer(cfg, other, tmp_path).resume()
    bigger = xor_data(n=400)
    with pytest.raises(CheckpointError, match="200 training examples"):
        trainer(cfg, bigger, tmp_path).resume()
    trainer(cfg, data, tmp_path).resume()  # the same data resumes


@pytest.mark.parametrize("kw", [dict(polyak=0.9), dict(optimizer="sgd"), dict(p_input=0.5)])
def test_resume_refuses_another_optimiser_average_or_input_rate(tmp_path, kw):
    _, _, data = _trained(tmp_path)
    with pytest.raises(CheckpointError, match="other settings"):
        trainer(TrainConfig(**{**CFG, **kw}), data, tmp_path).resume()


def test_a_checkpoint_from_before_p_input_resumes_as_rate_0_2(tmp_path):
    t, cfg, data = _trained(tmp_path)
    _damage(t.checkpoint_path, meta=lambda m: m["config"].pop("p_input"))
    trainer(cfg, data, tmp_path).resume()  # cfg has the default p_input = 0.2
    with pytest.raises(CheckpointError, match=r"'p_input': \(0.2, 0.5\)"):
        trainer(TrainConfig(**{**CFG, "p_input": 0.5}), data, tmp_path).resume()


def _damage(path, arrays=None, meta=None):
    a, m = load_checkpoint(path)
    if arrays:
        arrays(a)
    if meta:
        meta(m)
    m.pop("format")
    save_checkpoint(path, a, m)


def _drop_opt(a):
    for k in [k for k in a if k.startswith("opt/")][:1]:
        del a[k]


def _set(key, value):
    def f(d):
        d[key] = value
    return f


@pytest.mark.parametrize("arrays, meta, match", [
    (_drop_opt, None, "opt arrays do not match the model: missing"),
    (lambda a: a.update({k: v.astype(np.float16) for k, v in a.items()
                         if k.startswith("param/")}), None, "is float16"),
    (lambda a: next(v for k, v in a.items() if k.startswith("param/")).fill(np.nan), None,
     "NaN or inf"),
    (lambda a: a.update(junk=np.zeros(3)), None, "unexpected array 'junk'"),
    (lambda a: a.update({k: v[:1] for k, v in a.items() if k.startswith("opt/")}), None,
     "the model needs"),
    (None, lambda m: m.pop("opt_t"), "KeyError: 'opt_t'"),
    (None, _set("config", None), "no config"),
    (None, _set("step", "3"), "'step' is '3'"),
    (None, _set("batch_index", 99), "does not fit 4 steps per epoch"),
    (None, _set("epoch_part", {"seconds": -1.0, "ce_sum": 0.0, "ce_count": 0}), "'epoch_part'"),
    (None, _set("epoch_part", {"seconds": 1.0, "ce_sum": 0.0, "ce_count": 2}), "'epoch_part'"),
    (None, _set("epoch_part", {"seconds": 1.0}), "'epoch_part'"),
    (None, _set("history", [{"bogus": 1}]), "'history' is not 1 epoch records"),
    (None, _set("history", []), "'history' is not 1 epoch records"),
    (None, _set("noise_state", {"bit_generator": "PCG64", "state": {}}),
     "'noise_state' is not a PCG64 state"),
    (None, _set("epoch_start_state", {"x": 1}), "'epoch_start_state' is not a PCG64 state"),
    (lambda a: next(v for k, v in a.items() if k.endswith("log_alpha")).fill(50.0), None,
     r"log_alpha lies outside its bounds \[None, 0.0\]"),
    (lambda a: next(v for k, v in a.items() if k.endswith("/v")).fill(-1.0), None,
     "a second moment"),
])
def test_damaged_checkpoints_are_refused_before_anything_loads(tmp_path, arrays, meta, match):
    t, cfg, data = _trained(tmp_path)
    _damage(t.checkpoint_path, arrays, meta)
    fresh = trainer(cfg, data, tmp_path)
    before = {k: v.copy() for k, v in fresh.model.state().items()}
    with pytest.raises(CheckpointError, match=match):
        fresh.resume()
    for k, v in fresh.model.state().items():  # never half-loaded
        np.testing.assert_array_equal(v, before[k])
    assert fresh.opt.t == 0 and fresh.epoch == 0 and fresh.history == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_on_a_fresh_run_says_no_checkpoint_exists(tmp_path):
    data = xor_data(n=200)
    t = trainer(TrainConfig(**CFG), data, tmp_path / "fresh")
    t.model.layers[0].params["theta"][0, 0] = np.inf
    with pytest.raises(NonFiniteLossError, match="no checkpoint written yet"):
        t.fit()
    assert not t.checkpoint_path.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_last_evaluation_still_stops_and_saves(tmp_path, signum):
    """The signal arrives in the last epoch's ``on_epoch`` (after the training steps): the
    run still stops with a checkpoint, and ``stopped_by`` names the signal."""
    data = xor_data(n=200)
    t = trainer(TrainConfig(**{**CFG, "epochs": 2}), data, tmp_path)

    def signal_in_epoch_2(tr):
        if tr.epoch == 2:
            os.kill(os.getpid(), signum)

    with pytest.raises(KeyboardInterrupt):
        t.fit(on_epoch=signal_in_epoch_2)
    assert t.stopped_by == signum and t.checkpoint_path.exists()
    _, meta = load_checkpoint(t.checkpoint_path)
    assert meta["epoch"] == 2
    assert signal.getsignal(signal.SIGTERM) != t._on_signal  # handlers restored


def test_fit_from_another_thread_installs_no_handlers(tmp_path):
    import threading

    data = xor_data(n=200)
    t = trainer(TrainConfig(**CFG), data, tmp_path)
    errors = []
    th = threading.Thread(target=lambda: errors.append(None) if t.fit() else None)
    th.start()
    th.join()
    assert errors == [None] and t.epoch == 1  # no "signal only works in main thread"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_message_does_not_claim_another_runs_checkpoint(tmp_path):
    t, cfg, data = _trained(tmp_path)  # leaves a checkpoint in tmp_path
    fresh = trainer(cfg, data, tmp_path)  # a new run in the same folder, not resumed
    fresh.model.layers[0].params["theta"][0, 0] = np.inf
    with pytest.raises(NonFiniteLossError, match="no checkpoint written yet"):
        fresh.fit()


def test_the_class_count_comes_from_the_data_set_not_the_labels_present(tmp_path):
    # a file's labels are 0..9 by its format: one whose splits lack a 9 still gets 10 outputs
    # (it used to get 9, and lenet-5 refused it); an undeclared count is the largest label + 1
    from minivd.data import load_npz_dataset

    from .test_cli import blobs_file

    with np.load(blobs_file(tmp_path / "b.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    for k in ("y_train", "y_valid", "y_test"):
        arrays[k] = np.minimum(arrays[k], 8)
    np.savez(tmp_path / "no9.npz", **arrays)
    data = load_npz_dataset(tmp_path / "no9.npz")
    assert data.n_classes == 10 and data.y_train.max() == 8
    t = trainer(TrainConfig(**{**CFG, "dataset": "no9"}), data, tmp_path / "a")
    assert t.model.state()["2.VariationalDense.theta"].shape == (8, 10)
    t = trainer(TrainConfig(**{**CFG, "dataset": "no9"}), data._replace(n_classes=None),
                tmp_path / "b")
    assert t.model.state()["2.VariationalDense.theta"].shape == (8, 9)
    with pytest.raises(ValueError, match="declares 5 classes but holds labels up to 8"):
        trainer(TrainConfig(**CFG), data._replace(n_classes=5), tmp_path / "c")


def test_non_finite_parameters_never_replace_the_last_good_checkpoint(tmp_path):
    # a gradient that is NaN while the loss is finite would make the parameters NaN; the save
    # at the end of the epoch (or on Ctrl-C) refuses them and keeps the epoch-1 checkpoint
    t = trainer(TrainConfig(**{**CFG, "epochs": 2}), xor_data(n=200), tmp_path)

    def poison(tr):
        if tr.epoch == 2:
            tr.model.layers[0].params["theta"][0, 0] = np.nan

    t.cfg.epochs = 1
    t.fit()
    good = t.checkpoint_path.read_bytes()
    t.cfg.epochs = 2
    with pytest.raises(NonFiniteLossError, match=r"hold NaN or inf after step 8 \(epoch 2\).*"
                                                 "the last good checkpoint is kept"):
        t.fit(on_epoch=poison)
    assert t.checkpoint_path.read_bytes() == good
