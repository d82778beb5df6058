"""The training loop: SGVB steps, per-epoch evaluation, progress, checkpoints and resume.

Reproducibility: four generators, all from ``seed``: parameter initialisation (host, layer ``i``
of an MLP seeded ``seed + i``), the minibatch order (host, ``default_rng([seed, 1])``; its state
at the start of each epoch is checkpointed, so a resumed run redraws the same permutation), the
noise (on the backend, ``make_rng([seed, 2], backend)``) and the final Monte-Carlo
evaluation's (``[seed, 3]``): four streams that share no state (earlier versions drew the
noise and the Monte-Carlo passes from ``seed + 2`` and ``seed + 3``, the very streams that
initialise layers 2 and 3). Tutorial 04 relies on this recipe. On NumPy a resumed run ends
bit-for-bit where an uninterrupted one does (on the same NumPy release: the order is drawn by
``Generator.permutation``, which NumPy does not promise to keep across releases; and with the
same ``OPENBLAS_NUM_THREADS``, whose value changes the last bits of the matrix products). CuPy's
generator state cannot be saved: a run resumed on CuPy continues with a fresh noise stream (we
say so when it happens).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._resume_checks import checked_state, empty_epoch_part
from .backend import backend_name, resolve_backend, synchronizer
from .batches import iterate_minibatches
from .checkpoint import CheckpointError, fingerprint, load_checkpoint, save_checkpoint
from .evaluate import check_split, evaluate
from .model import Sequential, build_model, non_finite
from .optim import SGD, Adam, ParameterAverage, constant_lr, linear_decay_lr
from .random import make_rng
from .train_config import TrainConfig

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """The loss (or, caught when a checkpoint is due, a parameter) became NaN or infinite;
    the message names the step."""


def _n_classes(data: Any) -> int:
    """The model's outputs: the data set's declared class count, checked against its labels,
    or (undeclared) one more than the largest label."""
    top = int(max(data.y_train.max(), data.y_valid.max(), data.y_test.max()))
    n = getattr(data, "n_classes", None)
    if n is None:
        return top + 1
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or top >= n:
        raise ValueError(f"the data set declares {n!r} classes but holds labels up to {top}")
    return int(n)


class Trainer:
    """Trains one model on host arrays ``data.x_train, y_train`` (the first
    ``config.train_limit`` examples if set), recording the error on ``x_valid, y_valid``
    after each epoch and reporting the one on ``x_test, y_test`` in :meth:`final_metrics`:
    all three splits are required (float32 images, integer labels), checked when the trainer
    is made."""

    def __init__(self, config: TrainConfig, data: Any, out_dir: str | Path,
                 log: TextIO | None = None) -> None:
        self.cfg = config.check()
        self.xp = resolve_backend(config.backend)
        for split in ("train", "valid", "test"):
            xs, ys = getattr(data, "x_" + split), getattr(data, "y_" + split)
            check_split(f"the {split} split", xs, ys)
            if xs.dtype != np.float32:  # the models are float32
                raise ValueError(f"the {split} split's images must be float32 (the models' "
                                 f"dtype; cast with .astype(np.float32)), got {xs.dtype}")
            if not np.isfinite(xs).all():
                raise ValueError(f"the {split} split's images hold NaN or inf")
        x, y = data.x_train, data.y_train
        if config.train_limit:
            x, y = x[: config.train_limit], y[: config.train_limit]
        self.x, self.y = x, y
        # what a checkpoint must have been trained on to be resumed here (a file of the same
        # name with other examples would otherwise continue silently on them)
        self.data_id = {"n_train": len(x), "sha256": fingerprint(x, y)}
        self.data = data
        self.n = len(x)
        self.steps_per_epoch = math.ceil(self.n / config.batch)
        self.out = Path(out_dir)
        self.log = log if log is not None else sys.stdout
        self.model: Sequential = build_model(
            config.model, config.method, width=config.width, depth=config.depth,
            in_features=x.shape[1],
            n_classes=_n_classes(data),
            seed=config.seed, backend=config.backend, p_input=config.p_input)
        self.bounds = self.model.bounds()  # constrained parameters, clipped in each step
        self.opt = (Adam(config.lr) if config.optimizer == "adam"
                    else SGD(config.lr, config.momentum))
        self.schedule = (constant_lr(config.lr) if config.lr_schedule == "constant" else
                         linear_decay_lr(config.lr, config.epochs, config.lr_decay_start))
        self.avg = ParameterAverage(config.polyak) if config.polyak else None
        self.shuffle_rng = np.random.default_rng([config.seed, 1])
        self.noise_rng = make_rng([config.seed, 2], self.xp)
        self.epoch, self.batch_index, self.step = 0, 0, 0
        self.epoch_start_state = self.shuffle_rng.bit_generator.state
        # the current epoch's steps so far: seconds, and the cross-entropy's sum and count
        # (checkpointed, so an epoch stopped and resumed reports all of its steps)
        self.epoch_part = empty_epoch_part()
        self.history: list[dict] = []
        self._stop = self.stopped_by = 0  # a signal's number once one asks to stop
        self._saved = False  # whether out/checkpoint.npz is this run's (saved or resumed)

    # -- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.npz"

    def save(self) -> Path:
        """Write ``out/checkpoint.npz`` (atomically). Parameters that hold NaN or inf (a
        gradient that was not finite although the loss was) raise
        :class:`NonFiniteLossError` instead: the last good checkpoint is never replaced by
        one that cannot be resumed."""
        bad = non_finite(self.model.state())
        if bad:
            kept = (f"the last good checkpoint is kept at {self.checkpoint_path}" if self._saved
                    else "no checkpoint written")
            raise NonFiniteLossError(
                f"parameters {bad} hold NaN or inf after step {self.step} (epoch "
                f"{self.epoch + (self.batch_index > 0)}): a gradient was not finite; {kept}. "
                f"Try a smaller --lr")
        arrays = {f"param/{k}": v for k, v in self.model.state().items()}
        arrays.update({f"opt/{k}": v for k, v in self.opt.state_arrays().items()})
        if self.avg:
            arrays.update({f"avg/{k}": v for k, v in self.avg.avg.items()})
        noise_state = (self.noise_rng.bit_generator.state
                       if backend_name(self.xp) == "numpy" else None)
        meta = {"config": dataclasses.asdict(self.cfg), "epoch": self.epoch,
                "batch_index": self.batch_index, "step": self.step, "opt_t": self.opt.t,
                "epoch_start_state": self.epoch_start_state, "noise_state": noise_state,
                "history": self.history, "data": self.data_id, "epoch_part": self.epoch_part}
        save_checkpoint(self.checkpoint_path, arrays, meta)
        self._saved = True
        return self.checkpoint_path

    def resume(self) -> None:
        """Continue from ``out/checkpoint.npz``. Everything is checked before anything is
        loaded (the config keys that must match, the training data's fingerprint, every
        array's name, shape, dtype and finiteness, the metadata's fields), so a checkpoint
        that does not fit raises :class:`CheckpointError` and leaves the trainer as it was."""
        path = self.checkpoint_path
        arrays, meta = load_checkpoint(path)
        try:
            plan = checked_state(self, arrays, meta)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise CheckpointError(f"{path} cannot be resumed here: {type(exc).__name__}: "
                                  f"{exc}") from None
        params, opt_state, avg, meta = plan
        self.model.load_state(params)
        self.opt.load_state_arrays(opt_state, meta["opt_t"])
        if self.avg:
            self.avg.avg = avg
        self.epoch, self.batch_index, self.step = meta["epoch"], meta["batch_index"], meta["step"]
        self.epoch_start_state = meta["epoch_start_state"]
        self.history = meta["history"]
        self.epoch_part = meta.get("epoch_part", empty_epoch_part())
        if "epoch_part" not in meta and self.batch_index:
            print(f"note: {path} predates the record of a stopped epoch's steps so far: epoch "
                  f"{self.epoch + 1} will report only its steps after this resume",
                  file=self.log)
        if meta["noise_state"] is not None and backend_name(self.xp) == "numpy":
            self.noise_rng.bit_generator.state = meta["noise_state"]
        else:  # a stream of its own (from seed and step), not a replay of the first epoch's
            self.noise_rng = make_rng([self.cfg.seed, 2, self.step], self.xp)
            print("note: CuPy's generator state cannot be saved; the resumed run draws a fresh "
                  "noise stream (not bit-for-bit)", file=self.log)
        self._saved = True
        if "data" not in meta:
            print(f"note: {path} predates the record of its training data's sha256, so that "
                  "the data is the same cannot be checked", file=self.log)
        print(f"resumed from {path} at epoch {self.epoch + 1}, batch {self.batch_index}",
              file=self.log)

    # -- training -------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = signum  # checked between steps: the step in flight finishes first

    def train_epoch(self) -> float:
        """Train from the current position to the end of the epoch; returns the epoch's
        seconds of steps (all of them, also those before a resume; no evaluation)."""
        cfg, nb = self.cfg, self.steps_per_epoch
        # the epoch's order is redrawn from the state at its start, so a resumed run sees the
        # same batches; the ones already done are skipped
        self.shuffle_rng.bit_generator.state = self.epoch_start_state
        batches = itertools.islice(
            iterate_minibatches(self.x, self.y, cfg.batch, self.shuffle_rng, self.xp),
            self.batch_index, None)
        part, first = self.epoch_part, self.batch_index
        sync = synchronizer(self.xp)
        last_print = t_epoch = t0 = time.perf_counter()
        for xb, yb in batches:
            if self._stop:
                raise KeyboardInterrupt
            pos = self.epoch + self.batch_index / nb
            beta = cfg.beta(pos)
            ce, _ = self.model.loss_and_grads(xb, yb, rng=self.noise_rng, kl_scale=beta / self.n)
            ce = float(ce)
            if not math.isfinite(ce):
                kept = (f"last good checkpoint kept at {self.checkpoint_path}"
                        if self._saved else
                        "no checkpoint written yet (the first comes at the end of epoch 1)")
                raise NonFiniteLossError(
                    f"loss is {ce} at step {self.step + 1} (epoch {self.epoch + 1}, batch "
                    f"{self.batch_index + 1}); parameters not updated; {kept}. Try a smaller "
                    f"--lr (now {self.schedule(pos):.3g})")
            # projected step: K15's log α ≤ 0 is clipped inside the optimiser's pass
            self.opt.step(self.model.parameters(), lr=self.schedule(pos), bounds=self.bounds)
            if self.avg:
                self.avg.update(self.model.parameters())
            self.step += 1
            self.batch_index += 1
            sync()  # CuPy returns before the step's kernels end: wait for them to clock it
            now = time.perf_counter()
            part["seconds"] += now - t0
            part["ce_sum"] += ce
            part["ce_count"] += 1
            if now - last_print > 2.0 or self.batch_index == nb:
                last_print = now
                kl = float(self.model.kl())
                rate = (self.batch_index - first) / max(now - t_epoch, 1e-9)
                left = (nb - self.batch_index + (cfg.epochs - self.epoch - 1) * nb) / rate
                print(f"epoch {self.epoch + 1}/{cfg.epochs} step {self.batch_index}/{nb} | "
                      f"{rate:6.1f} steps/s | loss {ce + beta * kl / self.n:.4f} | "
                      f"KL {kl:.4g} | β {beta:.2f} | ETA {left:5.0f} s", file=self.log,
                      flush=True)
            t0 = time.perf_counter()
        self._epoch_ce = part["ce_sum"] / max(part["ce_count"], 1)
        return part["seconds"]

    def evaluate(self, x: np.ndarray, y: np.ndarray, **kw: Any) -> dict[str, float]:
        """Evaluate with the averaged parameters when averaging is on."""
        if self.avg:
            self.avg.swap(self.model.parameters())
        try:
            return evaluate(self.model, x, y, xp=self.xp, **kw)
        finally:
            if self.avg:
                self.avg.swap(self.model.parameters())

    def fit(self, on_epoch: Any = None) -> list[dict]:
        """Train to ``cfg.epochs``. Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``) during
        it saves a checkpoint and raises KeyboardInterrupt (``stopped_by`` then holds the
        signal's number); called from another thread than the main one, it installs no
        handlers.

        ``on_epoch(trainer)``, if given, runs after each epoch's evaluation and before its
        checkpoint, so what it adds to ``trainer.history[-1]`` is saved with it (e.g. the
        test error at each epoch, for early stopping on the validation error).
        """
        self._stop, self.stopped_by = 0, 0
        # signal handlers can only be set from the main thread; elsewhere (a thread pool)
        # Ctrl-C raises KeyboardInterrupt in the main thread alone, and no checkpoint is saved
        main = threading.current_thread() is threading.main_thread()
        old = ({s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
               if main else {})
        try:
            while self.epoch < self.cfg.epochs:
                secs = self.train_epoch()
                self.opt.flush_subnormals()  # decayed moments: x86 is ~100x slower on them
                kl = float(self.model.kl())
                valid = self.evaluate(self.data.x_valid, self.data.y_valid)["error"]
                self.history.append({
                    "epoch": self.epoch + 1, "seconds": secs, "train_ce": self._epoch_ce,
                    "train_loss": self._epoch_ce + self.cfg.beta(self.epoch + 1) * kl / self.n,
                    "kl": kl, "valid_error": valid})
                print(f"epoch {self.epoch + 1}: valid error {100 * valid:.2f}% | "
                      f"{secs:.1f} s of training steps", file=self.log, flush=True)
                # the next epoch starts here: a checkpoint saved from now on (even one that
                # ``on_epoch`` interrupts) resumes at its first batch with its own permutation
                self.epoch, self.batch_index = self.epoch + 1, 0
                self.epoch_part = empty_epoch_part()
                self.epoch_start_state = self.shuffle_rng.bit_generator.state
                if on_epoch is not None:
                    on_epoch(self)
                self.save()
                if self._stop:  # a signal during the evaluation or the save
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            path = self.save()
            self.stopped_by = int(self._stop or signal.SIGINT)
            print(f"\ninterrupted: checkpoint saved to {path}; continue with --resume",
                  file=self.log, flush=True)
            raise
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return self.history

    def final_metrics(self) -> dict[str, Any]:
        from .evaluate import sparsity_report

        m: dict[str, Any] = {"config": dataclasses.asdict(self.cfg)}
        m["valid_error"] = self.evaluate(self.data.x_valid, self.data.y_valid)["error"]
        m["test_error"] = self.evaluate(self.data.x_test, self.data.y_test)["error"]
        m["epoch_seconds"] = [h["seconds"] for h in self.history]
        m["history"] = self.history
        if self.cfg.method == "sparse-vd":
            m.update(sparsity_report(self.model))
        if self.cfg.mc_samples:
            rng = make_rng([self.cfg.seed, 3], self.xp)
            mc = self.evaluate(self.data.x_test, self.data.y_test, mode="mc",
                               samples=self.cfg.mc_samples, rng=rng)
            m["test_error_mc"], m["test_entropy_mc"] = mc["error"], mc["entropy"]
        return m

