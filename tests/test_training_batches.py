"""training_batch, epoch_order, batch_indices, WeightMaps: tiles keyed on (seed, epoch, draw)."""

import numpy as np
import pytest

from scratchseg.data import (
    Sample,
    SyntheticShapes,
    WeightMaps,
    batch_indices,
    epoch_order,
    instances_from_mask,
    tiles_per_image,
    training_batch,
    unet_weight_map,
)

TILE = dict(input_size=48, output_size=8)


@pytest.fixture(scope="module")
def dataset():
    return SyntheticShapes(num_samples=5, size=32, seed=3, radius=(4.0, 7.0))


def batch(dataset, indices, epoch=0, seed=0, augment=True, weight_maps=None, draws=None,
          **tile):
    """The batch of ``indices``, drawn as draws ``draws`` (default: the indices themselves)."""
    draws = indices if draws is None else draws
    return training_batch(dataset, indices, draws, epoch=epoch, seed=seed, augment=augment,
                          weight_maps=weight_maps, **(tile or TILE))


def assert_batches_equal(a, b):
    for u, v in zip(a, b, strict=True):
        if u is None or v is None:
            assert u is None and v is None
        else:
            assert u.dtype == v.dtype
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("augment", [False, True])
def test_shapes_and_dtypes(dataset, augment):
    x, labels, weights = batch(dataset, [0, 3, 1], augment=augment, weight_maps=WeightMaps())
    assert x.shape == (3, 1, 48, 48) and x.dtype == np.float32
    assert labels.shape == (3, 8, 8) and labels.dtype == np.int64
    assert weights.shape == (3, 8, 8) and weights.dtype == np.float32
    assert labels.min() >= 0 and labels.max() < dataset.num_classes
    assert weights.min() >= 1.0
    _, _, none = batch(dataset, [0, 3], augment=augment)
    assert none is None


def test_deterministic(dataset):
    first = batch(dataset, [2, 4, 0], epoch=5, seed=9, weight_maps=WeightMaps())
    second = batch(dataset, [2, 4, 0], epoch=5, seed=9, weight_maps=WeightMaps())
    assert_batches_equal(first, second)


@pytest.mark.parametrize("augment", [False, True])
def test_independent_of_how_a_batch_is_split(dataset, augment):
    maps = WeightMaps(w0=10.0, sigma=3.0)
    whole = batch(dataset, [4, 1, 2], epoch=2, seed=7, augment=augment, weight_maps=maps)
    parts = [batch(dataset, [i], epoch=2, seed=7, augment=augment,
                   weight_maps=WeightMaps(w0=10.0, sigma=3.0)) for i in (4, 1)]
    parts.append(batch(dataset, [2], epoch=2, seed=7, augment=augment, weight_maps=maps))
    joined = tuple(np.concatenate([p[k] for p in parts]) for k in range(3))
    assert_batches_equal(whole, joined)
    # and of the order: sample 1's tile is the same wherever it sits in the batch
    reordered = batch(dataset, [1, 2, 4], epoch=2, seed=7, augment=augment, weight_maps=maps)
    for k in range(3):
        np.testing.assert_array_equal(reordered[k][0], whole[k][1])


def test_different_epochs_and_seeds_give_different_tiles(dataset):
    base = batch(dataset, [0, 1, 2], epoch=0, seed=0)
    for other in (batch(dataset, [0, 1, 2], epoch=1, seed=0),
                  batch(dataset, [0, 1, 2], epoch=0, seed=1)):
        for i in range(3):
            assert not np.array_equal(base[0][i], other[0][i])


def test_tile_without_augmentation_is_a_crop_of_the_sample(dataset):
    """augment=False, output = input: the tile is a plain crop of the sample's arrays."""
    x, labels, weights = batch(dataset, [1], epoch=3, augment=False, weight_maps=WeightMaps(),
                               input_size=16, output_size=16)
    sample = dataset[1]
    weight = unet_weight_map(sample.instances)
    hits = [(t, l) for t in range(17) for l in range(17)
            if np.array_equal(sample.image[:, t:t + 16, l:l + 16], x[0])]
    assert len(hits) >= 1
    t, l = hits[0]
    np.testing.assert_array_equal(labels[0], sample.mask[t:t + 16, l:l + 16])
    np.testing.assert_array_equal(weights[0], weight[t:t + 16, l:l + 16])


def test_epoch_order_is_a_seeded_permutation():
    for n in (0, 1, 7, 30):
        order = epoch_order([1] * n, epoch=2, seed=5)
        assert sorted(order.tolist()) == list(range(n))
    ones = [1] * 30
    np.testing.assert_array_equal(epoch_order(ones, epoch=2, seed=5),
                                  epoch_order(ones, epoch=2, seed=5))
    first = epoch_order(ones, epoch=2, seed=5)
    assert not np.array_equal(first, epoch_order(ones, epoch=3, seed=5))
    assert not np.array_equal(first, epoch_order(ones, epoch=2, seed=6))


def test_an_epoch_draws_each_image_by_its_area():
    counts = tiles_per_image([(256, 384), (64, 64), (10, 10)], 64)
    assert counts == [24, 1, 1]
    order = epoch_order(counts, epoch=0, seed=0)
    assert np.bincount(order).tolist() == [24, 1, 1]
    assert order[:10].tolist() != [0] * 10  # shuffled
    longer = epoch_order([2, 1], epoch=0, seed=0, total=7)  # rounds of 3, each shuffled
    assert np.bincount(longer[:6]).tolist() == [4, 2] and len(longer) == 7
    assert epoch_order([2, 1], epoch=0, seed=0, total=2).tolist() in ([0, 0], [0, 1], [1, 0])
    with pytest.raises(ValueError, match="no images"):
        epoch_order([], epoch=0, seed=0, total=3)


def test_draws_of_one_image_are_different_tiles(dataset):
    x, labels, _ = batch(dataset, [2, 2], draws=[0, 1])
    assert not np.array_equal(x[0], x[1])
    again, _, _ = batch(dataset, [2], draws=[1])
    np.testing.assert_array_equal(again[0], x[1])  # keyed on the draw, not the batch
    with pytest.raises(ValueError, match="one draw number per index"):
        batch(dataset, [2, 2], draws=[0])


def test_batch_indices_keeps_last_partial_batch():
    order = np.array([4, 0, 3, 1, 2, 6, 5])
    assert batch_indices(order, 3) == [[4, 0, 3], [1, 2, 6], [5]]
    assert batch_indices(order, 7) == [[4, 0, 3, 1, 2, 6, 5]]
    assert batch_indices(order, 10) == [[4, 0, 3, 1, 2, 6, 5]]
    assert batch_indices(order, 1) == [[i] for i in order.tolist()]
    assert batch_indices([], 4) == []
    assert all(type(i) is int for b in batch_indices(order, 2) for i in b)
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(order, 0)


def test_weight_maps_from_instances():
    ds = SyntheticShapes(num_samples=2, size=32, seed=1, radius=(4.0, 7.0))
    maps = WeightMaps(w0=5.0, sigma=2.0)
    sample = ds[1]
    np.testing.assert_array_equal(maps(1, sample), unet_weight_map(sample.instances, 5.0, 2.0))


def test_weight_maps_derives_instances_from_mask_and_caches():
    mask = np.zeros((12, 12), dtype=np.int64)
    mask[2:6, 1:5] = 1
    mask[2:6, 7:11] = 1  # same class, separate regions: two instances
    mask[8:11, 3:9] = 2
    sample = Sample(np.zeros((1, 12, 12), np.float32), mask, None, "hand")
    instances = np.zeros((12, 12), dtype=np.int32)
    instances[2:6, 1:5], instances[2:6, 7:11], instances[8:11, 3:9] = 1, 2, 3
    np.testing.assert_array_equal(instances_from_mask(mask) > 0, instances > 0)
    assert len(np.unique(instances_from_mask(mask))) == 4
    maps = WeightMaps(w0=10.0, sigma=3.0)
    weight = maps(0, sample)
    np.testing.assert_allclose(weight, unet_weight_map(instances, 10.0, 3.0), rtol=1e-6)
    assert weight[3, 5] > 1.5  # the gap between the two same-class squares
    # cached per index: a second call with another sample returns the first map
    other = Sample(sample.image, np.zeros_like(mask), None, "other")
    assert maps(0, other) is weight
    np.testing.assert_array_equal(maps(1, other), np.ones((12, 12), np.float32))


def test_sample_streams_are_apart_from_the_epoch_order(dataset, monkeypatch):
    """The generators of the epoch order and of every sample are distinct streams. NumPy's
    SeedSequence ignores trailing zero words, so keys like [seed, epoch] for the order and
    [seed, epoch, index] for a sample would make sample 0 draw the permutation's numbers."""
    created = []
    real_default_rng = np.random.default_rng

    def recording_default_rng(seed=None):
        created.append(seed)
        return real_default_rng(seed)

    samples = [dataset[i] for i in range(len(dataset))]  # a list is a dataset too
    monkeypatch.setattr(np.random, "default_rng", recording_default_rng)
    epoch_order([1] * len(samples), epoch=0, seed=2)
    batch(samples, [0, 1, 4], epoch=0, seed=2, weight_maps=WeightMaps())
    epoch_order([1] * len(samples), epoch=3, seed=2)
    batch(samples, [0, 1, 4], epoch=3, seed=2, weight_maps=WeightMaps())
    monkeypatch.undo()
    assert len(created) == 8
    states = {tuple(np.random.SeedSequence(key).generate_state(4).tolist()) for key in created}
    assert len(states) == 8


def test_a_large_image_is_augmented_in_a_window_around_the_tile(monkeypatch):
    """An image larger than the tile's input plus AUGMENT_MARGIN of context on each side:
    only that window is augmented (a draw costs the same whatever the image's size), the
    tile is its centre, and image, mask and weight stay aligned. A smaller image is
    augmented whole, as before."""
    from scratchseg.data import batches

    warped = []
    original = batches.augment_sample

    def recording(image, mask, weight, **kwargs):
        warped.append(image.shape[-2:])
        return original(image, mask, weight, **kwargs)

    monkeypatch.setattr(batches, "augment_sample", recording)
    large = SyntheticShapes(num_samples=2, size=200, seed=4)
    window = TILE["input_size"] + 2 * batches.AUGMENT_MARGIN
    x, labels, weights = batch(large, [0, 1], weight_maps=WeightMaps())
    assert warped == [(window, window)] * 2
    assert x.shape == (2, 1, 48, 48) and labels.shape == weights.shape == (2, 8, 8)
    # aligned: with augmentation doing nothing, the window's centre is the plain tile
    monkeypatch.setattr(batches, "augment_sample", lambda image, mask, weight, **_: (
        image, mask, weight))
    assert_batches_equal(batch(large, [0, 1], weight_maps=WeightMaps()),
                         batch(large, [0, 1], weight_maps=WeightMaps(), augment=False))
    monkeypatch.setattr(batches, "augment_sample", recording)
    warped.clear()
    small = SyntheticShapes(num_samples=1, size=32, seed=3)
    batch(small, [0])
    assert warped == [(32, 32)]
