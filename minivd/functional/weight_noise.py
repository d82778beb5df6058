"""Dense layers that sample the weights themselves (the estimators LRT is compared with).

* :func:`shared_weight_dense_forward`: **one** weight sample ``W = μ + sqrt(σ² + eps)·E`` for
  the whole minibatch (``noise (D_in, D_out)``). Cheap, but every example sees the same ``W``,
  so the per-example gradient terms are correlated and the minibatch variance stops falling
  as 1/M.
* :func:`per_example_dense_forward`: a separate sample ``W_n`` for every example
  (``noise (N, D_in, D_out)``): unbiased and uncorrelated like LRT, but it draws
  ``N·D_in·D_out`` normals and its gradient is noisier than LRT's (LRT's is its conditional
  expectation given the pre-activations).

``eps`` (1e-8) is added to the variance before the square root, as in the LRT op, so a zero
variance gives finite gradients; it changes the sampled variance by ``eps`` only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_xp
from ._checks import check_dense_args, check_eps, check_shape, check_upstream
from .dense import LRTDenseGrads

__all__ = [
    "shared_weight_dense_forward",
    "shared_weight_dense_backward",
    "per_example_dense_forward",
    "per_example_dense_backward",
]

_CHUNK_ELEMENTS = 1 << 22  # per-example temporaries are built this many elements at a time


class SharedWeightCache(NamedTuple):
    x: Any
    w: Any
    std: Any
    noise: Any
    has_bias: bool


class PerExampleCache(NamedTuple):
    x: Any
    w_mean: Any
    std: Any
    noise: Any
    has_bias: bool


def shared_weight_dense_forward(
    x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any, eps: float = 1e-8
) -> tuple[Any, SharedWeightCache]:
    """``out = x @ (w_mean + sqrt(w_var + eps) * noise) + b`` with one ``noise (D_in, D_out)``."""
    xp = check_dense_args(x, w_mean, w_var, b, noise)
    check_shape("noise", noise, w_mean.shape, "(D_in, D_out): one weight sample per minibatch")
    std = xp.sqrt(w_var + check_eps(eps, x.dtype))
    w = std * noise
    w += w_mean
    out = x @ w
    if b is not None:
        out += b
    return out, SharedWeightCache(x, w, std, noise, b is not None)


def shared_weight_dense_backward(dout: Any, cache: SharedWeightCache,
                                 need_dx: bool = True) -> LRTDenseGrads:
    r"""Gradients of :func:`shared_weight_dense_forward` (``need_dx=False``: no ``dx``, None).

    Notes
    -----
    Forward: :math:`W = \mu + s\circ E` with :math:`s = \sqrt{\sigma^2 + \epsilon}`,
    :math:`B = xW + b`.

    1. ``dW = x.T @ G`` and ``dx = G @ W.T`` (the dense rule).
    2. :math:`\partial W/\partial\mu = 1`: ``dw_mean = dW``.
    3. :math:`\partial W/\partial s = E` and :math:`\partial s/\partial\sigma^2 = 1/(2s)`:
       ``dw_var = dW * E / (2 s)``.
    4. ``db = G.sum(0)``.
    """
    x, w, std, noise, has_bias = cache
    check_upstream("dout", dout, (x.shape[0], w.shape[1]), "(N, D_out)", like=w)
    dx = dout @ w.T if need_dx else None  # step 1
    dw = x.T @ dout
    dw_var = dw * noise  # step 3
    dw_var /= std
    dw_var *= 0.5
    db = dout.sum(axis=0) if has_bias else None  # step 4
    return LRTDenseGrads(dx, dw, dw_var, db)  # step 2: dw_mean = dW


def _chunks(n: int, per_row: int):
    step = max(1, _CHUNK_ELEMENTS // max(per_row, 1))
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def per_example_dense_forward(
    x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any, eps: float = 1e-8
) -> tuple[Any, PerExampleCache]:
    """``out_n = x_n @ (w_mean + sqrt(w_var + eps) * noise_n) + b`` for every example ``n``.

    ``noise`` has shape ``(N, D_in, D_out)``. Temporaries are built in chunks of examples.
    """
    xp = check_dense_args(x, w_mean, w_var, b, noise)
    n, d_in = x.shape
    d_out = w_mean.shape[1]
    check_shape("noise", noise, (n, d_in, d_out), "(N, D_in, D_out): one weight sample per example")
    std = xp.sqrt(w_var + check_eps(eps, x.dtype))
    out = x @ w_mean
    for sl in _chunks(n, d_in * d_out):
        z = noise[sl] * std  # (chunk, D_in, D_out): the weight noise s∘E_n
        out[sl] += xp.matmul(x[sl, None, :], z)[:, 0, :]
    if b is not None:
        out += b
    return out, PerExampleCache(x, w_mean, std, noise, b is not None)


def per_example_dense_backward(dout: Any, cache: PerExampleCache,
                               need_dx: bool = True) -> LRTDenseGrads:
    r"""Gradients of :func:`per_example_dense_forward` (``need_dx=False``: no ``dx``, None;
    this skips step 1, a product with every example's own weight sample).

    Notes
    -----
    Forward: :math:`B_n = x_n(\mu + s\circ E_n) + b`, :math:`s = \sqrt{\sigma^2+\epsilon}`.

    1. ``dx_n = G_n (μ + s∘E_n)ᵀ = (G μᵀ)_n + G_n (s∘E_n)ᵀ``.
    2. ``dw_mean = Σ_n x_nᵀ G_n = x.T @ G``.
    3. :math:`\partial L/\partial s_{ij} = \sum_n x_{ni} G_{nj} E_{nij}`, and
       :math:`\partial s/\partial\sigma^2 = 1/(2s)`: ``dw_var = (Σ_n (x_n ⊗ G_n) ∘ E_n) / (2s)``.
    4. ``db = G.sum(0)``.
    """
    x, w_mean, std, noise, has_bias = cache
    n, d_in = x.shape
    d_out = w_mean.shape[1]
    check_upstream("dout", dout, (n, d_out), "(N, D_out)", like=w_mean)
    xp = get_xp(x, dout)
    dx = dout @ w_mean.T if need_dx else None  # step 1, mean part
    dstd = xp.zeros_like(w_mean)
    for sl in _chunks(n, d_in * d_out):
        if need_dx:
            z = noise[sl] * std
            dx[sl] += xp.matmul(z, dout[sl, :, None])[:, :, 0]  # step 1, noise part
        outer = x[sl, :, None] * dout[sl, None, :]  # step 3
        outer *= noise[sl]
        dstd += outer.sum(axis=0)
    dw_var = dstd / std
    dw_var *= 0.5
    dw_mean = x.T @ dout  # step 2
    db = dout.sum(axis=0) if has_bias else None  # step 4
    return LRTDenseGrads(dx, dw_mean, dw_var, db)
