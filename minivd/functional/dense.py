"""Fully connected layers: the plain affine map and its local-reparameterization (LRT) version.

Shapes: ``x (N, D_in)``, weights ``(D_in, D_out)``, bias ``(D_out,)`` or ``None``, noise
``(N, D_out)``. The output dtype is the input dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._fused import kernel
from ._checks import check_dense_args, check_eps, check_shape, check_upstream

__all__ = [
    "DenseGrads",
    "LRTDenseGrads",
    "dense_forward",
    "dense_backward",
    "lrt_dense_forward",
    "lrt_dense_backward",
]


class DenseGrads(NamedTuple):
    dx: Any
    dw: Any
    db: Any


class LRTDenseGrads(NamedTuple):
    dx: Any
    dw_mean: Any
    dw_var: Any
    db: Any


class DenseCache(NamedTuple):
    x: Any
    w: Any
    has_bias: bool


class LRTDenseCache(NamedTuple):
    x: Any
    x2: Any
    w_mean: Any
    w_var: Any
    noise: Any
    s: Any
    has_bias: bool


def dense_forward(x: Any, w: Any, b: Any = None) -> tuple[Any, DenseCache]:
    """``out = x @ w + b``.

    Parameters
    ----------
    x : array (N, D_in)
    w : array (D_in, D_out)
    b : array (D_out,) or None

    Returns
    -------
    out : array (N, D_out)
    cache : DenseCache
    """
    check_dense_args(x, w, None, b, None, weight_noise=False)
    out = x @ w
    if b is not None:
        out += b
    return out, DenseCache(x, w, b is not None)


def dense_backward(dout: Any, cache: DenseCache, need_dx: bool = True) -> DenseGrads:
    r"""Gradients of the affine map.

    Parameters
    ----------
    dout : array (N, D_out)
        :math:`G = \partial L / \partial \text{out}`.
    cache : DenseCache
        From :func:`dense_forward`.
    need_dx : bool
        False skips step 1 (one product) and returns ``dx = None`` (a model's first layer).

    Returns
    -------
    DenseGrads
        ``dx (N, D_in)`` (None with ``need_dx=False``), ``dw (D_in, D_out)``, ``db (D_out,)``
        or None.

    Notes
    -----
    Forward: :math:`B_{nj} = \sum_i x_{ni} W_{ij} + b_j`.

    1. :math:`\partial B_{nj}/\partial x_{ni} = W_{ij}`, so
       :math:`\partial L/\partial x_{ni} = \sum_j G_{nj} W_{ij}`, i.e. ``dx = G @ W.T``.
    2. :math:`\partial B_{nj}/\partial W_{ij} = x_{ni}`, summed over the batch:
       ``dw = x.T @ G``.
    3. :math:`\partial B_{nj}/\partial b_j = 1`: ``db = G.sum(0)``.
    """
    x, w, has_bias = cache
    check_upstream("dout", dout, (x.shape[0], w.shape[1]), "(N, D_out)", like=w)
    dx = dout @ w.T if need_dx else None  # step 1
    dw = x.T @ dout  # step 2
    db = dout.sum(axis=0) if has_bias else None  # step 3
    return DenseGrads(dx, dw, db)


def lrt_dense_forward(
    x: Any, w_mean: Any, w_var: Any, b: Any, noise: Any, eps: float = 1e-8
) -> tuple[Any, LRTDenseCache]:
    r"""Dense layer with a factorised Gaussian weight posterior, sampled by the LRT.

    ``out = x @ w_mean + b + sqrt((x*x) @ w_var + eps) * noise``

    Each output has exactly the law of ``x @ W + b`` with ``W_ij ~ N(w_mean_ij, w_var_ij)``
    drawn independently for every example, but only ``N·D_out`` normals are needed.

    Parameters
    ----------
    x : array (N, D_in)
    w_mean : array (D_in, D_out)
        Posterior means :math:`\mu`.
    w_var : array (D_in, D_out)
        Posterior variances :math:`\sigma^2 \ge 0`.
    b : array (D_out,) or None
    noise : array (N, D_out)
        Standard normal :math:`\zeta`, fresh for every example.
    eps : float
        Added under the square root: keeps the output and its gradient finite at a zero input
        row, where ``(x*x) @ w_var = 0``.

    Returns
    -------
    out : array (N, D_out)
    cache : LRTDenseCache
    """
    xp = check_dense_args(x, w_mean, w_var, b, noise)
    check_shape("noise", noise, (x.shape[0], w_mean.shape[1]), "(N, D_out)")
    eps = check_eps(eps, x.dtype)
    x2 = xp.square(x)
    out = x @ w_mean  # gamma (without bias yet)
    s = x2 @ w_var  # delta
    fused = kernel("lrt_out", out)
    if fused is not None:  # s = sqrt(delta + eps), out = gamma + s·noise in one fused pass
        fused(out, s, noise, eps, out, s)
    else:
        s += eps
        xp.sqrt(s, out=s)
        out += s * noise
    if b is not None:
        out += b
    return out, LRTDenseCache(x, x2, w_mean, w_var, noise, s, b is not None)


def lrt_dense_backward(dout: Any, cache: LRTDenseCache, need_dx: bool = True) -> LRTDenseGrads:
    r"""Gradients of :func:`lrt_dense_forward`.

    Parameters
    ----------
    dout : array (N, D_out)
        :math:`G = \partial L/\partial B`.
    cache : LRTDenseCache
        From :func:`lrt_dense_forward` (it holds the noise that was used).
    need_dx : bool
        False skips step 3 (two of the four products) and returns ``dx = None``: the first
        layer of a model, whose input is data, needs no ``dx``.

    Returns
    -------
    LRTDenseGrads
        ``dx (N, D_in)`` (None with ``need_dx=False``), ``dw_mean (D_in, D_out)``,
        ``dw_var (D_in, D_out)``, ``db (D_out,)`` or None.

    Notes
    -----
    Forward map, per example :math:`n` and output :math:`j`:

    .. math::

        \gamma_{nj} = \sum_i x_{ni}\mu_{ij} + b_j, \qquad
        \delta_{nj} = \sum_i x_{ni}^2 \sigma^2_{ij}, \qquad
        s_{nj} = \sqrt{\delta_{nj} + \epsilon}, \qquad
        B_{nj} = \gamma_{nj} + s_{nj}\,\zeta_{nj}.

    1. :math:`\partial L/\partial\gamma = G` (``B`` is linear in ``γ`` with slope 1).
    2. :math:`\partial L/\partial\delta = G\circ\zeta \,/\, (2 s)`, since
       :math:`\partial s/\partial\delta = 1/(2s)`. ``eps`` keeps ``s > 0``.
    3. :math:`\partial L/\partial x_{ni} = \sum_j G_{nj}\mu_{ij}
       + \sum_j (\partial L/\partial\delta_{nj})\, 2 x_{ni}\sigma^2_{ij}`, i.e.
       ``dx = G @ mu.T + 2 x * (ddelta @ var.T)``.
    4. :math:`\partial L/\partial\mu = x^\top G` (the dense rule through ``γ``).
    5. :math:`\partial L/\partial\sigma^2 = (x\circ x)^\top (\partial L/\partial\delta)`.
    6. :math:`\partial L/\partial b = \sum_n G_{n\cdot}`.

    Four matrix products (steps 3 twice, 4, 5); the forward needed two.

    References
    ----------
    Kingma, Salimans & Welling (2015), section 2.3 (local reparameterization trick).
    """
    x, x2, w_mean, w_var, noise, s, has_bias = cache
    check_upstream("dout", dout, s.shape, "(N, D_out)", like=s)
    fused_ddelta, fused_dx = kernel("lrt_ddelta", dout), kernel("lrt_dx", dout)
    dx = None
    if fused_ddelta is not None:  # the same steps, one fused pass each
        ddelta = fused_ddelta(dout, noise, s)  # step 2
        if need_dx:
            dx = dout @ w_mean.T  # step 3 (step 1: dgamma = dout)
            fused_dx(dx, x, ddelta @ w_var.T, dx)
    else:
        ddelta = dout * noise  # step 2
        ddelta /= s
        ddelta *= 0.5
        if need_dx:
            dx = ddelta @ w_var.T  # step 3, variance path
            dx *= x
            dx *= 2.0
            dx += dout @ w_mean.T  # step 3, mean path (step 1: dgamma = dout)
    dw_mean = x.T @ dout  # step 4
    dw_var = x2.T @ ddelta  # step 5
    db = dout.sum(axis=0) if has_bias else None  # step 6
    return LRTDenseGrads(dx, dw_mean, dw_var, db)
