"""Thin stateful layers over :mod:`minivd.functional` (see :class:`Layer` for the protocol)."""

from .base import Layer, p_to_log_alpha
from .basic import Dense, Dropout, GaussianDropout, ReLU, Reshape
from .conv import Conv2D, Flatten, MaxPool2D, VariationalConv2D
from .variational_dense import SAMPLERS, VariationalDense
from .weight_posterior import SPARSE_LOG_ALPHA_THRESHOLD, WeightPosterior

__all__ = [
    "Layer",
    "Dense",
    "ReLU",
    "Dropout",
    "GaussianDropout",
    "Reshape",
    "VariationalDense",
    "SAMPLERS",
    "SPARSE_LOG_ALPHA_THRESHOLD",
    "WeightPosterior",
    "p_to_log_alpha",
    "Conv2D",
    "VariationalConv2D",
    "MaxPool2D",
    "Flatten",
]
