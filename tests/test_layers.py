"""The stateful layers: names, accumulation, initialisation, modes, dtypes, devices."""

import numpy as np
import pytest
import torch
from conftest import assert_close, distinct_values, to_torch

from scratchseg.gradcheck import check_gradients, layer_functions
from scratchseg.nn import layers
from scratchseg.ops import (
    conv2d_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

pytestmark = pytest.mark.usefixtures("each_engine")


def _all_layers():
    return {
        "Conv2d": layers.Conv2d(3, 4, 3, padding=1, rng=1),
        "Conv2d-nobias": layers.Conv2d(3, 4, (3, 2), stride=(1, 2), bias=False, rng=1),
        "ConvTranspose2d": layers.ConvTranspose2d(3, 2, rng=2),
        "BatchNorm2d": layers.BatchNorm2d(3),
        "MaxPool2d": layers.MaxPool2d(2),
        "ReLU": layers.ReLU(),
        "Dropout": layers.Dropout(0.3, rng=3),
    }


LAYER_NAMES = list(_all_layers())
PARAMETRISED = ["Conv2d", "Conv2d-nobias", "ConvTranspose2d", "BatchNorm2d"]


def _make(name):
    return _all_layers()[name]


def _input(rng, dtype=np.float64, shape=(2, 3, 6, 6)):
    return distinct_values(rng, shape).astype(dtype)


# ---------------------------------------------------------------- names and shapes


def test_parameter_names_and_shapes_follow_pytorch():
    conv = layers.Conv2d(3, 8, 3)
    assert list(conv.params) == ["weight", "bias"] and list(conv.grads) == ["weight", "bias"]
    assert conv.params["weight"].shape == (8, 3, 3, 3) and conv.params["bias"].shape == (8,)
    assert list(layers.Conv2d(3, 8, 3, bias=False).params) == ["weight"]
    up = layers.ConvTranspose2d(8, 4)
    assert up.params["weight"].shape == (8, 4, 2, 2) and up.params["bias"].shape == (4,)
    bn = layers.BatchNorm2d(5)
    assert list(bn.params) == ["weight", "bias"]
    assert list(bn.buffers) == ["running_mean", "running_var"]
    assert np.array_equal(bn.params["weight"], np.ones(5))
    assert np.array_equal(bn.params["bias"], np.zeros(5))
    assert np.array_equal(bn.buffers["running_mean"], np.zeros(5))
    assert np.array_equal(bn.buffers["running_var"], np.ones(5))
    for layer in (layers.MaxPool2d(), layers.ReLU(), layers.Dropout(0.5)):
        assert layer.params == {} and layer.grads == {}
    for name in PARAMETRISED:
        layer = _make(name)
        for key, value in layer.params.items():
            assert layer.grads[key].shape == value.shape
            assert not np.any(layer.grads[key])


@pytest.mark.parametrize("name", ["Conv2d", "ConvTranspose2d", "BatchNorm2d"])
def test_state_loads_into_the_torch_module_by_name(name, rng):
    """Same names, same layouts: torch's module built from our state computes our output."""
    layer = _make(name).astype("float64")
    torch_layer = {"Conv2d": torch.nn.Conv2d(3, 4, 3, padding=1),
                   "ConvTranspose2d": torch.nn.ConvTranspose2d(3, 2, 2, stride=2),
                   "BatchNorm2d": torch.nn.BatchNorm2d(3)}[name].double()
    state = {k: to_torch(v) for k, v in {**layer.params, **layer.buffers}.items()}
    missing, unexpected = torch_layer.load_state_dict(state, strict=False)
    assert unexpected == [] and set(missing) <= {"num_batches_tracked"}
    x = rng.standard_normal((2, 3, 5, 5))
    with torch.no_grad():
        assert_close(layer.forward(x), torch_layer(to_torch(x)).numpy())
    if name == "BatchNorm2d":  # the running statistics move the same way
        assert_close(layer.buffers["running_mean"], torch_layer.running_mean.numpy())
        assert_close(layer.buffers["running_var"], torch_layer.running_var.numpy())


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_gradients_match_finite_differences(name, rng):
    layer = _make(name)
    forward, backward, params, names = layer_functions(layer)
    if name == "Dropout":  # one mask for every perturbed forward
        raw_forward = forward

        def forward(*inputs):
            layer.reset_rng()
            return raw_forward(*inputs)

    x = _input(rng, shape=(2, 3, 4, 4))
    report = check_gradients(forward, backward, [x, *params], names=["x", *names])
    assert report.names == ["x", *layer.params]


@pytest.mark.parametrize("name", PARAMETRISED)
def test_gradients_accumulate_until_zero_grad(name, rng):
    layer = _make(name).astype("float64")
    x = _input(rng)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx_once = layer.backward(dy)
    once = {k: v.copy() for k, v in layer.grads.items()}
    assert all(np.any(v) for v in once.values())
    layer.forward(x)
    dx_twice = layer.backward(dy)
    assert_close(dx_twice, dx_once)  # dx itself does not accumulate
    for key, grad in layer.grads.items():
        assert_close(grad, 2 * once[key], err_msg=key)
    layer.zero_grad()
    assert all(not np.any(v) for v in layer.grads.values())
    layer.forward(x)
    layer.backward(dy)
    for key, grad in layer.grads.items():
        assert_close(grad, once[key], err_msg=key)


def test_splitting_a_batch_accumulates_the_same_gradients_as_one_pass(rng):
    whole = layers.Conv2d(3, 4, 3, stride=2, padding=1, rng=5).astype("float64")
    split = layers.Conv2d(3, 4, 3, stride=2, padding=1, rng=5).astype("float64")
    x = rng.standard_normal((4, 3, 7, 7))
    y = whole.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = whole.backward(dy)
    parts = []
    for rows in (slice(0, 1), slice(1, 4)):
        assert_close(split.forward(x[rows]), y[rows])
        parts.append(split.backward(dy[rows]))
    assert_close(np.concatenate(parts), dx)
    for key in whole.grads:
        assert_close(split.grads[key], whole.grads[key], rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_backward_without_forward_raises(name, rng):
    layer = _make(name)
    with pytest.raises(RuntimeError, match="without a forward"):
        layer.backward(np.ones((2, 4, 6, 6), np.float32))
    y = layer.forward(_input(rng, np.float32))
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError):  # the cache is spent: no second backward per forward
        layer.backward(np.ones_like(y))


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize("layer,fan_in", [
    (layers.Conv2d(128, 128, 3, rng=0), 128 * 9),
    (layers.Conv2d(64, 256, (1, 3), rng=1), 64 * 3),
    (layers.ConvTranspose2d(256, 128, rng=2), 256),
], ids=["3x3", "1x3", "up2x2"])
def test_he_normal_initialisation(layer, fan_in):
    weight = layer.params["weight"].astype(np.float64)
    std = np.sqrt(2.0 / fan_in)
    count = weight.size
    assert abs(weight.mean()) < 5 * std / np.sqrt(count)
    # the sample std of n normals has relative standard error ~ 1 / sqrt(2 n)
    assert abs(weight.std() / std - 1) < 5 / np.sqrt(2 * count)
    kurtosis = ((weight - weight.mean()) ** 4).mean() / weight.var() ** 2
    assert abs(kurtosis - 3) < 0.1  # normal, not uniform (1.8)
    assert not np.any(layer.params["bias"])


def test_same_seed_same_weights_and_generators_are_accepted():
    a = layers.Conv2d(3, 4, 3, rng=7)
    b = layers.Conv2d(3, 4, 3, rng=7)
    c = layers.Conv2d(3, 4, 3, rng=8)
    d = layers.Conv2d(3, 4, 3, rng=np.random.default_rng(7))
    assert np.array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], c.params["weight"])
    assert np.array_equal(a.params["weight"], d.params["weight"])
    shared = np.random.default_rng(0)
    e, f = layers.Conv2d(3, 4, 3, rng=shared), layers.Conv2d(3, 4, 3, rng=shared)
    assert not np.array_equal(e.params["weight"], f.params["weight"])  # the stream moves on
    up = layers.ConvTranspose2d(3, 2, rng=np.random.default_rng(1))
    assert np.array_equal(up.params["weight"], layers.ConvTranspose2d(3, 2, rng=1).params["weight"])
    with pytest.raises(TypeError):
        layers.Conv2d(3, 4, 3, rng="seven")


# ---------------------------------------------------------------- train / eval


def test_dropout_train_and_eval(rng):
    layer = layers.Dropout(0.5, rng=0)
    x = rng.uniform(1, 2, (4, 4, 8, 8))
    assert layer.training
    y = layer.forward(x)
    dropped = y == 0
    assert 0.3 < dropped.mean() < 0.7
    assert_close(layer.backward(np.ones_like(y)), (~dropped) * 2.0)
    assert layer.eval() is layer and not layer.training
    assert np.array_equal(layer.forward(x), x)
    assert np.array_equal(layer.backward(np.ones_like(x)), np.ones_like(x))
    layer.train()
    assert layer.training and np.any(layer.forward(x) == 0)


def test_dropout_seed_fixes_the_masks(rng):
    x = rng.uniform(1, 2, (2, 3, 8, 8))
    a, b = layers.Dropout(0.5, rng=4), layers.Dropout(0.5, rng=4)
    first = a.forward(x)
    assert np.array_equal(first, b.forward(x))
    second = a.forward(x)
    assert not np.array_equal(first, second)  # a new mask per call
    a.reset_rng()
    assert np.array_equal(a.forward(x), first)
    assert not np.array_equal(layers.Dropout(0.5, rng=5).forward(x), first)  # another seed
    from_generator = layers.Dropout(0.5, rng=np.random.default_rng(4)).forward(x)
    assert np.array_equal(from_generator, layers.Dropout(0.5, rng=4).forward(x))


def test_dropout_shards_take_the_rows_of_one_global_mask(rng):
    """Processes sharing a seed, each holding rows rank::size of every global batch, drop
    exactly what one process drops on the whole batch, batch after batch, even where a
    short batch leaves a process an empty shard."""
    whole = layers.Dropout(0.5, rng=6)
    shards = [layers.Dropout(0.5, rng=6) for _ in range(3)]
    for batch in (5, 1, 4):
        x = rng.uniform(1, 2, (batch, 3, 4, 4))
        expected = whole.forward(x)
        for rank, layer in enumerate(shards):
            layer.batch_shard = (batch, rank, 3)
            y = layer.forward(x[rank::3])
            assert np.array_equal(y, expected[rank::3])
            assert np.array_equal(layer.backward(np.ones_like(y)), (y != 0) * 2.0)
    with pytest.raises(ValueError, match="rank 1 of 3 holds 2 sample"):
        shards[1].batch_shard = (5, 1, 3)
        shards[1].forward(x)


def test_batch_norm_train_and_eval(rng):
    layer = layers.BatchNorm2d(3, dtype="float64")
    x = rng.standard_normal((4, 3, 5, 5)) * 3 + 2
    y = layer.forward(x)
    assert_close(y.mean(axis=(0, 2, 3)), np.zeros(3), atol=1e-12)  # batch statistics
    assert_close(layer.buffers["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)))
    layer.backward(np.ones_like(y))
    mean, var = layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy()
    layer.eval()
    y_eval = layer.forward(x)
    assert_close(y_eval, (x - mean[:, None, None]) / np.sqrt(var + 1e-5)[:, None, None])
    assert np.array_equal(layer.buffers["running_mean"], mean)  # eval leaves them alone
    assert np.array_equal(layer.buffers["running_var"], var)
    layer.train()
    layer.forward(x)
    assert not np.array_equal(layer.buffers["running_mean"], mean)


def test_softmax_cross_entropy_layer_matches_the_functional(rng):
    logits = rng.standard_normal((2, 3, 4, 4))
    labels = rng.integers(0, 3, (2, 4, 4))
    wmap = rng.uniform(0.5, 2, (2, 4, 4))
    cw = np.array([1.0, 2.0, 0.5])
    layer = layers.SoftmaxCrossEntropy(class_weight=cw, ignore_index=2, reduction="sum")
    loss = layer.forward(logits, labels, wmap)
    expected, cache = softmax_cross_entropy_forward(logits, labels, cw, wmap, 2, "sum")
    assert_close(loss, expected)
    assert_close(layer.backward(), softmax_cross_entropy_backward(1.0, cache))
    with pytest.raises(RuntimeError):
        layer.backward()


# ---------------------------------------------------------------- dtypes and devices


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layers_keep_dtype(name, dtype, rng):
    layer = _make(name).astype(dtype)
    for store in (layer.params, layer.grads, layer.buffers):
        assert all(v.dtype == dtype for v in store.values())
    x = _input(rng, dtype)
    y = layer.forward(x)
    assert y.dtype == dtype
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == dtype and dx.shape == x.shape
    for store in (layer.params, layer.grads, layer.buffers):
        assert all(v.dtype == dtype for v in store.values())


def test_layers_default_to_float32_and_astype_casts_everything():
    bn = layers.BatchNorm2d(4)
    assert all(v.dtype == np.float32 for v in (*bn.params.values(), *bn.buffers.values()))
    assert bn.astype("float64") is bn
    for store in (bn.params, bn.grads, bn.buffers):
        assert all(v.dtype == np.float64 for v in store.values())
    conv = layers.Conv2d(2, 2, 3, dtype="float64")
    assert conv.params["weight"].dtype == np.float64


def test_to_numpy_keeps_values_and_drops_the_cache(rng):
    conv = layers.Conv2d(3, 4, 3, rng=0)
    weight = conv.params["weight"].copy()
    x = _input(rng, np.float32)
    conv.forward(x)
    assert conv.to("numpy") is conv
    assert type(conv.params["weight"]) is np.ndarray
    assert np.array_equal(conv.params["weight"], weight)
    with pytest.raises(RuntimeError):
        conv.backward(np.ones((2, 4, 4, 4), np.float32))
    assert_close(conv.forward(x), conv2d_forward(x, weight, conv.params["bias"])[0], rtol=1e-6)


def test_layers_are_callable(rng):
    relu = layers.ReLU()
    x = rng.standard_normal((1, 1, 3, 3))
    assert np.array_equal(relu(x), np.maximum(x, 0))
