"""Overlap-tile inference and training tiles against whole-image forwards of a real tiny U-Net."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.data import input_size_for_output, predict_logits, random_tile
from scratchseg.data.tiling import mirror_crop, mirror_indices
from scratchseg.nn import UNet

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def valid_net():
    return UNet(base_channels=2, depth=2, padding="valid", seed=0).eval()


@pytest.fixture(scope="module")
def same_net():
    return UNet(base_channels=2, depth=2, padding="same", seed=0).eval()


def smooth_image(height, width, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((channels, height, width)).astype(np.float32)


def whole_image_forward_valid(model, image):
    """One forward of the image mirror-padded (np.pad reflect) to the smallest input whose
    output covers it, cropped to the image. The crop starts at the padded input's origin,
    so every pooling window lines up with the tiles' (whose corners are multiples of 4)."""
    _, height, width = image.shape
    sizes = []
    for edge in (height, width):
        size = next(s for s in range(edge, edge + 200)
                    if model._trace_size(s) is not None and model.output_size(s) >= edge)
        sizes.append(size)
    margin = (sizes[0] - model.output_size(sizes[0])) // 2
    assert margin == (sizes[1] - model.output_size(sizes[1])) // 2
    padded = np.pad(image, ((0, 0), (margin, sizes[0] - height - margin),
                            (margin, sizes[1] - width - margin)), mode="reflect")
    return model.forward(padded[None])[0][:, :height, :width]


def test_tiny_unet_logits_vary(valid_net):
    """Guard: the comparisons below mean something only if the logits depend on the input."""
    logits = whole_image_forward_valid(valid_net, smooth_image(20, 20))
    assert logits.shape == (2, 20, 20)
    assert logits.std(axis=(1, 2)).min() > 1e-4


@pytest.mark.parametrize("shape", [(37, 53), (24, 24), (9, 30)])
@pytest.mark.parametrize("tile, batch_size", [(4, 1), (8, 3), (12, 4), (20, 2), (None, 4)])
def test_valid_net_tiles_equal_whole_image_forward(valid_net, shape, tile, batch_size):
    image = smooth_image(*shape, seed=shape[0])
    expected = whole_image_forward_valid(valid_net, image)
    logits = predict_logits(valid_net, image, tile=tile, batch_size=batch_size)
    assert logits.dtype == np.float32
    assert logits.shape == (2,) + shape
    np.testing.assert_allclose(logits, expected, **TOL)


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (3, 16)])
def test_valid_net_image_smaller_than_one_tile(valid_net, shape):
    """The 20-pixel margin exceeds the image: the context is mirrored repeatedly."""
    image = smooth_image(*shape, channels=1, seed=3)
    expected = whole_image_forward_valid(valid_net, image)
    for tile in (None, 16, 24):
        np.testing.assert_allclose(predict_logits(valid_net, image, tile=tile), expected, **TOL)


def test_valid_net_multichannel_input():
    model = UNet(in_channels=3, num_classes=3, base_channels=2, depth=2, padding="valid",
                 seed=1).eval()
    image = smooth_image(15, 22, channels=3, seed=4)
    expected = whole_image_forward_valid(model, image)
    np.testing.assert_allclose(predict_logits(model, image, tile=8), expected, **TOL)


def whole_image_forward_same(model, image, pad=24):
    """One forward of the image mirror-padded by ``pad`` (a multiple of the pooling grid,
    at least the receptive radius) on every side, cropped back to the image: no output
    pixel kept sees the zero padding at the padded image's border."""
    _, height, width = image.shape
    sizes = [model.valid_input_size(edge + 2 * pad) for edge in (height, width)]
    padded = np.pad(image, ((0, 0), (pad, sizes[0] - height - pad),
                            (pad, sizes[1] - width - pad)), mode="reflect")
    return model.forward(padded[None])[0][:, pad:pad + height, pad:pad + width]


def test_same_net_reference_is_independent_of_padding(same_net):
    """Guard for the reference: 24 and 32 pixels of context give the same interior."""
    image = smooth_image(10, 13, seed=5)
    np.testing.assert_allclose(whole_image_forward_same(same_net, image, 24),
                               whole_image_forward_same(same_net, image, 32), **TOL)
    assert not np.allclose(whole_image_forward_same(same_net, image, 0),
                           whole_image_forward_same(same_net, image, 24), atol=1e-4)


@pytest.mark.parametrize("shape", [(10, 13), (37, 29), (5, 7)])
@pytest.mark.parametrize("tile, batch_size", [(4, 1), (8, 3), (12, 4), (None, 2)])
def test_same_net_tiles_equal_whole_image_forward(same_net, shape, tile, batch_size):
    image = smooth_image(*shape, seed=shape[1])
    logits = predict_logits(same_net, image, tile=tile, batch_size=batch_size)
    assert logits.dtype == np.float32 and logits.shape == (2,) + shape
    np.testing.assert_allclose(logits, whole_image_forward_same(same_net, image), **TOL)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_deeper_net_tiles_on_the_pooling_grid(padding):
    """Depth 3 pools to an 8-pixel grid while its valid outputs are 4 + 8k pixels: tiles
    that advanced by a whole output would shift the grid."""
    model = UNet(base_channels=2, depth=3, padding=padding, seed=2).eval()
    image = smooth_image(23, 31, seed=7)
    if padding == "valid":
        expected = whole_image_forward_valid(model, image)
    else:
        expected = whole_image_forward_same(model, image, pad=56)
    for tile in (4, 12, 20, None):
        np.testing.assert_allclose(predict_logits(model, image, tile=tile, batch_size=3),
                                   expected, **TOL)


@pytest.mark.parametrize("depth", [1, 2])
def test_context_radius_is_the_receptive_reach(depth):
    """Perturb one input column at a time: no output pixel changes further away than
    context_radius(), and some output pixel reaches exactly that far (the same-padded
    tiles keep only pixels at least that far from their zero-padded border)."""
    model = UNet(base_channels=4, depth=depth, padding="same", seed=0).eval().astype("float64")
    width = model.valid_input_size(4 * model.context_radius())
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 2**depth, width)) - 0.3
    base = model.forward(x)[0, 0, 0]
    perturbed = np.repeat(x, width, axis=0)
    perturbed[np.arange(width), 0, :, np.arange(width)] += 5.0
    changed = np.abs(model.forward(perturbed)[:, 0, 0] - base) > 1e-12  # (column, output)
    reach = 0
    for out in range(width):
        columns = np.nonzero(changed[:, out])[0]
        if columns.size and columns.min() > 0 and columns.max() < width - 1:
            reach = max(reach, out - columns.min(), columns.max() - out)
    assert reach == model.context_radius()


def test_predict_logits_errors(valid_net):
    with pytest.raises(ValueError, match="C, H, W"):
        predict_logits(valid_net, np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(valid_net, np.zeros((1, 8, 8), np.float32), batch_size=0)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_input_size_for_output_is_smallest_sufficient(padding, valid_net, same_net):
    model = valid_net if padding == "valid" else same_net
    for wanted in range(1, 40):
        size = input_size_for_output(model, wanted)
        assert model.output_size(size) >= wanted
        smaller = [s for s in range(1, size)
                   if model._trace_size(s) is not None and model._trace_size(s) >= wanted]
        assert smaller == []
    assert input_size_for_output(valid_net, 5) == 48  # output 8 = 48 - 40
    with pytest.raises(ValueError, match="output_size"):
        input_size_for_output(model, 0)


@given(st.integers(1, 6), st.integers(1, 7), st.data())
def test_mirror_crop_matches_numpy_reflect_pad(height, width, data):
    array = np.arange(2 * height * width).reshape(2, height, width)
    top = data.draw(st.integers(0, height - 1))
    bottom = data.draw(st.integers(0, height - 1))
    left = data.draw(st.integers(0, width - 1))
    right = data.draw(st.integers(0, width - 1))
    expected = np.pad(array, ((0, 0), (top, bottom), (left, right)), mode="reflect")
    got = mirror_crop(array, -top, -left, height + top + bottom, width + left + right)
    np.testing.assert_array_equal(got, expected)


def test_mirror_crop_far_outside_and_edge_not_repeated():
    row = np.arange(4)[None]
    np.testing.assert_array_equal(mirror_crop(row, 0, -5, 1, 14)[0],
                                  [1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2])
    np.testing.assert_array_equal(mirror_crop(row, 0, -5, 1, 14),
                                  np.pad(row, ((0, 0), (5, 5)), mode="reflect"))
    np.testing.assert_array_equal(mirror_indices(-3, 7, 1), np.zeros(7))


def coordinate_image(height, width):
    """Channel 0 holds each pixel's row, channel 1 its column; the mask row * 1000 + column."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols]).astype(np.float32)
    mask = (rows * 1000 + cols).astype(np.int64)
    weight = (mask + 0.5).astype(np.float32)
    return image, mask, weight


@pytest.mark.parametrize("shape, input_size, output_size",
                         [((30, 41), 48, 8), ((30, 41), 60, 20), ((5, 9), 52, 12),
                          ((12, 7), 13, 13), ((6, 6), 11, 6)])
def test_random_tile_is_centred_on_mask_tile(shape, input_size, output_size):
    image, mask, weight = coordinate_image(*shape)
    rng = np.random.default_rng(0)
    margin = (input_size - output_size) // 2
    for _ in range(10):
        x, y, w = random_tile(image, mask, weight, input_size=input_size,
                              output_size=output_size, rng=rng)
        assert x.shape == (2, input_size, input_size) and x.dtype == np.float32
        assert y.shape == (output_size, output_size) and y.dtype == np.int64
        assert w.shape == (output_size, output_size) and w.dtype == np.float32
        centre = x[:, margin:margin + output_size, margin:margin + output_size]
        np.testing.assert_array_equal(centre[0] * 1000 + centre[1], y)
        np.testing.assert_array_equal(w, y + 0.5)
        # the input tile is the mirror-extended image around the output window
        rows = mirror_indices(int(y[0, 0]) // 1000 - margin, input_size, shape[0])
        cols = mirror_indices(int(y[0, 0]) % 1000 - margin, input_size, shape[1])
        if shape[0] >= output_size and shape[1] >= output_size:
            np.testing.assert_array_equal(x[0], np.broadcast_to(rows[:, None], x[0].shape))
            np.testing.assert_array_equal(x[1], np.broadcast_to(cols[None, :], x[1].shape))


def test_random_tile_inside_large_image_is_a_plain_crop():
    image, mask, _ = coordinate_image(25, 31)
    rng = np.random.default_rng(1)
    corners = set()
    for _ in range(60):
        _, y, w = random_tile(image, mask, None, input_size=48, output_size=8, rng=rng)
        assert w is None
        top, left = divmod(int(y[0, 0]), 1000)
        assert 0 <= top <= 25 - 8 and 0 <= left <= 31 - 8
        np.testing.assert_array_equal(y, mask[top:top + 8, left:left + 8])
        corners.add((top, left))
    assert len(corners) > 20  # positions vary
    # both extreme positions are reachable: the window may touch every border
    tops = {t for t, _ in corners}
    assert min(tops) <= 2 and max(tops) >= 15


def test_random_tile_smaller_image_lies_inside_window():
    image, mask, _ = coordinate_image(5, 3)
    rng = np.random.default_rng(2)
    for _ in range(10):
        x, y, _ = random_tile(image, mask, None, input_size=52, output_size=12, rng=rng)
        assert set(np.unique(y)) == set(np.unique(mask))
        assert x.shape == (2, 52, 52)
        # every row of the image appears unmirrored somewhere in the window
        assert any(np.array_equal(y[r:r + 5, 0] // 1000, np.arange(5)) for r in range(8))


def test_random_tile_deterministic_for_seeded_rng():
    image, mask, weight = coordinate_image(20, 20)
    a = random_tile(image, mask, weight, input_size=48, output_size=8,
                    rng=np.random.default_rng(7))
    b = random_tile(image, mask, weight, input_size=48, output_size=8,
                    rng=np.random.default_rng(7))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_random_tile_errors():
    image, mask, weight = coordinate_image(10, 10)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="output_size"):
        random_tile(image, mask, weight, input_size=8, output_size=12, rng=rng)
    with pytest.raises(ValueError, match="output_size"):
        random_tile(image, mask, weight, input_size=8, output_size=0, rng=rng)
    with pytest.raises(ValueError, match="mask and weight"):
        random_tile(image, mask[:9], weight, input_size=8, output_size=4, rng=rng)
    with pytest.raises(ValueError, match="mask and weight"):
        random_tile(image, mask, weight[:, :9], input_size=8, output_size=4, rng=rng)
