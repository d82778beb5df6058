"""Softmax cross-entropy, averaged over the batch."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._checks import check_float, is_real, xp_of

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "dust_threshold"]


class CECache(NamedTuple):
    probs: Any
    labels: Any


def softmax_cross_entropy_forward(logits: Any, labels: Any) -> tuple[Any, CECache]:
    r"""Mean cross-entropy of ``softmax(logits)`` against integer ``labels``.

    Computed as ``logsumexp(z) − z_y`` with the row maximum subtracted first, so large logits
    never overflow.

    Parameters
    ----------
    logits : array (N, K), floating
    labels : array (N,), integer in ``[0, K)``

    Returns
    -------
    loss : 0-d array
        :math:`\frac1N\sum_n \left(\log\sum_k e^{z_{nk}} - z_{n y_n}\right)`.
    cache : CECache
    """
    xp = xp_of(logits=logits, labels=labels)
    check_float("logits", logits, 2)
    if not hasattr(labels, "dtype") or not np.issubdtype(labels.dtype, np.integer):
        got = getattr(labels, "dtype", type(labels))
        raise TypeError(f"labels must be an integer array, got {got}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    k = logits.shape[1]
    if not logits.shape[0]:
        raise ValueError("the batch is empty: the mean cross-entropy of 0 examples is undefined")
    if labels.size and bool(((labels < 0) | (labels >= k)).any()):
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes")
    z = logits - logits.max(axis=1, keepdims=True)
    ez = xp.exp(z)
    sum_ez = ez.sum(axis=1, keepdims=True)
    rows = xp.arange(logits.shape[0])
    loss = (xp.log(sum_ez[:, 0]) - z[rows, labels]).mean()
    return loss, CECache(ez / sum_ez, labels)


def dust_threshold(dtype: Any) -> float:
    """Probabilities below this count as zero in the gradient: the square of the dtype's
    machine epsilon (``2**-46 ≈ 1.4e-14`` in float32, ``2**-104`` in float64)."""
    return float(np.finfo(dtype).eps) ** 2


def softmax_cross_entropy_backward(dloss: Any, cache: CECache) -> Any:
    r"""Gradient of the mean cross-entropy with respect to the logits.

    Notes
    -----
    Forward: :math:`L = \frac1N\sum_n (\log\sum_k e^{z_{nk}} - z_{ny_n})`,
    :math:`p_{nk} = e^{z_{nk}}/\sum_k e^{z_{nk}}`.

    1. :math:`\partial \log\sum_k e^{z_{nk}} / \partial z_{nk} = p_{nk}`; probabilities
       below :math:`\epsilon^2` (:func:`dust_threshold`) are taken as 0 (step 4).
    2. :math:`\partial z_{ny_n}/\partial z_{nk} = [k = y_n]`.
    3. With the mean's :math:`1/N` and the upstream scalar:
       ``dlogits = dloss * (p − onehot(y)) / N``.
    4. The flush is within the formula's own rounding: it moves a row by at most
       :math:`(K-1)\epsilon^2/N`, while the row's largest probability
       (:math:`p_{max} \ge 1/K`) is already rounded by up to :math:`\epsilon p_{max}/2`,
       more whenever :math:`2K(K-1) < 1/\epsilon` (any :math:`K < 2000` in float32). It is
       there for speed: late in training, confidently classified examples have probabilities
       that underflow toward the subnormal floats (below :math:`2^{-126}` in float32), and
       every product downstream of them (the backward's matrix products; gradients whose
       square underflows in Adam's second moment) takes x86's ~100× slower microcode path;
       NumPy has no flush-to-zero mode. A 3×500 MLP's step took 2.6–3.5× longer after 100
       epochs than at the start (``benchmarks/bench_late_state.py``), 1.0× with the flush.
       Entries above the threshold are exactly the formula's.
    """
    probs, labels = cache
    xp = xp_of(probs=probs)
    if not (is_real(dloss) and np.isfinite(dloss)):
        raise ValueError(f"dloss must be a finite scalar (the loss is a scalar), got {dloss!r}")
    n = probs.shape[0]
    d = probs * (probs >= probs.dtype.type(dust_threshold(probs.dtype)))  # steps 1 and 4 (a copy)
    d[xp.arange(n), labels] -= 1  # step 2
    d *= d.dtype.type(1.0 / n) * dloss  # step 3
    return d
