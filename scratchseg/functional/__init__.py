"""The reference ops: each a forward returning (output, cache) and its backward beside it.

What a learner reads, what the docs show and what CuPy arrays run. The CPU
engine in scratchseg/fast/ computes the same functions faster on NumPy;
scratchseg.ops chooses between the two.
"""

from scratchseg.functional.activation import relu_backward, relu_forward
from scratchseg.functional.batch_norm import batch_norm2d_backward, batch_norm2d_forward
from scratchseg.functional.conv import (
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
    im2col,
)
from scratchseg.functional.dice import dice_loss_backward, dice_loss_forward
from scratchseg.functional.dropout import dropout_backward, dropout_forward
from scratchseg.functional.linear import linear_backward, linear_forward
from scratchseg.functional.loss import (
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from scratchseg.functional.pool import max_pool2d_backward, max_pool2d_forward
from scratchseg.functional.roi_pool import roi_max_pool_backward, roi_max_pool_forward
from scratchseg.functional.sigmoid_loss import (
    sigmoid_cross_entropy_backward,
    sigmoid_cross_entropy_forward,
)
from scratchseg.functional.skip import center_crop, concat_backward, concat_forward
from scratchseg.functional.smooth_l1 import smooth_l1_backward, smooth_l1_forward

__all__ = [
    "batch_norm2d_backward",
    "batch_norm2d_forward",
    "center_crop",
    "col2im",
    "concat_backward",
    "concat_forward",
    "conv2d_backward",
    "conv2d_forward",
    "conv_transpose2d_backward",
    "conv_transpose2d_forward",
    "dice_loss_backward",
    "dice_loss_forward",
    "dropout_backward",
    "dropout_forward",
    "im2col",
    "linear_backward",
    "linear_forward",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "relu_backward",
    "relu_forward",
    "roi_max_pool_backward",
    "roi_max_pool_forward",
    "sigmoid_cross_entropy_backward",
    "sigmoid_cross_entropy_forward",
    "smooth_l1_backward",
    "smooth_l1_forward",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
]
