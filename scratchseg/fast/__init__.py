"""The CPU engine: the reference ops' functions, tuned for NumPy on multi-core CPUs.

Same names, signatures and results as ``scratchseg.functional`` (proven op by op in
tests/test_engines.py). Where it has no kernel of its own (dropout, batch norm, the
losses, linear) it runs the reference op: an op gets a fast kernel only where
a benchmark shows that it pays. Its sizes and thresholds are in ``scratchseg.fast.tuning``.
"""

from scratchseg.fast.activation import relu_backward, relu_forward
from scratchseg.fast.conv import (
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
)
from scratchseg.fast.pool import max_pool2d_backward, max_pool2d_forward
from scratchseg.fast.roi_pool import roi_max_pool_backward, roi_max_pool_forward
from scratchseg.fast.skip import concat_backward, concat_forward
from scratchseg.functional import (
    batch_norm2d_backward,
    batch_norm2d_forward,
    center_crop,
    dice_loss_backward,
    dice_loss_forward,
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    sigmoid_cross_entropy_backward,
    sigmoid_cross_entropy_forward,
    smooth_l1_backward,
    smooth_l1_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

__all__ = [
    "batch_norm2d_backward", "batch_norm2d_forward", "center_crop", "concat_backward",
    "concat_forward", "conv2d_backward", "conv2d_forward", "conv_transpose2d_backward",
    "conv_transpose2d_forward", "dice_loss_backward", "dice_loss_forward", "dropout_backward",
    "dropout_forward", "linear_backward", "linear_forward", "max_pool2d_backward",
    "max_pool2d_forward", "relu_backward", "relu_forward", "roi_max_pool_backward",
    "roi_max_pool_forward", "sigmoid_cross_entropy_backward", "sigmoid_cross_entropy_forward",
    "smooth_l1_backward", "smooth_l1_forward", "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
]
