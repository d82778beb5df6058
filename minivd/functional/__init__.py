"""Pure forward/backward pairs: ``out, cache = op_forward(...)``,
``grads = op_backward(dout, cache)``.

Noise is always an argument; nothing here draws random numbers or keeps state.
"""

from .activations import relu_backward, relu_forward
from .conv import (
    ConvGrads,
    LRTConvGrads,
    conv2d_backward,
    conv2d_forward,
    lrt_conv2d_backward,
    lrt_conv2d_forward,
)
from .conv_sampled import (
    per_example_conv2d_backward,
    per_example_conv2d_forward,
    shared_weight_conv2d_backward,
    shared_weight_conv2d_forward,
)
from .dense import (
    DenseGrads,
    LRTDenseGrads,
    dense_backward,
    dense_forward,
    lrt_dense_backward,
    lrt_dense_forward,
)
from .losses import (
    dust_threshold,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from .noise import (
    bernoulli_dropout_backward,
    bernoulli_dropout_forward,
    gaussian_dropout_backward,
    gaussian_dropout_forward,
)
from .pooling import (
    flatten_backward,
    flatten_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from .posterior import (
    k15_variance_backward,
    k15_variance_forward,
    m17_variance_backward,
    m17_variance_forward,
)
from .weight_noise import (
    per_example_dense_backward,
    per_example_dense_forward,
    shared_weight_dense_backward,
    shared_weight_dense_forward,
)

__all__ = [
    "DenseGrads",
    "LRTDenseGrads",
    "dense_forward",
    "dense_backward",
    "lrt_dense_forward",
    "lrt_dense_backward",
    "shared_weight_dense_forward",
    "shared_weight_dense_backward",
    "per_example_dense_forward",
    "per_example_dense_backward",
    "relu_forward",
    "relu_backward",
    "softmax_cross_entropy_forward",
    "dust_threshold",
    "softmax_cross_entropy_backward",
    "bernoulli_dropout_forward",
    "bernoulli_dropout_backward",
    "gaussian_dropout_forward",
    "gaussian_dropout_backward",
    "k15_variance_forward",
    "k15_variance_backward",
    "m17_variance_forward",
    "m17_variance_backward",
    "ConvGrads",
    "LRTConvGrads",
    "conv2d_forward",
    "conv2d_backward",
    "lrt_conv2d_forward",
    "lrt_conv2d_backward",
    "shared_weight_conv2d_forward",
    "shared_weight_conv2d_backward",
    "per_example_conv2d_forward",
    "per_example_conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "flatten_forward",
    "flatten_backward",
]
