"""unet_weight_map: the U-Net paper's Eq. 2 against hand-computed values and a brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scratchseg.data import unet_weight_map


def brute_force_weight_map(instances, w0, sigma, class_balance=False):
    """Eq. 2 pixel by pixel: distances to every pixel of every instance, two smallest minima."""
    instances = np.asarray(instances)
    height, width = instances.shape
    foreground = instances > 0
    share = foreground.mean()
    if class_balance and 0 < share < 1:
        weight_fg, weight_bg = 1 / (2 * share), 1 / (2 * (1 - share))
    else:
        weight_fg = weight_bg = 1.0
    ids = sorted(set(instances[foreground].tolist()))
    members = {k: np.argwhere(instances == k) for k in ids}
    out = np.empty((height, width))
    for y in range(height):
        for x in range(width):
            if foreground[y, x]:
                out[y, x] = weight_fg
                continue
            out[y, x] = weight_bg
            if len(ids) < 2:
                continue
            per_instance = sorted(
                float(np.sqrt(((pixels - (y, x)) ** 2).sum(axis=1)).min())
                for pixels in members.values()
            )
            d1, d2 = per_instance[0], per_instance[1]
            out[y, x] += w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return out


def two_squares():
    """Two 4x4 squares on rows 4..7, columns 2..5 and 10..13: a gap of columns 6..9."""
    instances = np.zeros((12, 16), dtype=np.int32)
    instances[4:8, 2:6] = 1
    instances[4:8, 10:14] = 2
    return instances


def three_instances_24():
    instances = np.zeros((24, 24), dtype=np.int64)
    instances[2:8, 3:9] = 5  # ids need not be consecutive
    instances[10:13, 11:20] = 9
    yy, xx = np.mgrid[0:24, 0:24]
    instances[(yy - 18) ** 2 + (xx - 6) ** 2 <= 10] = 2
    return instances


def test_midway_pixel_has_hand_computed_weight():
    instances = two_squares()
    w0, sigma = 10.0, 5.0
    weight = unet_weight_map(instances, w0=w0, sigma=sigma)
    # (5, 7): 2 pixels right of square 1's edge column 5, 3 left of square 2's column 10
    expected = 1 + w0 * np.exp(-((2 + 3) ** 2) / (2 * sigma**2))
    assert weight[5, 7] == pytest.approx(expected, rel=1e-6)
    assert weight[5, 8] == pytest.approx(expected, rel=1e-6)  # mirror image: 3 and 2
    # (2, 7): diagonal to the corners (4, 5) and (4, 10): Euclidean, not city-block
    d1, d2 = np.sqrt(2**2 + 2**2), np.sqrt(2**2 + 3**2)
    expected = 1 + w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    assert weight[2, 7] == pytest.approx(expected, rel=1e-6)


def test_gap_pixels_weigh_more_than_far_background():
    weight = unet_weight_map(two_squares(), w0=10.0, sigma=5.0)
    assert weight[5, 7] > weight[0, 0] > 1.0
    assert weight[5, 7] > weight[11, 15]


@pytest.mark.parametrize("w0, sigma", [(10.0, 5.0), (10.0, 2.0), (3.0, 8.0)])
def test_matches_brute_force_three_instances(w0, sigma):
    instances = three_instances_24()
    weight = unet_weight_map(instances, w0=w0, sigma=sigma)
    np.testing.assert_allclose(weight, brute_force_weight_map(instances, w0, sigma),
                               rtol=1e-6, atol=1e-6)


def test_matches_brute_force_with_class_balance():
    instances = three_instances_24()
    weight = unet_weight_map(instances, w0=10.0, sigma=5.0, class_balance=True)
    expected = brute_force_weight_map(instances, 10.0, 5.0, class_balance=True)
    np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-6)


@settings(max_examples=25)
@given(arrays(np.int16, st.tuples(st.integers(1, 9), st.integers(1, 9)),
              elements=st.integers(0, 4)),
       st.floats(0.5, 6.0), st.floats(0.0, 12.0))
def test_matches_brute_force_random_maps(instances, sigma, w0):
    weight = unet_weight_map(instances, w0=w0, sigma=sigma)
    np.testing.assert_allclose(weight, brute_force_weight_map(instances, w0, sigma),
                               rtol=1e-6, atol=1e-6)


def test_foreground_pixels_have_class_weight_only():
    instances = three_instances_24()
    weight = unet_weight_map(instances, w0=10.0, sigma=5.0)
    assert np.all(weight[instances > 0] == 1.0)
    assert np.all(weight[instances == 0] > 1.0)


@pytest.mark.parametrize("ids", [[], [3]])
def test_fewer_than_two_instances_gives_ones(ids):
    instances = np.zeros((10, 12), dtype=np.int32)
    for k in ids:
        instances[2:5, 3:9] = k
        instances[7:9, 1:3] = k  # one instance in two pieces is still one instance
    weight = unet_weight_map(instances, w0=10.0, sigma=5.0)
    np.testing.assert_array_equal(weight, np.ones((10, 12), dtype=np.float32))


def test_w0_zero_gives_ones():
    weight = unet_weight_map(two_squares(), w0=0.0, sigma=5.0)
    np.testing.assert_array_equal(weight, np.ones(two_squares().shape, dtype=np.float32))


def test_class_balance_mean_one_and_inverse_frequency():
    instances = np.zeros((10, 10), dtype=np.int32)
    instances[1:4, 1:9] = 1  # 24 of 100 pixels
    weight = unet_weight_map(instances, class_balance=True)
    assert weight.mean() == pytest.approx(1.0, rel=1e-6)
    share = 0.24
    fg, bg = np.unique(weight[instances > 0]), np.unique(weight[instances == 0])
    assert fg.size == 1 and bg.size == 1
    # w_fg / w_bg = frequency_bg / frequency_fg
    assert fg[0] / bg[0] == pytest.approx((1 - share) / share, rel=1e-6)
    assert fg[0] == pytest.approx(1 / (2 * share), rel=1e-6)


@pytest.mark.parametrize("fill", [0, 1])
def test_class_balance_single_class_image_is_ones(fill):
    instances = np.full((5, 6), fill, dtype=np.int32)
    weight = unet_weight_map(instances, class_balance=True)
    np.testing.assert_array_equal(weight, np.ones((5, 6), dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_float32_output_for_integer_inputs(dtype):
    weight = unet_weight_map(two_squares().astype(dtype))
    assert weight.dtype == np.float32
    assert weight.shape == two_squares().shape


def test_errors():
    with pytest.raises(TypeError, match="integer"):
        unet_weight_map(two_squares().astype(np.float32))
    with pytest.raises(ValueError, match="2-D"):
        unet_weight_map(two_squares()[None])
    with pytest.raises(ValueError, match="2-D"):
        unet_weight_map(np.zeros(5, dtype=np.int32))
    negative = two_squares()
    negative[0, 0] = -1
    with pytest.raises(ValueError, match=">= 0"):
        unet_weight_map(negative)
    with pytest.raises(ValueError, match="w0"):
        unet_weight_map(two_squares(), w0=-1.0)
    for sigma in (0.0, -2.0):
        with pytest.raises(ValueError, match="sigma"):
            unet_weight_map(two_squares(), sigma=sigma)
