"""The CPU engine: the reference ops' functions, tuned for NumPy on multi-core CPUs.

Same names, signatures and results as ``scratchseg.functional`` (proven op by op in
tests/test_engines.py). Ops with no kernel here are the reference ones: a new op
gets a fast kernel only where a benchmark shows that it pays.
"""

from scratchseg.functional import (
    batch_norm2d_backward,
    batch_norm2d_forward,
    center_crop,
    concat_backward,
    concat_forward,
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
    dropout_backward,
    dropout_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

__all__ = [
    "batch_norm2d_backward", "batch_norm2d_forward", "center_crop", "concat_backward",
    "concat_forward", "conv2d_backward", "conv2d_forward", "conv_transpose2d_backward",
    "conv_transpose2d_forward", "dropout_backward", "dropout_forward", "max_pool2d_backward",
    "max_pool2d_forward", "relu_backward", "relu_forward", "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
]
