"""Optimisers, learning-rate schedules and parameter averaging.

Optimisers never live in a layer: :meth:`Adam.step` and :meth:`SGD.step` take
``(name, param, grad)`` triples (``Sequential.parameters()`` yields them) and update each
``param`` in place, keeping their state by name so it can be checkpointed. Large NumPy arrays
are updated over cache-sized row blocks on all cores (:func:`minivd._rowwise.rowwise`).

Constrained parameters (K15's ``log α ≤ 0``): ``step(triples, bounds=model.bounds())`` clips
each bounded parameter right after its update, while its block is in cache. That is projected
gradient descent, the same values as ``step(triples)`` then ``model.project()``, without a
second trip through memory.

Subnormal state: the moment of a parameter whose gradient is zero for long stretches (a
weight on a rarely lit pixel, a unit that seldom fires) decays geometrically through the
subnormal floats, where x86 arithmetic is ~100× slower; ``flush_subnormals()`` zeroes them
(the trainer calls it once per epoch). A subnormal moment moves no parameter: its Adam step
is ~10⁻³⁰·lr.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np

from ._fused import kernel
from ._rowwise import rowwise
from .backend import get_xp
from .functional._checks import FLOATS, is_real
from .layers.base import clip_to_bounds

__all__ = ["Adam", "SGD", "constant_lr", "linear_decay_lr", "ParameterAverage", "flush_subnormals",
           "subnormal_mask"]

Triple = tuple[str, Any, Any]
Bounds = dict[str, tuple[float | None, float | None]]


def _check_step(triples: list[Triple], bounds: Bounds | None, state: dict, first: str
                ) -> Bounds:
    """The triples of one step, all checked before anything is updated: unique names (the
    state is kept by name), float32/float64 parameters, each gradient of its parameter's shape
    and dtype (no broadcasting, no silent cast), each parameter of the shape its saved state
    (``state[name][first]``) was made for; ``bounds`` may only name parameters that are being
    stepped (a typo must not turn the constraint off silently), each a pair ``(lo, hi)`` of
    finite numbers or ``None`` with ``lo ≤ hi``."""
    names = [name for name, _, _ in triples]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"parameter names repeat: {repeated} (the optimiser keeps its state by "
                         "name)")
    for name, p, g in triples:
        if not hasattr(p, "dtype") or p.dtype not in FLOATS:
            raise TypeError(f"parameter {name} must be a float32 or float64 array, got "
                            f"{getattr(p, 'dtype', type(p).__name__)}")
        if g is not None and (not hasattr(g, "dtype") or g.shape != p.shape
                              or g.dtype != p.dtype):
            got = (tuple(g.shape), g.dtype) if hasattr(g, "dtype") else type(g).__name__
            raise ValueError(f"gradient of {name} must have its parameter's shape and dtype "
                             f"{tuple(p.shape)} {p.dtype}, got {got}")
        st = state.get(name)
        if st is not None and st[first].shape != p.shape:
            raise ValueError(f"parameter {name} has shape {tuple(p.shape)}, but its optimiser "
                             f"state was made for {tuple(st[first].shape)}")
    bounds = bounds or {}
    unknown = set(bounds) - {name for name, _, _ in triples}
    if unknown:
        raise ValueError(f"bounds name parameters that are not being stepped: {sorted(unknown)}")
    for name, b in bounds.items():
        ok = isinstance(b, tuple) and len(b) == 2 and all(
            v is None or (is_real(v) and math.isfinite(v)) for v in b)
        if not ok or (None not in b and b[0] > b[1]):
            raise ValueError(f"bounds of {name} must be a pair (lo, hi) of finite numbers or "
                             f"None with lo ≤ hi, got {b!r}")
    return bounds


def subnormal_mask(a: Any) -> Any:
    """Where the floating array ``a`` holds a subnormal value (not zero, not NaN)."""
    small = get_xp(a).abs(a) < a.dtype.type(np.finfo(a.dtype).tiny)  # False for NaN
    small &= a != 0
    return small


def flush_subnormals(arrays: Iterable[Any]) -> int:
    """Set the subnormal entries of each floating array to zero, in place; return how many."""
    total = 0
    for a in arrays:
        small = subnormal_mask(a)
        n = int(get_xp(a).count_nonzero(small))
        if n:
            a[small] = 0
        total += n
    return total


def _check_lr(lr: float, zero_ok: bool = False) -> float:
    """A finite learning rate > 0 (≥ 0 for a step's override: a linear decay ends at 0)."""
    if not (is_real(lr) and math.isfinite(lr) and (lr > 0 or (zero_ok and lr == 0))):
        sign = "≥ 0" if zero_ok else "> 0"
        raise ValueError(f"learning rate must be a finite number {sign}, got {lr!r}")
    return float(lr)


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction.

    Parameters
    ----------
    lr : float
        Base step size (a schedule may override it per step).
    betas : (float, float)
        Decay rates of the first and second moment estimates.
    eps : float
        Added to ``sqrt(v̂)``.
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.lr = _check_lr(lr)
        self.b1, self.b2 = (float(b) for b in betas)
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not (is_real(eps) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0 (it keeps the step finite where "
                             f"v = 0), got {eps!r}")
        self.eps = float(eps)
        self.t = 0
        self.state: dict[str, dict[str, Any]] = {}

    STATE_KEYS = ("m", "v")
    """The arrays kept per parameter (checkpoints hold ``name/m`` and ``name/v``)."""

    def step(self, triples: Iterable[Triple], lr: float | None = None,
             bounds: Bounds | None = None) -> None:
        """One update of every ``param`` from its ``grad`` (in place), then the clip of those
        named in ``bounds`` (``{name: (lo, hi)}``, ``None`` for no bound on a side)."""
        triples = list(triples)
        bounds = _check_step(triples, bounds, self.state, "m")
        lr = self.lr if lr is None else _check_lr(lr, zero_ok=True)
        self.t += 1
        # bias corrections folded into the step size and eps:
        # p -= lr · m̂ / (sqrt(v̂) + eps) = (lr·sqrt(1−b2ᵗ)/(1−b1ᵗ)) · m / (sqrt(v) + eps·sqrt(1−b2ᵗ))
        c2 = math.sqrt(1.0 - self.b2**self.t)
        step = lr * c2 / (1.0 - self.b1**self.t)
        eps = self.eps * c2
        b1, b2 = self.b1, self.b2

        def update(p: Any, g: Any, m: Any, v: Any, out: tuple | None = None,
                   lo: float | None = None, hi: float | None = None) -> None:
            xp = get_xp(p, g)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            g2 = xp.multiply(g, g)
            g2 *= 1 - b2
            v += g2
            d = xp.sqrt(v, out=g2)
            d += eps
            xp.divide(m, d, out=d)
            d *= step
            p -= d
            clip_to_bounds(p, lo, hi)  # projection, while the block is in cache

        for name, p, g in triples:
            if g is None:
                continue
            st = self.state.get(name)
            if st is None:
                xp = get_xp(p)
                st = self.state[name] = {"m": xp.zeros_like(p), "v": xp.zeros_like(p)}
            lo, hi = bounds.get(name, (None, None))
            fused = kernel("adam", p)
            if fused is not None:  # CuPy: the whole update in one launch
                fused(g, b1, b2, step, eps, p, st["m"], st["v"])
                clip_to_bounds(p, lo, hi)
            elif p.ndim == 0:
                update(p, g, st["m"], st["v"], lo=lo, hi=hi)
            else:
                rowwise(partial(update, lo=lo, hi=hi), p, g, st["m"], st["v"], out=())

    def state_arrays(self) -> dict[str, Any]:
        """Flat ``{key: array}`` of the optimiser state (for checkpoints)."""
        out = {}
        for name, st in self.state.items():
            for k, a in st.items():
                out[f"{name}/{k}"] = a
        return out

    def flush_subnormals(self) -> int:
        """Zero the subnormal values of the state (see the module docstring); return how many."""
        return flush_subnormals(self.state_arrays().values())

    def load_state_arrays(self, arrays: dict[str, Any], t: int) -> None:
        state: dict[str, dict[str, Any]] = {}
        for key, a in arrays.items():
            name, k = key.rsplit("/", 1)
            state.setdefault(name, {})[k] = a
        self.state, self.t = state, int(t)


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum."""

    def __init__(self, lr: float = 1e-2, momentum: float = 0.9) -> None:
        self.lr = _check_lr(lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.t = 0
        self.state: dict[str, dict[str, Any]] = {}

    STATE_KEYS = ("u",)
    """The array kept per parameter: the momentum buffer."""

    def step(self, triples: Iterable[Triple], lr: float | None = None,
             bounds: Bounds | None = None) -> None:
        """One update of every ``param`` (in place), then the clip of those in ``bounds``."""
        triples = list(triples)
        bounds = _check_step(triples, bounds, self.state, "u")
        lr = self.lr if lr is None else _check_lr(lr, zero_ok=True)
        self.t += 1
        for name, p, g in triples:
            if g is None:
                continue
            st = self.state.setdefault(name, {"u": get_xp(p).zeros_like(p)})
            u = st["u"]
            u *= self.momentum
            u += g
            p -= lr * u
            clip_to_bounds(p, *bounds.get(name, (None, None)))

    state_arrays = Adam.state_arrays
    load_state_arrays = Adam.load_state_arrays
    flush_subnormals = Adam.flush_subnormals


def constant_lr(lr: float) -> Callable[[float], float]:
    """Schedule ``epoch -> lr`` (``epoch`` fractional: step / steps per epoch)."""
    lr = _check_lr(lr)
    return lambda epoch: lr


def linear_decay_lr(lr: float, total_epochs: float, start_epoch: float = 0.0
                    ) -> Callable[[float], float]:
    """Flat at ``lr`` until ``start_epoch``, then linear to 0 at ``total_epochs`` (M17)."""
    lr = _check_lr(lr)
    if not (math.isfinite(total_epochs) and 0 <= start_epoch < total_epochs):
        raise ValueError(f"need 0 ≤ start_epoch < total_epochs, got {start_epoch}, {total_epochs}")

    def schedule(epoch: float) -> float:
        if epoch <= start_epoch:
            return lr
        return lr * max(0.0, (total_epochs - epoch) / (total_epochs - start_epoch))

    return schedule


class ParameterAverage:
    """Temporal (Polyak) averaging: an exponential moving average of the parameters.

    ``update(triples)`` after each optimiser step; ``swap(triples)`` (the same
    ``model.parameters()`` triples) exchanges the averaged and the live values in place (call
    it twice to swap back), so evaluation can use the average.
    """

    def __init__(self, decay: float = 0.999) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.avg: dict[str, Any] = {}

    def update(self, triples: Iterable[Triple]) -> None:
        """``avg ← d·avg + (1 − d)·param`` for every parameter (a copy on the first call)."""
        d = self.decay

        def ema(a: Any, p: Any, out: tuple | None = None) -> None:
            a *= d  # ``a`` is the block of ``out`` itself: in place
            a += (1 - d) * p

        for name, p, _ in triples:
            a = self.avg.get(name)
            if a is None:
                self.avg[name] = p.copy()
            else:  # cache-sized blocks: one trip through memory, not three
                rowwise(ema, a, p, out=(a,))

    def swap(self, triples: Iterable[Triple]) -> None:
        for name, p, _ in triples:
            a = self.avg.get(name)
            if a is not None:
                tmp = p.copy()
                p[...] = a
                a[...] = tmp
