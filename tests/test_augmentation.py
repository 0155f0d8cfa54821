"""augment: one geometry for image, mask and weight; determinism; dtypes; intensity jitter."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from scratchseg.data import augment
from scratchseg.data.augment import elastic_displacement, warp

RIGID = dict(elastic=False, intensity=False)


def coordinate_sample(height, width, image_dtype=np.float32, mask_dtype=np.int64):
    """Image channels: row and column; mask: row * 100 + column; weight: the mask + 0.25."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols]).astype(image_dtype)
    mask = (rows * 100 + cols).astype(mask_dtype)
    weight = (rows * 100 + cols + 0.25).astype(np.float32)
    return image, mask, weight


def dihedral(array):
    """The 8 flips/rotations of an (..., H, W) array."""
    out = []
    for k in range(4):
        rotated = np.rot90(array, k, axes=(-2, -1))
        out += [rotated, np.flip(rotated, axis=-1)]
    return out


@settings(max_examples=30)
@given(st.integers(0, 2**32 - 1), st.integers(1, 7), st.integers(1, 7))
def test_rigid_transforms_agree_on_image_mask_weight(seed, height, width):
    image, mask, weight = coordinate_sample(height, width)
    x, y, w = augment(image, mask, weight, rng=np.random.default_rng(seed), **RIGID)
    np.testing.assert_array_equal(x[0] * 100 + x[1], y)
    np.testing.assert_array_equal(w, y + 0.25)
    # a true flip/rotation of the input, not any rearrangement
    assert any(np.array_equal(y, candidate) for candidate in dihedral(mask))
    assert any(np.array_equal(x, candidate) for candidate in dihedral(image))


def test_rigid_transforms_reach_all_eight_and_swap_non_square_shape():
    image, mask, weight = coordinate_sample(3, 5)
    seen, shapes = set(), set()
    for seed in range(80):
        x, y, w = augment(image, mask, weight, rng=np.random.default_rng(seed), **RIGID)
        shapes.add(y.shape)
        assert x.shape == (2,) + y.shape and w.shape == y.shape
        seen.add(next(k for k, c in enumerate(dihedral(mask)) if np.array_equal(y, c)))
    assert seen == set(range(8))
    assert shapes == {(3, 5), (5, 3)}


def test_flip_only_and_rotate_only():
    image, mask, _ = coordinate_sample(4, 6)
    for seed in range(20):
        _, y, _ = augment(image, mask, rng=np.random.default_rng(seed), rotate=False, **RIGID)
        assert y.shape == (4, 6)
        assert any(np.array_equal(y, c) for c in
                   (mask, mask[::-1], mask[:, ::-1], mask[::-1, ::-1]))
    for seed in range(20):
        _, y, _ = augment(image, mask, rng=np.random.default_rng(seed), flip=False, **RIGID)
        assert any(np.array_equal(y, np.rot90(mask, k)) for k in range(4))


def test_all_off_returns_equal_copies():
    image, mask, weight = coordinate_sample(4, 5)
    x, y, w = augment(image, mask, weight, rng=np.random.default_rng(0), flip=False,
                      rotate=False, elastic=False, intensity=False)
    np.testing.assert_array_equal(x, image)
    np.testing.assert_array_equal(y, mask)
    np.testing.assert_array_equal(w, weight)
    x[...] = -1
    assert image.min() == 0  # new arrays, the input untouched


MASK_VALUES = np.array([0, 3, 7, 50, 200])  # sparse: interpolating them would invent values


def blocks_sample(height=40, width=48, levels=4, seed=0):
    """A piecewise-constant image of 8x8 blocks at values k / levels; the mask holds
    MASK_VALUES[round(image * levels)]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, levels + 1, size=(height // 8, width // 8))
    values = np.kron(coarse, np.ones((8, 8), dtype=np.int64))
    image = (values / levels).astype(np.float32)[None]
    mask = MASK_VALUES[np.rint(image[0] * levels).astype(np.int64)]
    return image, mask, levels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elastic_keeps_mask_values_and_image_mask_agreement(seed):
    image, mask, levels = blocks_sample(seed=seed)
    weight = mask.astype(np.float32) * 2 + 1
    x, y, w = augment(image, mask, weight, rng=np.random.default_rng(seed), intensity=False,
                      elastic_sigma=4.0)
    assert set(np.unique(y)) <= set(np.unique(mask))
    agree = MASK_VALUES[np.clip(np.rint(x[0] * levels), 0, levels).astype(np.int64)] == y
    assert agree.mean() > 0.85
    # pixels whose 5x5 neighbourhood in the mask is constant sit inside a block: all agree
    interior = (ndimage.maximum_filter(y, 5) == ndimage.minimum_filter(y, 5))
    assert interior.mean() > 0.2
    assert agree[interior].mean() > 0.98
    # the weight map follows too (bilinear: exact inside blocks)
    np.testing.assert_allclose(w[interior], y[interior] * 2 + 1, atol=1e-4)


def test_warp_displacement_is_rows_then_columns():
    """displacement[0] moves rows, [1] columns: out(p) = in(p + u(p)) for integer shifts."""
    rng = np.random.default_rng(0)
    array = rng.random((2, 9, 11))
    field = np.zeros((2, 9, 11))
    field[0] = 2.0  # read two rows further down
    for order in (0, 1, 3):
        out = warp(array, field, order)
        assert out.shape == array.shape and out.dtype == array.dtype
        np.testing.assert_allclose(out[:, :-2], array[:, 2:], atol=1e-12)
    field = np.zeros((2, 9, 11))
    field[1] = -3.0  # three columns to the left
    out = warp(array, field, 1)
    np.testing.assert_allclose(out[:, :, 3:], array[:, :, :-3], atol=1e-12)
    labels = rng.integers(0, 5, size=(1, 9, 11))
    field = rng.normal(0, 2.0, size=(2, 9, 11))
    warped = warp(labels, field, 0)
    assert warped.dtype == labels.dtype
    assert set(np.unique(warped)) <= set(np.unique(labels))


def test_elastic_actually_deforms():
    image, mask, _ = blocks_sample(seed=3)
    _, y, _ = augment(image, mask, rng=np.random.default_rng(3), flip=False, rotate=False,
                      intensity=False, elastic_sigma=4.0)
    assert not np.array_equal(y, mask)
    assert (y == mask).mean() > 0.5  # a smooth deformation, not a scramble


def test_elastic_displacement_smooth_and_sized():
    field = elastic_displacement(np.random.default_rng(0), (12, 17), 5.0, 3)
    assert field.shape == (2, 12, 17) and field.dtype == np.float64
    assert np.abs(np.diff(field, axis=1)).max() < 5.0  # smooth between neighbours
    with pytest.raises(ValueError, match="grid"):
        elastic_displacement(np.random.default_rng(0), (12, 17), 5.0, 1)


@pytest.mark.parametrize("elastic", [False, True])
def test_same_seed_same_result_different_seed_differs(elastic):
    image, mask, levels = blocks_sample(seed=4)
    image = image + np.random.default_rng(0).random(image.shape, dtype=np.float32) * 0.01
    weight = mask.astype(np.float32)
    options = dict(elastic=elastic, elastic_sigma=4.0)
    a = augment(image, mask, weight, rng=np.random.default_rng(11), **options)
    b = augment(image, mask, weight, rng=np.random.default_rng(11), **options)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = augment(image, mask, weight, rng=np.random.default_rng(12), **options)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("elastic", [False, True])
@pytest.mark.parametrize("image_dtype, mask_dtype",
                         [(np.float32, np.int64), (np.float64, np.int32), (np.float32, np.uint8)])
def test_dtypes_kept(elastic, image_dtype, mask_dtype):
    image, mask, weight = coordinate_sample(9, 11, image_dtype, mask_dtype)
    mask = mask % 7
    weight = weight.astype(np.float64)
    x, y, w = augment(image, mask, weight, rng=np.random.default_rng(0), elastic=elastic)
    assert x.dtype == image_dtype and y.dtype == mask_dtype and w.dtype == np.float64
    assert x.flags.c_contiguous and y.flags.c_contiguous and w.flags.c_contiguous
    _, _, none = augment(image, mask, None, rng=np.random.default_rng(0), elastic=elastic)
    assert none is None


@pytest.mark.parametrize("seed", range(5))
def test_intensity_changes_only_the_image(seed):
    image, mask, weight = coordinate_sample(6, 9)
    image = image / 10
    plain = augment(image, mask, weight, rng=np.random.default_rng(seed), elastic=False,
                    intensity=False)
    jittered = augment(image, mask, weight, rng=np.random.default_rng(seed), elastic=False,
                       intensity=True, max_gain=1.25, offset=0.3)
    np.testing.assert_array_equal(jittered[1], plain[1])
    np.testing.assert_array_equal(jittered[2], plain[2])
    assert not np.array_equal(jittered[0], plain[0])
    # image * a + b with a in [0.8, 1.25], b in [-0.3, 0.3]: fit a, b from two pixels
    flat_j, flat_p = jittered[0].ravel().astype(np.float64), plain[0].ravel().astype(np.float64)
    i, j = np.argmin(flat_p), np.argmax(flat_p)
    a = (flat_j[j] - flat_j[i]) / (flat_p[j] - flat_p[i])
    b = flat_j[i] - a * flat_p[i]
    assert 0.8 <= a <= 1.25 and -0.3 <= b <= 0.3
    np.testing.assert_allclose(flat_j, a * flat_p + b, atol=1e-5)


def test_errors():
    image, mask, weight = coordinate_sample(5, 6)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="C, H, W"):
        augment(image[0], mask, weight, rng=rng)
    with pytest.raises(TypeError, match="floating"):
        augment(image.astype(np.int32), mask, weight, rng=rng)
    with pytest.raises(ValueError, match="mask"):
        augment(image, mask.T, weight, rng=rng)
    with pytest.raises(ValueError, match="weight"):
        augment(image, mask, weight[:4], rng=rng)
