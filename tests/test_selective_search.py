"""scratchseg.detection.selective_search: finds flat objects, returns valid, unique,
reproducible boxes, and runs fast enough on real images."""

import time

import numpy as np
import pytest

from scratchseg.detection.boxes import box_iou
from scratchseg.detection.selective_search import (
    _hierarchy,
    _pixel_bins,
    _Regions,
    selective_search,
)

RECTANGLES = np.array([[5, 6, 25, 20], [35, 8, 58, 30], [12, 35, 50, 58]], dtype=float)


def rectangles_image(size=64, noise=0.02, seed=0):
    """(3, size, size): three flat coloured rectangles on a grey, slightly noisy background."""
    rng = np.random.default_rng(seed)
    image = 0.2 + rng.normal(0, noise, (3, size, size))
    scale = size / 64
    for (x1, y1, x2, y2), colour in zip((RECTANGLES * scale).astype(int),
                                        [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.2, 0.3, 0.9)]):
        image[:, y1:y2, x1:x2] = np.array(colour)[:, None, None]
    return image * 255 - 40                                   # any range: rescaled inside


def check_valid(boxes, height, width, max_boxes=2000, min_box_size=4):
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert 0 < len(boxes) <= max_boxes
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= width)
    assert np.all(boxes[:, 3] <= height)
    assert np.all(boxes[:, 2:] - boxes[:, :2] >= min_box_size)
    assert len(np.unique(boxes, axis=0)) == len(boxes)


def test_finds_each_rectangle():
    image = rectangles_image()
    boxes = selective_search(image)
    check_valid(boxes, 64, 64)
    assert np.all(box_iou(RECTANGLES, boxes).max(axis=1) >= 0.9)
    assert np.any(np.all(boxes == [0, 0, 64, 64], axis=1))       # the top of a hierarchy


def test_finds_rectangles_in_grey_and_larger_images():
    grey = rectangles_image(noise=0.0).mean(axis=0)              # (H, W): still distinct
    assert np.all(box_iou(RECTANGLES, selective_search(grey)).max(axis=1) >= 0.9)
    boxes = selective_search(rectangles_image(size=160, noise=0.05))
    check_valid(boxes, 160, 160)
    assert np.all(box_iou(RECTANGLES * 2.5, boxes).max(axis=1) >= 0.9)


def test_grouping_merges_most_similar_adjacent_pair_first():
    """Three bands stacked in a left column (dark, bright, bright) beside a grey column."""
    labels = np.zeros((12, 10), dtype=np.int64)
    pixels = np.zeros((12, 10, 1))
    for label, (rows, cols, value) in enumerate([(slice(0, 4), slice(0, 6), 0.1),
                                                 (slice(4, 8), slice(0, 6), 0.9),
                                                 (slice(8, 12), slice(0, 6), 0.91),
                                                 (slice(0, 12), slice(6, 10), 0.5)]):
        labels[rows, cols], pixels[rows, cols] = label, value
    created = _hierarchy(labels, _pixel_bins(pixels))
    np.testing.assert_array_equal(created, [[0, 0, 6, 4], [0, 4, 6, 8], [0, 8, 6, 12],
                                            [6, 0, 10, 12],           # the initial regions
                                            [0, 4, 6, 12],            # the two bright bands
                                            [0, 0, 6, 12],            # + the dark (best fill)
                                            [0, 0, 10, 12]])          # the whole image


def region_reference(labels, bins, members):
    """Colour and texture histograms, size and box of the union of ``members``, by loops."""
    mask = np.isin(labels, members)
    histograms = []
    for per_pixel, nbins in zip(bins, (25, 10)):
        counts = [np.bincount(per_pixel[..., d][mask], minlength=nbins)
                  for d in range(per_pixel.shape[-1])]
        histograms.append(np.concatenate(counts) / (mask.sum() * per_pixel.shape[-1]))
    rows, cols = np.nonzero(mask)
    box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    return histograms[0], histograms[1], mask.sum(), box


def test_region_features_similarity_and_merge_against_loops():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(0, 4, (4, 5)), 3, axis=0), 3, axis=1)
    labels[0, 0] = 4                                       # a one-pixel region
    pixels = rng.random((12, 15, 2))
    bins = _pixel_bins(pixels)
    regions = _Regions(labels, bins)
    for r in range(5):
        colour, texture, size, box = region_reference(labels, bins, [r])
        np.testing.assert_allclose(regions.colour[r], colour, rtol=1e-12)
        np.testing.assert_allclose(regions.texture[r], texture, rtol=1e-12)
        assert regions.size[r] == size and regions.box[r].tolist() == box
    i, j = 1, 3
    a, b = region_reference(labels, bins, [i]), region_reference(labels, bins, [j])
    union = region_reference(labels, bins, [i, j])
    fill = 1 - ((union[3][2] - union[3][0]) * (union[3][3] - union[3][1]) - union[2]) / 180
    expected = (sum(min(x, y) for x, y in zip(a[0], b[0]))
                + sum(min(x, y) for x, y in zip(a[1], b[1])) + (1 - union[2] / 180) + fill)
    np.testing.assert_allclose(regions.similarity(np.array([i]), np.array([j])), [expected],
                               rtol=1e-12)
    t = regions.merge(i, j)                                # weighted average == union's
    np.testing.assert_allclose(regions.colour[t], union[0], rtol=1e-12)
    np.testing.assert_allclose(regions.texture[t], union[1], rtol=1e-12)
    assert regions.size[t] == union[2] and regions.box[t].tolist() == union[3]


def test_min_box_size_keeps_exact_edge():
    boxes = selective_search(rectangles_image(), min_box_size=14)    # rectangle 0 is 20 x 14
    assert np.any(np.all(boxes == RECTANGLES[0], axis=1))
    check_valid(boxes, 64, 64, min_box_size=14)


def test_deterministic_for_a_seed_and_ranked_by_seed():
    image = rectangles_image(noise=0.1)
    first = selective_search(image, seed=3)
    np.testing.assert_array_equal(first, selective_search(image, seed=3))
    other = selective_search(image, seed=4)
    assert not np.array_equal(first, other)
    assert {tuple(b) for b in first.tolist()} == {tuple(b) for b in other.tolist()}


def test_ranking_puts_the_tops_of_hierarchies_first():
    """Rank = position from the top times u ~ U[0, 1): the whole image (position 1 in every
    hierarchy) lands near the front, the small initial regions towards the back."""
    rng = np.random.default_rng(0)                         # 8 x 8 blocks of random colours
    image = np.kron(rng.random((3, 8, 8)), np.ones((1, 8, 8))) + rng.normal(0, 0.01, (3, 64, 64))
    spots = []
    for seed in range(8):
        boxes = selective_search(image, seed=seed)
        spots.append(np.flatnonzero(np.all(boxes == [0, 0, 64, 64], axis=1))[0] / len(boxes))
    assert np.median(spots) < 0.1


def test_limits_and_any_channel_count():
    rng = np.random.default_rng(1)
    image = rng.random((5, 48, 40))
    boxes = selective_search(image, max_boxes=10, min_box_size=8)
    check_valid(boxes, 48, 40, max_boxes=10, min_box_size=8)
    np.testing.assert_array_equal(boxes, selective_search(image, min_box_size=8)[:10])
    check_valid(selective_search(rng.random((1, 30, 50)), scales=(100,)), 30, 50)
    np.testing.assert_array_equal(selective_search(np.ones((2, 9, 7))), [[0, 0, 7, 9]])
    assert selective_search(np.zeros((3, 3))).shape == (0, 4)


def test_real_image_sanity_and_time():
    data = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    image = np.moveaxis(resize(data.astronaut(), (128, 128), anti_aliasing=True), -1, 0)
    start = time.perf_counter()
    boxes = selective_search(image)
    elapsed = time.perf_counter() - start
    check_valid(boxes, 128, 128)
    assert len(boxes) > 200
    assert elapsed < 5.0, f"selective_search took {elapsed:.2f} s on a 128 x 128 image"


@pytest.mark.parametrize("image, error, match", [
    (np.zeros((2, 3, 4, 5)), ValueError, r"\(C, H, W\) or \(H, W\)"),
    (np.zeros((0, 4, 4)), ValueError, r"\(C, H, W\)"),
    (np.array([["a"]]), TypeError, "real array"),
    (np.full((4, 4), np.nan), ValueError, "non-finite"),
])
def test_errors(image, error, match):
    with pytest.raises(error, match=match):
        selective_search(image)
