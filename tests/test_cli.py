"""``python -m minivd train``: arguments, errors, and an end-to-end run on a generated file."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from minivd.__main__ import main


def blobs_file(path, seed=0):
    """A small 10-class data set in the cache format (uint8 images of 784 pixels)."""
    r = np.random.default_rng(seed)
    protos = r.integers(0, 256, (10, 784))

    def make(n):
        y = r.integers(0, 10, n)
        x = np.clip(protos[y] + r.normal(0, 60, (n, 784)), 0, 255).astype(np.uint8)
        return x, y.astype(np.uint8)

    (a, b), (c, d), (e, f) = make(300), make(100), make(100)
    np.savez(path, x_train=a, y_train=b, x_valid=c, y_valid=d, x_test=e, y_test=f)
    return path


def test_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "minivd", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for opt in ("--dataset", "--model", "--width", "--depth", "--method", "--epochs", "--batch",
                "--lr", "--backend", "--seed", "--out", "--resume", "--metrics"):
        assert opt in out


@pytest.mark.parametrize("args, match", [
    (["--method", "bayes"], "invalid choice: 'bayes' (choose from none, dropout"),
    (["--model", "resnet"], "choose from mlp, lenet-300-100, lenet-5"),
    (["--epochs", "-1"], "must be a positive integer"),
    (["--batch", "0"], "must be a positive integer"),
    (["--lr", "0"], "must be > 0"),
    (["--epochs", "two"], "expected a positive integer"),
])
def test_bad_arguments_are_rejected(capsys, args, match):
    with pytest.raises(SystemExit) as e:
        main(["train", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.replace("'", "").replace('"', "")
    assert match.replace("'", "") in err


def test_cupy_backend_without_gpu_gives_the_backend_error(capsys, tmp_path):
    try:
        from minivd.backend import resolve_backend

        resolve_backend("cupy")
        pytest.skip("a GPU is available here")
    except Exception:
        pass
    rc = main(["train", "--backend", "cupy", "--out", str(tmp_path)])
    assert rc == 1
    assert "backend 'cupy'" in capsys.readouterr().err


def test_end_to_end_run_and_resume(tmp_path, capsys):
    f = blobs_file(tmp_path / "blobs.npz")
    out = tmp_path / "run"
    # 300 examples: the KL of 25k weights would swamp the data term, so β warms up slowly
    args = ["train", "--data-file", str(f), "--width", "32", "--depth", "1", "--epochs", "2",
            "--batch", "30", "--lr", "3e-3", "--method", "sparse-vd", "--kl-warmup", "20",
            "--out", str(out), "--mc-samples", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "steps/s" in printed and "ETA" in printed and "KL" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert {"test_error", "valid_error", "epoch_seconds", "sparsity", "compression",
            "test_error_mc", "test_entropy_mc"} <= set(m)
    assert len(m["epoch_seconds"]) == 2 and 0 <= m["test_error"] <= 1
    assert m["config"]["kl_warmup"] == 20
    # 10 well-separated blobs: chance is 0.9, with a standard error of √(0.9·0.1/100) = 0.03
    # on the 100 test examples, so 0.5 is far below anything a model that learned nothing gets
    assert m["test_error"] < 0.5
    for png in ("curves.png", "log_alpha.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # resume the finished run for one more epoch
    args[args.index("--epochs") + 1] = "3"
    assert main(args + ["--resume"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["epoch_seconds"]) == 3


def test_missing_data_file_is_a_clear_error(tmp_path, capsys):
    rc = main(["train", "--data-file", str(tmp_path / "nope.npz"), "--out", str(tmp_path)])
    assert rc == 1 and "nope.npz" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    f = blobs_file(tmp_path / "blobs.npz")
    rc = main(["train", "--data-file", str(f), "--out", str(tmp_path / "r"), "--resume"])
    assert rc == 1 and "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any folder is made


def test_an_existing_checkpoint_is_never_replaced_silently(tmp_path, capsys):
    f = blobs_file(tmp_path / "blobs.npz")
    out = tmp_path / "run"
    args = ["train", "--data-file", str(f), "--width", "8", "--depth", "1", "--epochs", "1",
            "--out", str(out)]
    assert main(args) == 0
    before = (out / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main(args[:4] + ["16"] + args[5:]) == 1  # another width, same --out
    assert "exists: continue it with --resume, replace it with --overwrite" in \
        capsys.readouterr().err
    assert (out / "checkpoint.npz").read_bytes() == before
    assert main(args + ["--resume", "--overwrite"]) == 1
    assert main(args[:4] + ["16"] + args[5:] + ["--overwrite"]) == 0
    assert (out / "checkpoint.npz").read_bytes() != before


def test_default_out_names_the_mlp_shape(tmp_path, monkeypatch):
    f = blobs_file(tmp_path / "blobs.npz")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data-file", str(f), "--width", "8", "--depth", "1",
                 "--epochs", "1"]) == 0
    assert (tmp_path / "runs" / "file:blobs.npz-mlp-w8x1-vd-b-s0" / "checkpoint.npz").exists()


def test_output_paths_are_checked_before_training(tmp_path, capsys):
    f = blobs_file(tmp_path / "blobs.npz")
    base = ["train", "--data-file", str(f), "--width", "8", "--depth", "1", "--epochs", "1"]
    (tmp_path / "afile").write_text("x")
    assert main(base + ["--out", str(tmp_path / "afile")]) == 1
    assert "--out" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "r1"), "--metrics", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "r2"), "--metrics",
                        str(tmp_path / "afile" / "m.json")]) == 1
    assert "--metrics: cannot write in" in capsys.readouterr().err
    for r in ("r1", "r2"):  # refused before any training: no checkpoint written
        assert not (tmp_path / r / "checkpoint.npz").exists()
    for own in ("checkpoint.npz", "curves.png", "log_alpha.png"):  # the run's other outputs
        assert main(base + ["--out", str(tmp_path / "r3"), "--metrics",
                            str(tmp_path / "r3" / ".." / "r3" / own)]) == 1
        assert f"is where the run writes its {own}" in capsys.readouterr().err
    assert not (tmp_path / "r3" / "checkpoint.npz").exists()


def test_a_data_file_of_floats_is_refused_without_advice_to_delete_it(tmp_path, capsys):
    f = blobs_file(tmp_path / "blobs.npz")
    with np.load(f) as z:
        arrays = {k: z[k].astype(np.float32) / 256 if k[0] == "x" else z[k] for k in z.files}
    np.savez(tmp_path / "floats.npz", **arrays)
    assert main(["train", "--data-file", str(tmp_path / "floats.npz"),
                 "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "expected uint8" in err and "rm " not in err and "k = 0..255" in err


def test_overwrite_removes_the_old_runs_outputs_and_resume_finds_the_old_default(
        tmp_path, monkeypatch, capsys):
    f = blobs_file(tmp_path / "blobs.npz")
    monkeypatch.chdir(tmp_path)
    base = ["train", "--data-file", str(f), "--width", "8", "--depth", "1", "--epochs", "1"]
    assert main(base + ["--out", "r"]) == 0
    (tmp_path / "r" / "metrics.json").write_text("old")
    ckpt = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    # runs that fail their checks (no such data file, no CuPy, a schedule that cannot be)
    # leave the old run as it was: it goes only once the new one is ready to train
    for bad in (["--data-file", "nope.npz"], ["--data-file", str(f), "--backend", "cupy"],
                ["--data-file", str(f), "--epochs", "1", "--lr-schedule", "linear",
                 "--lr-decay-start", "3"]):
        if "cupy" in bad and importlib.util.find_spec("cupy") is not None:
            continue
        assert main(["train", *bad, "--out", "r", "--overwrite"]) == 1
        assert (tmp_path / "r" / "metrics.json").read_text() == "old"
        assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == ckpt
    # a run that starts removes every old output, log_alpha.png too when it writes none
    assert (tmp_path / "r" / "log_alpha.png").exists()
    assert main(base[:2] + [str(f), "--method", "none", "--width", "8", "--depth", "1",
                            "--epochs", "1", "--out", "r", "--overwrite"]) == 0
    assert not (tmp_path / "r" / "log_alpha.png").exists()
    assert (tmp_path / "r" / "metrics.json").read_text() != "old"
    old_default = tmp_path / "runs" / "file:blobs.npz-mlp-vd-b-s0"  # before -wWxD
    assert main(base + ["--out", str(old_default)]) == 0
    capsys.readouterr()
    assert main(base + ["--resume"]) == 1
    assert f"resume it with --out {old_default.relative_to(tmp_path)}" in capsys.readouterr().err
