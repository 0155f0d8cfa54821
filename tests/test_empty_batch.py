"""A batch of zero samples (a data-parallel process whose shard is empty) runs every op
and the whole U-Net: empty outputs, empty dx, zero parameter gradients, no warnings."""

import numpy as np
import pytest

from scratchseg import ops as F
from scratchseg.nn import UNet

pytestmark = pytest.mark.usefixtures("each_engine")


def _empty(*shape):
    return np.ones((0, *shape))


@pytest.mark.parametrize("stride,out_size", [(1, (7, 6)), (2, (4, 3))],
                         ids=["stride 1", "stride 2"])
def test_conv2d_on_an_empty_batch(stride, out_size):
    """Stride 1 takes the flipped-kernel backward, stride 2 the col2im one."""
    y, cache = F.conv2d_forward(_empty(3, 7, 6), np.ones((4, 3, 3, 3)), np.ones(4),
                                stride=stride, padding=1)
    assert y.shape == (0, 4, *out_size)
    dx, dw, db = F.conv2d_backward(np.ones(y.shape), cache)
    assert dx.shape == (0, 3, 7, 6) and dw.shape == (4, 3, 3, 3) and db.shape == (4,)
    assert not dw.any() and not db.any()


def test_conv_transpose2d_on_an_empty_batch():
    y, cache = F.conv_transpose2d_forward(_empty(3, 4, 5), np.ones((3, 2, 2, 2)), np.ones(2))
    assert y.shape == (0, 2, 8, 10)
    dx, dw, db = F.conv_transpose2d_backward(np.ones(y.shape), cache)
    assert dx.shape == (0, 3, 4, 5) and dw.shape == (3, 2, 2, 2) and db.shape == (2,)
    assert not dw.any() and not db.any()


def test_pool_relu_concat_and_dropout_on_an_empty_batch():
    x = _empty(2, 4, 4)
    for forward, backward in [(F.max_pool2d_forward, F.max_pool2d_backward),
                              (F.relu_forward, F.relu_backward),
                              (lambda a: F.dropout_forward(a, 0.5, np.random.default_rng(0)),
                               F.dropout_backward)]:
        y, cache = forward(x)
        assert y.shape[0] == 0 and backward(np.ones(y.shape), cache).shape == x.shape
    y, cache = F.concat_forward(_empty(3, 6, 6), x)
    dskip, dx = F.concat_backward(np.ones(y.shape), cache)
    assert y.shape == (0, 5, 4, 4) and dskip.shape == (0, 3, 6, 6) and dx.shape == x.shape


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_unet_forward_and_backward_on_an_empty_batch(padding):
    model = UNet(base_channels=2, depth=2, padding=padding, dropout=0.5, seed=0)
    size = model.valid_input_size(20)
    x = np.ones((0, 1, size, size), np.float32)
    logits = model.forward(x)
    assert logits.shape == (0, 2, model.output_size(size), model.output_size(size))
    assert logits.dtype == np.float32
    labels = np.zeros((0, *logits.shape[2:]), np.int64)
    loss, cache = F.softmax_cross_entropy_forward(logits, labels, reduction="sum")
    assert loss == 0.0
    dx = model.backward(F.softmax_cross_entropy_backward(1.0, cache))
    assert dx.shape == x.shape and dx.dtype == np.float32
    for name, grad in model.gradients():
        assert not grad.any(), name
