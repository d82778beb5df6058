"""What ``Trainer.resume`` checks in a checkpoint before it loads anything.

Every field of the metadata and every array is checked against the trainer it is to be loaded
into: the settings that must match, the training data's fingerprint, the position, the
generator states, the history, each array's name, shape, dtype, finiteness and bounds. A
checkpoint that does not fit is refused whole, so a trainer is never left half-loaded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import asarray
from .checkpoint import CheckpointError
from .functional._checks import is_real
from .model import check_matching

__all__ = ["checked_state", "empty_epoch_part", "RESUME_KEYS", "HISTORY_KEYS"]

RESUME_KEYS = ("dataset", "model", "width", "depth", "method", "batch", "seed", "train_limit",
               "optimizer", "polyak", "p_input")
"""Config keys that must match for a resume (the rest, e.g. epochs, may change)."""

_BEFORE_THE_KEY = {"p_input": 0.2}
"""What a checkpoint written before a key was in the config was trained with."""

HISTORY_KEYS = ("epoch", "seconds", "train_ce", "train_loss", "kl", "valid_error")
"""The fields of every epoch's record in ``history`` (``fit``'s ``on_epoch`` may add more)."""


def empty_epoch_part() -> dict:
    """An epoch's steps so far before its first step: seconds, cross-entropy sum and count."""
    return {"seconds": 0.0, "ce_sum": 0.0, "ce_count": 0}


def checked_state(self: Any, arrays: dict[str, np.ndarray], meta: Any) -> tuple:
    """The checkpoint's ``(params, opt_state, avg, meta)`` on the backend of ``self`` (a
    :class:`~minivd.train.Trainer`), after every check; raises CheckpointError (a mismatch)
    or Key/Type/ValueError (damage)."""
    path = self.checkpoint_path
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError("its metadata has no config")
    old = meta["config"]
    was = {k: old.get(k, _BEFORE_THE_KEY.get(k)) for k in RESUME_KEYS}
    diff = {k: (was[k], getattr(self.cfg, k)) for k in RESUME_KEYS
            if was[k] != getattr(self.cfg, k)}
    if diff:
        raise CheckpointError(f"{path} was made with other settings "
                              f"(checkpoint vs now): {diff}")
    data = meta.get("data")  # absent in checkpoints written before it was recorded
    if data is not None and data != self.data_id:
        raise CheckpointError(
            f"{path} was trained on other data ({data['n_train']} training examples, "
            f"sha256 {data['sha256'][:12]}…; now {self.data_id['n_train']}, "
            f"{self.data_id['sha256'][:12]}…): same name, other contents")
    for key, kind in (("epoch", int), ("batch_index", int), ("step", int), ("opt_t", int),
                      ("history", list), ("epoch_start_state", dict)):
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise TypeError(f"metadata {key!r} is {meta[key]!r}, expected {kind.__name__}")
    if not (0 <= meta["batch_index"] < self.steps_per_epoch and meta["epoch"] >= 0
            and meta["opt_t"] == meta["step"] >= 0):
        raise ValueError(f"position epoch {meta['epoch']}, batch {meta['batch_index']}, "
                         f"step {meta['step']}, optimiser step {meta['opt_t']} does not "
                         f"fit {self.steps_per_epoch} steps per epoch")
    if meta["noise_state"] is not None and not isinstance(meta["noise_state"], dict):
        raise TypeError(f"metadata 'noise_state' is {meta['noise_state']!r}")
    for key in ("epoch_start_state", "noise_state"):  # set on a scratch generator first
        st = meta[key]
        if st is not None:
            inner = st.get("state")
            if not (isinstance(inner, dict) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in inner.values())):
                raise ValueError(f"metadata {key!r} is not a PCG64 state (its state and "
                                 f"increment must be integers): {st!r}")
            try:
                np.random.PCG64().state = st
            except (TypeError, ValueError, KeyError, OverflowError) as exc:
                raise ValueError(f"metadata {key!r} is not a PCG64 state ({exc})") from None
    keys = set(HISTORY_KEYS)
    if len(meta["history"]) != meta["epoch"] or not all(
            isinstance(h, dict) and keys <= set(h) and all(
                is_real(h[k]) for k in keys) for h in meta["history"]):
        raise ValueError(f"metadata 'history' is not {meta['epoch']} epoch records with "
                         f"the fields {sorted(keys)}")
    part = meta.get("epoch_part")  # absent in checkpoints written before it was recorded
    if part is not None and not (
            isinstance(part, dict) and set(part) == set(empty_epoch_part())
            and all(is_real(v) and math.isfinite(v) and v >= 0 for v in part.values())
            and isinstance(part["ce_count"], int) and part["ce_count"] <= meta["batch_index"]):
        raise ValueError(f"metadata 'epoch_part' is {part!r}")
    groups: dict[str, dict[str, np.ndarray]] = {"param": {}, "opt": {}, "avg": {}}
    for key, a in arrays.items():
        g, _, name = key.partition("/")
        if g not in groups or not name:
            raise ValueError(f"unexpected array {key!r}")
        groups[g][name] = a
    own = self.model.state()
    expect = {"param": own,
              "opt": {f"{n}/{k}": p for n, p in own.items() for k in self.opt.STATE_KEYS}
              if meta["opt_t"] else {},
              "avg": own if self.avg and meta["step"] else {}}
    for g, want in expect.items():
        got = groups[g]
        check_matching(f"{g} arrays", got, want, dtype=True)
        for name, a in got.items():
            if not np.isfinite(a).all():
                raise ValueError(f"{g}/{name} holds NaN or inf")
            lo, hi = self.bounds.get(name, (None, None)) if g != "opt" else (None, None)
            if (lo is not None and (a < lo).any()) or (hi is not None and (a > hi).any()):
                raise ValueError(f"{g}/{name} lies outside its bounds [{lo}, {hi}]")
            if g == "opt" and name.endswith("/v") and (a < 0).any():
                raise ValueError(f"{g}/{name} (a second moment) holds negative values")
    on = {g: {n: asarray(a, self.xp) for n, a in got.items()} for g, got in groups.items()}
    return on["param"], on["opt"], on["avg"], meta
