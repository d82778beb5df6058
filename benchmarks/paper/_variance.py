"""Running sums of K gradient samples: the mean over a matrix's elements of their unbiased
variance, and its standard error (used by :mod:`table1` and :mod:`table1_gap`).

The variance comes from shifted sums (shift = the first sample, so float64 does not cancel):

.. math::

    \\hat V = \\frac{1}{P}\\sum_e \\frac{Q_e - S_e^2/K}{K-1},\\qquad
    S_e = \\sum_r u_{r,e},\\quad Q_e = \\sum_r u_{r,e}^2,\\quad u_r = g_r - g_1 .

Its standard error comes from Welford's increments, one scalar per sample:

1. With the running mean :math:`m_{r-1}` of the first :math:`r-1` samples,
   :math:`\\delta_r = \\frac{r-1}{r}\\,\\frac1P\\sum_e (g_{r,e} - m_{r-1,e})^2` for
   :math:`r = 2..K`.
2. :math:`\\sqrt{(r-1)/r}\\,(g_r - m_{r-1})` are Helmert's contrasts: an orthogonal map of the
   centred samples, so they are uncorrelated, each with the samples' covariance, and
   :math:`\\sum_{r\\ge2} \\delta_r = (K-1)\\hat V` exactly. Each :math:`\\delta_r` is an unbiased
   estimate of the mean variance; for independent samples they are uncorrelated up to cross
   terms in the fourth cumulant.
3. So :math:`\\mathrm{se}(\\hat V) = \\mathrm{sd}(\\delta_2..\\delta_K)/\\sqrt{K-1}`. It accounts
   for the elements' correlation: one minibatch moves all of a matrix's elements together,
   which an error bar per element (:math:`\\sqrt{2/(K-1)}` relative) would ignore. For
   Gaussian samples the increments are independent and :math:`\\mathrm{se}^2` is unbiased;
   heavy tails make it low through step 2's cross terms, more so at small K (1000 repeats of
   K = 40 samples with a Laplace common factor: the mean of :math:`\\mathrm{se}^2` was 0.90 of
   the estimates' variance; with a normal one 1.05, as ``tests/test_variance_sums.py``
   checks). With heavy-tailed gradients a gap of two or three standard errors is weaker
   evidence than it looks.
4. Two estimates made on the same minibatches (Table 1's estimators share their minibatch
   indices) have increments paired by :math:`r`; :math:`\\mathrm{sd}(\\delta^a - \\delta^b)/
   \\sqrt{K-1}` is the standard error of their difference, correlation included
   (``table1_gap.py``).

``m_{r-1}`` is not stored: it is ``g_1 + S_{r-1}/(r-1)``, from the sums already kept.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minivd import get_xp, to_numpy

__all__ = ["VarianceSums"]


class VarianceSums:
    """Sums over the samples of several arrays (e.g. the bottom and top weight gradients):
    :meth:`add` one sample of each; :meth:`variance` and :meth:`standard_error` per array.
    :meth:`arrays` and :meth:`from_arrays` save and restore them (bit for bit)."""

    def __init__(self, n_arrays: int) -> None:
        self.n_arrays = n_arrays
        self.count = 0
        self.shift: list[Any] = []
        self.sums: list[Any] = []
        self.sumsq: list[Any] = []
        self.increments: list[list[float]] = [[] for _ in range(n_arrays)]

    def add(self, samples: list[Any]) -> None:
        if len(samples) != self.n_arrays:
            raise ValueError(f"expected {self.n_arrays} arrays, got {len(samples)}")
        if self.count == 0:
            self.shift = [a.copy() for a in samples]
            self.sums = [get_xp(a).zeros_like(a) for a in samples]
            self.sumsq = [get_xp(a).zeros_like(a) for a in samples]
        r = self.count + 1  # this sample's number
        for i, a in enumerate(samples):
            d = a - self.shift[i]
            if r >= 2:  # step 1: deviation from the mean of the r - 1 samples before
                dev = d - self.sums[i] / (r - 1)
                self.increments[i].append((r - 1) / r * float(to_numpy((dev * dev).mean())))
            self.sums[i] += d
            self.sumsq[i] += d * d
        self.count = r

    def variance(self) -> list[float]:
        """Mean over each array's elements of the unbiased variance of the samples."""
        k = self._need(2)
        return [float(to_numpy(((q - s * s / k) / (k - 1)).mean()))
                for s, q in zip(self.sums, self.sumsq)]

    def standard_error(self) -> list[float | None]:
        """Standard error of each :meth:`variance` (step 3); None below 3 samples."""
        self._need(2)
        if self.count < 3:
            return [None] * self.n_arrays
        return [float(np.std(inc, ddof=1) / math.sqrt(len(inc))) for inc in self.increments]

    def arrays(self) -> dict[str, Any]:
        """Everything needed to continue, as named arrays (host or device)."""
        out: dict[str, Any] = {}
        for part in ("shift", "sums", "sumsq"):
            out.update({f"{part}/{i}": a for i, a in enumerate(getattr(self, part))})
        out.update({f"increments/{i}": np.asarray(inc, dtype=np.float64)
                    for i, inc in enumerate(self.increments)})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], n_arrays: int, count: int,
                    xp: Any) -> VarianceSums:
        """The sums :meth:`arrays` saved after ``count`` samples; KeyError or ValueError when
        they are incomplete or do not fit ``count``."""
        self = cls(n_arrays)
        self.count = count
        for part in ("shift", "sums", "sumsq"):  # copies: the caller's arrays stay as they are
            setattr(self, part, [xp.array(arrays[f"{part}/{i}"]) for i in range(n_arrays)])
        self.increments = [[float(v) for v in np.asarray(arrays[f"increments/{i}"])]
                           for i in range(n_arrays)]
        if count < 1 or any(len(inc) != count - 1 for inc in self.increments):
            raise ValueError(f"{count} samples need {count - 1} increments per array")
        for i in range(n_arrays):
            shapes = {a[i].shape for a in (self.shift, self.sums, self.sumsq)}
            if len(shapes) != 1:
                raise ValueError(f"array {i}: shift, sums and sums of squares have shapes "
                                 f"{sorted(shapes)}")
        return self

    def _need(self, k: int) -> int:
        if self.count < k:
            raise ValueError(f"need at least {k} samples, have {self.count}")
        return self.count
