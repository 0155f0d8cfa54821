"""Inference mode: under scratchseg.no_grad() forwards keep no cache, and backwards refuse."""

import threading

import numpy as np
import pytest

import scratchseg
from scratchseg import ops
from scratchseg.nn import UNet

pytestmark = pytest.mark.usefixtures("each_engine")


def _forwards(rng):
    """(op name, forward call) for every op, on small float64 inputs."""
    x = rng.standard_normal((2, 3, 8, 8))
    labels = rng.integers(0, 3, (2, 8, 8))
    w, w_up = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((3, 2, 2, 2))
    return [
        ("conv2d", lambda: ops.conv2d_forward(x, w, padding=1)),
        ("conv_transpose2d", lambda: ops.conv_transpose2d_forward(x, w_up)),
        ("max_pool2d", lambda: ops.max_pool2d_forward(x)),
        ("relu", lambda: ops.relu_forward(x)),
        ("concat", lambda: ops.concat_forward(x, x[:, :, 1:7, 1:7])),
        ("dropout", lambda: ops.dropout_forward(x, 0.5, np.random.default_rng(0))),
        ("batch_norm2d", lambda: ops.batch_norm2d_forward(x, np.ones(3), np.zeros(3),
                                                          np.zeros(3), np.ones(3))),
        ("softmax_cross_entropy", lambda: ops.softmax_cross_entropy_forward(x, labels)),
    ]


def test_every_op_keeps_its_cache_with_grad_and_none_without(rng):
    for name, forward in _forwards(rng):
        y, cache = forward()
        assert cache is not None, name
        with scratchseg.no_grad():
            y_inference, cache = forward()
        assert cache is None, name
        assert np.array_equal(y_inference, y), name
        with pytest.raises(RuntimeError, match=rf"{name}_backward: .*no_grad"):
            getattr(ops, f"{name}_backward")(np.ones_like(y), cache)


def test_the_reference_ops_called_directly_keep_no_cache_either(rng):
    from scratchseg import functional

    with scratchseg.no_grad():
        _, cache = functional.relu_forward(rng.standard_normal(5))
    assert cache is None
    with pytest.raises(RuntimeError, match="relu_backward: .*no_grad"):
        functional.relu_backward(np.ones(5), cache)


def test_the_mode_is_restored_after_the_block_and_after_an_error():
    assert scratchseg.is_grad_enabled()
    with pytest.raises(KeyError):
        with scratchseg.no_grad():
            assert not scratchseg.is_grad_enabled()
            raise KeyError
    assert scratchseg.is_grad_enabled()


def test_the_mode_is_per_thread():
    seen = []
    with scratchseg.no_grad():
        thread = threading.Thread(target=lambda: seen.append(scratchseg.is_grad_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]


@pytest.mark.parametrize("batch_norm, dropout", [(True, 0.3), (False, 0.0)])
def test_a_unet_forward_under_no_grad_keeps_nothing_and_gives_the_same_logits(batch_norm,
                                                                              dropout):
    model = UNet(in_channels=1, num_classes=3, base_channels=4, depth=2, padding="same",
                 batch_norm=batch_norm, dropout=dropout, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((2, 1, 16, 16)).astype(np.float32)
    logits = model.forward(x)
    with scratchseg.no_grad():
        inference = model.forward(x)
    assert np.array_equal(inference, logits)
    kept = [name for name, layer in model.named_layers() if layer._cache is not None]
    assert kept == []
    with pytest.raises(RuntimeError, match=r"Conv2d\.backward .*no_grad"):
        model.backward(np.ones_like(logits))
