"""Summing a broadcast gradient back to the shape of the parameter it came from."""

from __future__ import annotations

from typing import Any


def sum_to_shape(g: Any, shape: tuple) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched to reach ``g.shape``.

    The adjoint of broadcasting ``a`` of ``shape`` to ``g.shape``: leading axes are summed away,
    axes of length 1 in ``shape`` are summed with ``keepdims``.
    """
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"cannot sum shape {tuple(g.shape)} down to {shape}")
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if tuple(g.shape) != shape:
        raise ValueError(f"cannot sum shape {tuple(g.shape)} down to {shape}")
    return g
