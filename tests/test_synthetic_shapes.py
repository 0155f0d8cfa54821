"""SyntheticShapes: seeded, per-index scenes with consistent masks and instance maps."""

import numpy as np
import pytest

from scratchseg.data import SyntheticShapes

SMALL = dict(size=40, radius=(5.0, 9.0))


@pytest.fixture(scope="module")
def dataset():
    return SyntheticShapes(num_samples=12, seed=4, **SMALL)


@pytest.fixture(scope="module")
def samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_shapes_dtypes_and_attributes(dataset, samples):
    assert len(dataset) == 12
    assert dataset.num_classes == 4 and dataset.in_channels == 1
    assert list(dataset.class_values) == [0, 1, 2, 3]
    for i, sample in enumerate(samples):
        assert sample.image.shape == (1, 40, 40) and sample.image.dtype == np.float32
        assert sample.mask.shape == (40, 40) and sample.mask.dtype == np.int64
        assert sample.instances.shape == (40, 40) and sample.instances.dtype == np.int32
        assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
        assert sample.mask.min() >= 0 and sample.mask.max() <= 3
        assert sample.name == f"synthetic-{i:05d}"


def test_non_square_size():
    ds = SyntheticShapes(num_samples=4, size=(24, 64), radius=(4.0, 7.0))
    columns = []
    for i in range(len(ds)):
        sample = ds[i]
        assert sample.image.shape == (1, 24, 64)
        assert sample.mask.shape == sample.instances.shape == (24, 64)
        columns.extend(np.nonzero(sample.mask.any(axis=0))[0].tolist())
    # objects are placed over the whole width, not only its first 24 columns
    assert max(columns) > 45 and min(columns) < 20


def test_deterministic_per_seed_and_index(samples):
    other = SyntheticShapes(num_samples=12, seed=4, **SMALL)
    for i in (7, 0, 11, 3):  # any order: a sample does not depend on those drawn before
        a, b = other[i], samples[i]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.instances, b.instances)
    np.testing.assert_array_equal(other[-1].mask, samples[11].mask)
    # the sample count does not change what index i holds
    longer = SyntheticShapes(num_samples=40, seed=4, **SMALL)
    np.testing.assert_array_equal(longer[5].image, samples[5].image)


def test_different_seed_or_index_differs(samples):
    reseeded = SyntheticShapes(num_samples=12, seed=5, **SMALL)
    for i in range(3):
        assert not np.array_equal(reseeded[i].image, samples[i].image)
    assert not np.array_equal(samples[0].image, samples[1].image)


def test_all_classes_present(samples):
    present = set()
    for sample in samples[:6]:
        present |= set(np.unique(sample.mask).tolist())
    assert present == {0, 1, 2, 3}


def test_each_instance_is_foreground_of_one_class(samples):
    for sample in samples:
        ids = np.unique(sample.instances)
        assert ids[0] == 0 and len(ids) >= 2
        np.testing.assert_array_equal(sample.instances > 0, sample.mask > 0)
        for k in ids[1:]:
            classes = np.unique(sample.mask[sample.instances == k])
            assert classes.size == 1 and classes[0] > 0


def test_objects_are_brighter_than_background(samples):
    """The classes are learnable: foreground means exceed the background mean."""
    for sample in samples:
        image, mask = sample.image[0], sample.mask
        background = image[mask == 0].mean()
        for k in np.unique(mask[mask > 0]):
            assert image[mask == k].mean() > background + 0.1


def adjacent_pairs(instances):
    """Pairs of different nonzero instance ids that are 4-adjacent somewhere."""
    pairs = set()
    for a, b in ((instances[:, :-1], instances[:, 1:]), (instances[:-1], instances[1:])):
        touching = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[touching].tolist(), b[touching].tolist())}
    return pairs


def test_touching_and_overlapping_objects_occur(dataset, samples):
    touching = [i for i, s in enumerate(samples) if adjacent_pairs(s.instances)]
    assert len(touching) >= 6
    # and some object is partly hidden: its footprint exceeds its visible pixels
    occluded = 0
    for i in range(len(dataset)):
        scene = dataset.scene(i)
        for j, footprint in enumerate(scene.footprints, start=1):
            visible = (scene.instances == j).sum()
            assert visible <= footprint.sum()
            assert visible >= 0.7 * footprint.sum() - 1e-9  # max_occlusion 0.3
            occluded += visible < footprint.sum()
    assert occluded >= 2


def test_num_objects_respected():
    ds = SyntheticShapes(num_samples=6, seed=2, num_objects=(2, 3), **SMALL)
    for i in range(len(ds)):
        count = len(np.unique(ds[i].instances)) - 1
        assert 1 <= count <= 3


def test_index_out_of_range():
    ds = SyntheticShapes(num_samples=3, **SMALL)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds[-4]


def test_constructor_errors():
    with pytest.raises(ValueError, match="size"):
        SyntheticShapes(num_samples=2, size=18, radius=(4.0, 9.0))
    with pytest.raises(ValueError, match="size"):
        SyntheticShapes(num_samples=2, size=(40, 18), radius=(4.0, 9.0))
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticShapes(num_samples=-1, **SMALL)
    assert len(SyntheticShapes(num_samples=0, **SMALL)) == 0
    SyntheticShapes(num_samples=1, size=19, radius=(4.0, 9.0))  # 2 * 9 + 1 fits
