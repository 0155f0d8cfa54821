"""Inference keeps no caches: overlap-tile prediction, predict/evaluate and the training loop's
validation run their forwards under no_grad() in eval mode, with bitwise the same results."""

import math

import numpy as np
import pytest

from scratchseg import is_grad_enabled, no_grad
from scratchseg.data import SyntheticShapes, predict_logits
from scratchseg.data.tiling import mirror_crop, tile_geometry
from scratchseg.inference import TrainedModel
from scratchseg.nn import UNet
from scratchseg.training.loop import evaluate


def _image(height, width, seed=0):
    return np.random.default_rng(seed).random((1, height, width)).astype(np.float32)


def _unet(padding, **kwargs):
    return UNet(base_channels=2, depth=2, padding=padding, seed=0, **kwargs)


def _layers(model):
    return [*model.named_layers(), *((f"pool.{i}", p) for i, p in enumerate(model.pools))]


def _cached(model):
    """The names of the layers that hold their last forward's cache."""
    return [name for name, layer in _layers(model) if layer._cache is not None]


class ForwardSpy:
    """The model, recording whether gradients were enabled at each forward."""

    def __init__(self, model):
        self.model, self.grad_enabled = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def forward(self, x):
        self.grad_enabled.append(is_grad_enabled())
        return self.model.forward(x)


def test_a_training_forward_keeps_caches():
    """Guard: the checks below mean something only if a plain forward does keep caches."""
    model = _unet("valid").train()
    model.forward(_image(44, 44)[None])
    assert len(_cached(model)) == len(_layers(model))


def test_predict_logits_runs_every_forward_under_no_grad():
    spy = ForwardSpy(_unet("valid").eval())
    predict_logits(spy, _image(37, 29), tile=8, batch_size=3)
    assert len(spy.grad_enabled) > 1 and not any(spy.grad_enabled)
    assert is_grad_enabled()


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_predict_logits_leaves_no_cache(padding):
    model = _unet(padding, batch_norm=True)
    model.forward(_image(44, 44)[None])  # a training forward first: its caches must go
    model.eval()
    predict_logits(model, _image(37, 29), tile=8, batch_size=3)
    assert _cached(model) == []
    assert all(layer._cache is None for _, layer in model.named_layers())


def test_a_trained_models_predict_leaves_no_cache():
    model = _unet("same").eval()
    mask = TrainedModel(model, [0, 255], {}).predict(_image(20, 24))
    assert mask.shape == (20, 24) and set(mask.ravel()) <= {0, 255}
    assert _cached(model) == []


def test_validation_runs_under_no_grad_in_eval_mode_and_leaves_no_cache():
    dataset = SyntheticShapes(3, 32, 0)
    model = _unet("same", num_classes=dataset.num_classes, batch_norm=True, dropout=0.3)
    spy = ForwardSpy(model)
    modes = []
    real_forward = model.forward

    def forward(x):
        modes.append([layer.training for _, layer in model.named_layers()])
        return real_forward(x)

    model.forward = forward
    loss, cm, predictions = evaluate(spy, dataset)
    assert math.isfinite(loss) and cm.sum() == 3 * 32 * 32 and sorted(predictions) == [0, 1, 2]
    assert spy.grad_enabled and not any(spy.grad_enabled)
    assert modes and not any(any(m) for m in modes)  # eval mode during validation
    assert all(layer.training for _, layer in model.named_layers())  # training mode after
    assert _cached(model) == []
    assert is_grad_enabled()


def _tiles_with_gradients(model, image, tile):
    """predict_logits' tiling done by hand, the tiles' forward run with gradients enabled."""
    height, width = image.shape[1:]
    size_in, margin, trim, step = tile_geometry(model, tile)
    rows, cols = math.ceil(height / step), math.ceil(width / step)
    offset = margin + trim
    context = mirror_crop(image, -offset, -offset, (rows - 1) * step + size_in,
                          (cols - 1) * step + size_in)
    corners = [(r * step, c * step) for r in range(rows) for c in range(cols)]
    assert is_grad_enabled()
    out = model.forward(np.stack([context[:, y:y + size_in, x:x + size_in] for y, x in corners]))
    logits = np.empty((out.shape[1], rows * step, cols * step), np.float32)
    for (y, x), tile_logits in zip(corners, out, strict=True):
        logits[:, y:y + step, x:x + step] = tile_logits[:, trim:trim + step, trim:trim + step]
    return logits[:, :height, :width], len(corners)


@pytest.mark.parametrize("padding, shape, tile", [
    ("valid", (20, 20), 20), ("valid", (37, 29), 8), ("same", (30, 17), 8),
])
def test_predict_logits_bitwise_equal_with_and_without_no_grad(padding, shape, tile):
    model = _unet(padding, batch_norm=True).eval()
    image = _image(*shape, seed=shape[0])
    expected, num_tiles = _tiles_with_gradients(model, image, tile)
    assert num_tiles > 1 or shape == (20, 20)
    got = predict_logits(model, image, tile=tile, batch_size=num_tiles)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_a_forward_is_bitwise_equal_with_and_without_no_grad():
    model = _unet("valid", batch_norm=True).eval()
    x = _image(44, 44)[None]
    with_gradients = model.forward(x)
    with no_grad():
        without = model.forward(x)
    assert np.array_equal(with_gradients, without)
