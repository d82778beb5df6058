"""The settings of one training run (:class:`TrainConfig`), checked, with the KL weight's
schedule; stored in checkpoints and metrics. :mod:`minivd.train` re-exports it."""

from __future__ import annotations

import dataclasses
import math
import numbers

from .model import P_INPUT

__all__ = ["TrainConfig"]


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (stored in checkpoints and metrics)."""

    dataset: str = "mnist"
    model: str = "mlp"
    width: int = 512
    depth: int = 2
    method: str = "vd-b"
    epochs: int = 5
    batch: int = 100
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "linear": flat to lr_decay_start, then linear to 0
    lr_decay_start: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    kl_delay: float = 0.0  # epochs with β = 0 ...
    kl_warmup: float = 0.0  # ... then β rises linearly to 1 over this many epochs
    polyak: float = 0.0  # decay of the parameter average used for evaluation (0: off)
    mc_samples: int = 0  # S for a final Monte-Carlo predictive evaluation (0: skip)
    backend: str = "numpy"
    seed: int = 0
    train_limit: int = 0  # use only the first n training examples (0: all)
    p_input: float = P_INPUT  # the noise rate on the input layer (0.5 on hidden layers)

    def check(self) -> TrainConfig:
        for name, least in (("epochs", 1), ("batch", 1), ("width", 1), ("depth", 0),
                            ("mc_samples", 0), ("train_limit", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
                raise ValueError(f"{name} must be an integer ≥ {least}, got {v!r}")
            setattr(self, name, int(v))  # NumPy integers too, stored as plain ints (JSON)
        if self.seed >= 2**31:  # [seed, k] hashes as seed + k·2³²: keep int seeds clear of it
            raise ValueError(f"seed must be < 2**31, got {self.seed}")
        for name in ("lr", "kl_delay", "kl_warmup", "lr_decay_start", "momentum", "polyak",
                     "p_input"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("kl_delay", "kl_warmup", "lr_decay_start", "momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(
                f"lr_schedule must be 'constant' or 'linear', got {self.lr_schedule!r}")
        if self.lr_schedule == "linear" and not self.lr_decay_start < self.epochs:
            raise ValueError(f"lr_decay_start ({self.lr_decay_start:g}) must be less than "
                             f"epochs ({self.epochs}): the linear schedule decays from there "
                             "to 0 at the end of training")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not 0 <= self.polyak < 1:
            raise ValueError(f"polyak must lie in [0, 1), got {self.polyak}")
        if not 0 < self.p_input < 1:
            raise ValueError(f"p_input must lie in (0, 1), got {self.p_input}")
        return self

    def beta(self, epoch: float) -> float:
        """KL weight at fractional ``epoch``: 0 during the delay, then a linear warm-up to 1."""
        if epoch < self.kl_delay:
            return 0.0
        if self.kl_warmup == 0:
            return 1.0
        return min(1.0, (epoch - self.kl_delay) / self.kl_warmup)
