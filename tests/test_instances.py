"""instances_from_classes and instances_from_foreground: hand-made maps, touching disks,
the round trip through boundary_target, the synthetic dataset, and bad inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchseg.data import SyntheticShapes
from scratchseg.data.targets import boundary_target
from scratchseg.instances import instances_from_classes, instances_from_foreground


def paint_disks(shape, disks):
    """int32 labels: the k-th disk (centre row, centre col, radius), counting from 1, gets
    id k; later disks cover earlier ones where they overlap."""
    labels = np.zeros(shape, dtype=np.int32)
    rows, cols = np.ogrid[0:shape[0], 0:shape[1]]
    for k, (row, col, radius) in enumerate(disks, start=1):
        labels[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = k
    return labels


def best_ious(truth, predicted):
    """For each object of ``truth``, its largest IoU with an object of ``predicted``."""
    pairs = np.bincount(truth.ravel().astype(np.int64) * (predicted.max() + 1) + predicted.ravel(),
                        minlength=(truth.max() + 1) * (predicted.max() + 1))
    overlap = pairs.reshape(truth.max() + 1, predicted.max() + 1)[1:, 1:]
    true_sizes = np.bincount(truth.ravel(), minlength=truth.max() + 1)[1:]
    predicted_sizes = np.bincount(predicted.ravel(), minlength=predicted.max() + 1)[1:]
    union = true_sizes[:, None] + predicted_sizes[None, :] - overlap
    ious = overlap / np.maximum(union, 1)
    present = true_sizes > 0
    return ious.max(axis=1, initial=0.0)[present]


def assert_same_objects(truth, predicted, min_iou=0.7):
    assert predicted.max() == len(np.unique(truth[truth > 0]))
    ious = best_ious(truth, predicted)
    assert np.all(ious > min_iou), ious


def assert_consecutive_ids(labels):
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels[labels > 0]), np.arange(1, labels.max() + 1))


def three_touching_disks():
    return paint_disks((40, 80), [(20, 14, 10), (20, 33, 10), (18, 55, 12)])


def test_round_trip_recovers_touching_disks():
    labels = three_touching_disks()
    instances = instances_from_classes(boundary_target(labels))
    assert_consecutive_ids(instances)
    assert_same_objects(labels, instances, min_iou=0.9)


def test_round_trip_is_exact_for_touching_rectangles():
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[2:10, 2:14] = 5
    labels[2:10, 14:27] = 9
    labels[10:18, 6:20] = 2
    instances = instances_from_classes(boundary_target(labels, width=2))
    assert np.all(best_ious(labels, instances) == 1.0)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_round_trip_on_chains_of_touching_disks(data):
    """A row of 2 to 5 disks; neighbours overlap by up to 4 pixels or leave a 1-pixel gap."""
    count = data.draw(st.integers(2, 5))
    radii = data.draw(st.lists(st.integers(6, 12), min_size=count, max_size=count))
    gaps = data.draw(st.lists(st.integers(-4, 1), min_size=count - 1, max_size=count - 1))
    height = 2 * max(radii) + 10
    disks, col = [], radii[0] + 2
    for k, radius in enumerate(radii):
        if k:
            col += radii[k - 1] + gaps[k - 1] + radius
        row = height // 2 + data.draw(st.integers(-radius // 2, radius // 2))
        disks.append((row, col, radius))
    labels = paint_disks((height, col + radii[-1] + 3), disks)
    instances = instances_from_classes(boundary_target(labels))
    assert_consecutive_ids(instances)
    assert_same_objects(labels, instances)


def test_round_trip_on_the_synthetic_dataset():
    """Touching and overlapping ellipses, rectangles, triangles: all 21 objects of these 4
    images come back (IoU > 0.7); so did 373 of 373 in the first 64 images."""
    dataset = SyntheticShapes(4, 96, seed=0)
    ious = np.concatenate([
        best_ious(dataset[i].instances,
                  instances_from_classes(boundary_target(dataset[i].instances)))
        for i in range(len(dataset))
    ])
    assert ious.size == 21
    assert np.mean(ious > 0.7) >= 0.9


def test_boundary_without_interior_is_no_object():
    classes = np.zeros((12, 20), dtype=np.int64)
    classes[1:10, 1:10] = 2
    classes[3:8, 3:8] = 1  # an object with an interior
    classes[2:5, 13:18] = 2  # a blob with none, apart from it (noise, a sliver)
    classes[10, 14] = 2  # a stray boundary pixel
    instances = instances_from_classes(classes)
    assert_consecutive_ids(instances)
    assert instances.max() == 1
    assert (instances[1:10, 1:10] == 1).all()
    assert not instances[2:5, 13:18].any() and instances[10, 14] == 0


def test_boundary_pixels_join_the_nearest_interior():
    classes = np.full((5, 12), 2, dtype=np.int64)
    classes[1:4, 1:4] = 1
    classes[1:4, 8:11] = 1
    instances = instances_from_classes(classes)
    np.testing.assert_array_equal(instances[2], [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])


def test_interior_is_8_connected():
    classes = np.full((8, 8), 2, dtype=np.int64)
    classes[1:4, 1:4] = 1
    classes[4:7, 4:7] = 1  # touches the first block at one corner only
    assert instances_from_classes(classes).max() == 1


def test_other_class_values_and_custom_codes():
    classes = np.full((10, 10), 7, dtype=np.int64)  # 7: a class that is neither
    classes[1:9, 1:9] = 4
    classes[3:7, 3:7] = 3
    classes[0, 0] = -1  # an ignore label is background too
    instances = instances_from_classes(classes, interior=3, boundary=4)
    assert instances.max() == 1
    np.testing.assert_array_equal(instances > 0, (classes == 3) | (classes == 4))


def test_min_size_drops_small_objects_and_keeps_ids_consecutive():
    labels = paint_disks((40, 60), [(10, 10, 3), (20, 30, 8), (30, 8, 2), (25, 50, 6)])
    sizes = np.bincount(labels.ravel())[1:]  # 29, 197, 13, 113
    instances = instances_from_classes(boundary_target(labels, width=1), min_size=30)
    assert_consecutive_ids(instances)
    assert instances.max() == 2
    assert sorted(np.bincount(instances.ravel())[1:]) == sorted(s for s in sizes if s >= 30)
    assert instances_from_classes(boundary_target(labels, width=1), min_size=0).max() == 4


@pytest.mark.parametrize("shape", [(16, 24), (0, 5)])
def test_empty_input_gives_zeros(shape):
    for instances in (instances_from_classes(np.zeros(shape, dtype=np.int64)),
                      instances_from_foreground(np.zeros(shape, dtype=bool)),
                      instances_from_foreground(np.zeros(shape, dtype=bool), split=False)):
        assert instances.shape == shape and instances.dtype == np.int32
        assert not instances.any()


def test_touching_disks_merge_without_split_and_separate_with_it():
    labels = paint_disks((40, 60), [(20, 18, 12), (20, 40, 12)])  # overlap 2 pixels
    foreground = labels > 0
    assert instances_from_foreground(foreground, split=False).max() == 1
    split = instances_from_foreground(foreground)
    assert_consecutive_ids(split)
    assert_same_objects(labels, split, min_iou=0.9)


def test_split_separates_overlapping_disks_of_different_sizes():
    """Seeding whole inscribed disks puts the cut near the outlines' crossing points;
    seeding only the centres would hand the small disk a slice of the large one."""
    labels = paint_disks((50, 70), [(25, 24, 18), (20, 48, 8), (38, 50, 6)])
    assert_same_objects(labels, instances_from_foreground(labels > 0, split=True), min_iou=0.95)


def test_split_keeps_each_synthetic_shape_whole():
    """Ellipses, rotated rectangles and triangles, one at a time: never cut in two."""
    dataset = SyntheticShapes(8, 96, seed=1)
    for i in range(len(dataset)):
        for footprint in dataset.scene(i).footprints:
            assert instances_from_foreground(footprint).max() == 1


def test_split_on_the_synthetic_dataset_beats_connected_components():
    """From the foreground alone, all 21 objects of these 4 images come back (IoU > 0.7)
    with split=True and 12 with split=False; 311 and 164 of 373 in the first 64 images."""
    dataset = SyntheticShapes(4, 96, seed=0)
    found = {True: 0, False: 0}
    for i in range(len(dataset)):
        labels = dataset[i].instances
        for split in found:
            predicted = instances_from_foreground(labels > 0, split=split)
            found[split] += np.sum(best_ious(labels, predicted) > 0.7)
    assert found[True] >= 19 and found[True] > found[False] + 5


def test_foreground_accepts_bool_and_integer_zero_one():
    labels = three_touching_disks()
    as_bool = instances_from_foreground(labels > 0)
    np.testing.assert_array_equal(instances_from_foreground((labels > 0).astype(np.uint8)),
                                  as_bool)


def test_min_size_in_instances_from_foreground():
    labels = paint_disks((30, 40), [(10, 10, 6), (20, 30, 2)])
    for split in (True, False):
        instances = instances_from_foreground(labels > 0, split=split, min_size=20)
        assert instances.max() == 1 and np.all(instances[labels == 1] == 1)


def test_bad_inputs_are_refused():
    good = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(TypeError, match="instances_from_classes: classes must hold integers"):
        instances_from_classes(good.astype(np.float32))
    with pytest.raises(ValueError, match=r"classes must be 2-D \(H, W\), got shape \(1, 4, 4\)"):
        instances_from_classes(good[None])
    with pytest.raises(ValueError, match="interior and boundary must differ"):
        instances_from_classes(good, interior=2, boundary=2)
    for min_size in (-1, 2.5, True):
        with pytest.raises(ValueError, match="min_size must be an integer >= 0"):
            instances_from_classes(good, min_size=min_size)
        with pytest.raises(ValueError, match="min_size must be an integer >= 0"):
            instances_from_foreground(good, min_size=min_size)
    with pytest.raises(TypeError, match="instances_from_foreground: foreground must hold integers"):
        instances_from_foreground(np.full((4, 4), 0.7))
    with pytest.raises(ValueError, match=r"must hold 0 and 1 only, got values in \[0, 2\]"):
        instances_from_foreground(good + np.eye(4, dtype=np.int64) * 2)
