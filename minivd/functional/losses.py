"""Softmax cross-entropy, averaged over the batch."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._checks import check_float, xp_of

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
    if labels.size and bool(((labels < 0) | (labels >= k)).any()):
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes")
    z = logits - logits.max(axis=1, keepdims=True)
    ez = xp.exp(z)
    sum_ez = ez.sum(axis=1, keepdims=True)
    rows = xp.arange(logits.shape[0])
    loss = (xp.log(sum_ez[:, 0]) - z[rows, labels]).mean()
    return loss, CECache(ez / sum_ez, labels)


def dust_threshold(dtype: Any) -> float:
    """Probabilities below this count as zero in the gradient: ``2**26`` times the smallest
    normal number of ``dtype`` (``2**-100 ≈ 7.9e-31`` in float32)."""
    return float(np.finfo(dtype).tiny) * 2.0**26


def softmax_cross_entropy_backward(dloss: Any, cache: CECache) -> Any:
    r"""Gradient of the mean cross-entropy with respect to the logits.

    Notes
    -----
    Forward: :math:`L = \frac1N\sum_n (\log\sum_k e^{z_{nk}} - z_{ny_n})`,
    :math:`p_{nk} = e^{z_{nk}}/\sum_k e^{z_{nk}}`.

    1. :math:`\partial \log\sum_k e^{z_{nk}} / \partial z_{nk} = p_{nk}`; probabilities
       below :func:`dust_threshold` (:math:`2^{-100}` in float32) are taken as 0 (step 4).
    2. :math:`\partial z_{ny_n}/\partial z_{nk} = [k = y_n]`.
    3. With the mean's :math:`1/N` and the upstream scalar:
       ``dlogits = dloss * (p − onehot(y)) / N``.
    4. Why the flush: late in training, confidently classified examples have probabilities
       that underflow toward the subnormal floats (below :math:`2^{-126}` in float32). They
       change no parameter (a gradient entry of :math:`2^{-100}` moves an Adam step by
       :math:`\sim 10^{-22}`·lr), but every product downstream of a subnormal runs through
       the x86 microcode path, ~100× slower, and NumPy has no flush-to-zero mode: a 3×500
       MLP's backward took 3× longer after 70 epochs than at the start. Above the
       threshold the entries are exactly the formula's; a surviving entry is at least
       :math:`2^{-100}/N`, many binades above the subnormals, so its products with the
       activations and weights downstream stay normal too.
    """
    probs, labels = cache
    xp = xp_of(probs=probs)
    n = probs.shape[0]
    d = probs * (probs >= probs.dtype.type(dust_threshold(probs.dtype)))  # steps 1 and 4 (a copy)
    d[xp.arange(n), labels] -= 1  # step 2
    d *= d.dtype.type(1.0 / n) * dloss  # step 3
    return d
