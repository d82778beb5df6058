"""Command line: ``python -m minivd train [options]`` (``--help`` lists them)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .backend import BackendUnavailableError
from .checkpoint import CheckpointError, write_json
from .data import DataError
from .model import METHODS, MODELS
from .train import NonFiniteLossError, TrainConfig, Trainer


def _int_from(s: str, least: int) -> int:
    what = "a positive integer" if least == 1 else f"an integer ≥ {least}"
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
    return v


def _positive_int(s: str) -> int:
    return _int_from(s, 1)


def _nonneg_int(s: str) -> int:
    return _int_from(s, 0)


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {s}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = _nonneg_float(s)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("≥ 0", "> 0")) from None
    if v == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="python -m minivd",
                                 description="Variational dropout in NumPy/CuPy.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and write a checkpoint, metrics and plots",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--dataset", default=d.dataset, choices=["mnist", "fashion-mnist"])
    t.add_argument("--data-file", type=Path, default=None,
                   help="an .npz with x_train, y_train, x_valid, y_valid, x_test, y_test "
                        "(uint8 images (n, 784), pixel k/256 stored as k = 0..255; uint8 "
                        "labels 0..9) instead of --dataset")
    t.add_argument("--model", default=d.model, choices=MODELS)
    t.add_argument("--width", type=_positive_int, default=d.width, help="hidden units (mlp)")
    t.add_argument("--depth", type=_nonneg_int, default=d.depth, help="hidden layers (mlp)")
    t.add_argument("--method", default=d.method, choices=METHODS)
    t.add_argument("--epochs", type=_positive_int, default=d.epochs)
    t.add_argument("--batch", type=_positive_int, default=d.batch)
    t.add_argument("--lr", type=_positive_float, default=d.lr)
    t.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "linear"])
    t.add_argument("--lr-decay-start", type=_nonneg_float, default=d.lr_decay_start,
                   help="epoch where the linear decay to 0 starts")
    t.add_argument("--optimizer", default=d.optimizer, choices=["adam", "sgd"])
    t.add_argument("--kl-delay", type=_nonneg_float, default=d.kl_delay,
                   help="epochs with KL weight β = 0")
    t.add_argument("--kl-warmup", type=_nonneg_float, default=d.kl_warmup,
                   help="epochs over which β then rises linearly to 1")
    t.add_argument("--polyak", type=_nonneg_float, default=d.polyak,
                   help="decay of a parameter average used for evaluation (0: off)")
    t.add_argument("--mc-samples", type=_nonneg_int, default=d.mc_samples,
                   help="S stochastic passes for a final Monte-Carlo test evaluation (0: off)")
    t.add_argument("--train-limit", type=_nonneg_int, default=d.train_limit,
                   help="use only the first N training examples (0: all)")
    t.add_argument("--backend", default=d.backend, choices=["numpy", "cupy"])
    t.add_argument("--seed", type=_nonneg_int, default=d.seed)
    t.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/DATASET-MODEL[-wWIDTHxDEPTH]-METHOD-sSEED)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh in an OUT that holds a checkpoint: its checkpoint, "
                        "metrics.json and plots are removed once the new run has passed "
                        "its checks")
    t.add_argument("--metrics", type=Path, default=None, help="(default OUT/metrics.json)")
    return ap


def _load_data(args: argparse.Namespace):  # noqa: ANN202
    from .data import load_dataset, load_npz_dataset

    if args.data_file is not None:
        return load_npz_dataset(args.data_file)
    return load_dataset(args.dataset)


def _check_outputs(args: argparse.Namespace, out: Path, metrics: Path,
                   legacy: Path | None = None) -> None:
    """Refuse, before any training, what would fail or lose data at the end: an OUT that is
    a file or holds a checkpoint (without --resume or --overwrite), a metrics path that is
    a folder, one of the run's other outputs, or lies where nothing can be written. Creates
    the folders; removes nothing."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    ckpt = out / "checkpoint.npz"
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if ckpt.exists() and not (args.resume or args.overwrite):
        raise ValueError(f"{ckpt} exists: continue it with --resume, replace it with "
                         "--overwrite, or choose another --out")
    if args.resume and not ckpt.exists() and legacy is not None and \
            (legacy / "checkpoint.npz").exists():
        raise ValueError(f"no checkpoint at {ckpt}, but one under the name earlier versions "
                         f"gave OUT is at {legacy}: resume it with --out {legacy}")
    if args.resume and not ckpt.exists():  # before any folder is made
        raise ValueError(f"--resume: no checkpoint at {ckpt}")
    if metrics.is_dir():
        raise ValueError(f"--metrics {metrics} is a folder; give a file path")
    own = {(out / f).resolve(): f for f in ("checkpoint.npz", "curves.png", "log_alpha.png")}
    if metrics.resolve() in own:
        raise ValueError(f"--metrics {metrics} is where the run writes its "
                         f"{own[metrics.resolve()]}; give another file path")
    for flag, folder in (("--out", out), ("--metrics", metrics.parent)):
        try:  # the folders are made now (training would make them anyway) and tried
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise ValueError(f"{flag}: cannot write in {folder} ({exc.strerror or exc})") from None


def _remove_outputs(out: Path, metrics: Path) -> None:
    """--overwrite: the old run's outputs go, so none of them sits beside the new run's."""
    for path in (out / "checkpoint.npz", out / "metrics.json", metrics, out / "curves.png",
                 out / "log_alpha.png"):
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if args.data_file is not None:
        cfg.dataset = f"file:{args.data_file.name}"
    shape = f"-w{cfg.width}x{cfg.depth}" if cfg.model == "mlp" else ""
    name = f"{cfg.dataset}-{cfg.model}{{}}-{cfg.method}-s{cfg.seed}"
    out = args.out or Path("runs") / name.format(shape)
    legacy = None if args.out else Path("runs") / name.format("")  # the name before -wWxD
    metrics_path = args.metrics or out / "metrics.json"
    trainer = None
    try:
        cfg.check()
        _check_outputs(args, out, metrics_path, legacy)
        from .backend import resolve_backend

        resolve_backend(cfg.backend)  # fail before loading data
        data = _load_data(args)
        trainer = Trainer(cfg, data, out)
        if args.overwrite:  # only now that the new run has passed every check
            _remove_outputs(out, metrics_path)
        if args.resume:
            trainer.resume()
        print(f"training {cfg.model} ({cfg.method}) on {cfg.dataset}: {trainer.n} examples, "
              f"{trainer.steps_per_epoch} steps/epoch, backend {cfg.backend} → {out}",
              flush=True)
        trainer.fit()
        metrics = trainer.final_metrics()
    except (BackendUnavailableError, CheckpointError, DataError, NonFiniteLossError,
            ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        size = (f"width {cfg.width}, depth {cfg.depth}, " if cfg.model == "mlp" else "")
        print(f"error: out of memory (model {cfg.model}, {size}batch {cfg.batch}); try a "
              f"smaller {'--width, --depth or ' if size else ''}--batch", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + (getattr(trainer, "stopped_by", 0) or 2)  # 130 for SIGINT, 143 SIGTERM
    from .plots import plot_curves, plot_log_alpha

    write_json(metrics_path, metrics)
    figs = [plot_curves(trainer.history, out / "curves.png"),
            plot_log_alpha(trainer.model, out / "log_alpha.png")]
    print(f"test error {100 * metrics['test_error']:.2f}% | valid error "
          f"{100 * metrics['valid_error']:.2f}%"
          + (f" | compression {metrics['compression']:.1f}x" if "compression" in metrics else ""))
    print(f"wrote {trainer.checkpoint_path}, {metrics_path}, "
          + ", ".join(str(f) for f in figs if f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
