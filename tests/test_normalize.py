"""normalize_image: percentile, minmax, standardize and none, per channel, constant channels."""

import warnings

import numpy as np
import pytest

from scratchseg.data.normalize import NORMALIZATIONS, normalize_image


@pytest.fixture
def image():
    """Two channels on very different scales, as a uint16 and a float channel would be."""
    rng = np.random.default_rng(0)
    return np.stack([rng.normal(300, 40, (32, 40)),
                     rng.normal(0.5, 0.01, (32, 40))]).astype(np.float32)


def test_percentile_maps_the_percentiles_to_0_and_1_without_clipping(image):
    out = normalize_image(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    for channel, raw in zip(out, image):
        low, high = np.percentile(raw, [1.0, 99.8])
        np.testing.assert_allclose(channel, (raw - low) / (high - low), rtol=1e-4, atol=1e-5)
        assert channel.min() < 0 and channel.max() > 1  # the tails stay outside [0, 1]


def test_percentile_bounds_are_options(image):
    out = normalize_image(image, low=5, high=95)
    for channel in out:
        np.testing.assert_allclose(np.percentile(channel, [5, 95]), [0, 1], atol=1e-5)


def test_channels_are_normalised_independently(image):
    scaled = image * np.array([1000.0, 1.0], dtype=np.float32)[:, None, None]
    for mode in ("percentile", "minmax", "standardize"):
        np.testing.assert_allclose(normalize_image(scaled, mode), normalize_image(image, mode),
                                   rtol=1e-4, atol=1e-4)


def test_minmax(image):
    out = normalize_image(image, "minmax")
    np.testing.assert_allclose(out.min(axis=(1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=(1, 2)), 1, atol=1e-6)


def test_standardize(image):
    out = normalize_image(image, "standardize")
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-4)


def test_none_keeps_the_values_as_float32():
    raw = np.array([[[-5, 0, 1200]]], dtype=np.int16)
    out = normalize_image(raw, "none")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, raw)


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_constant_channel_gives_zeros_without_warnings(mode, image):
    image[1] = 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_image(image, mode)
    assert np.all(np.isfinite(out))
    expected = 7.0 if mode == "none" else 0.0
    np.testing.assert_array_equal(out[1], expected)
    assert out[0].std() > 0  # the other channel is untouched by the constant one


def test_sparse_channel_falls_back_to_its_range():
    """Both percentiles on the background (a few bright spots): min-max rather than zeros."""
    raw = np.zeros((1, 50, 50), dtype=np.float32)
    raw[0, 3, 4] = 200.0
    out = normalize_image(raw)
    assert out[0, 3, 4] == 1.0 and out.sum() == 1.0


def test_unknown_mode_names_normalize_and_the_choices(image):
    with pytest.raises(ValueError, match="normalize.*percentile, minmax, standardize, none"):
        normalize_image(image, "zscore")


def test_bad_shape_and_percentiles(image):
    with pytest.raises(ValueError, match=r"normalize: expected a \(C, H, W\) image"):
        normalize_image(image[0])
    with pytest.raises(ValueError, match="low < high"):
        normalize_image(image, low=99, high=1)
