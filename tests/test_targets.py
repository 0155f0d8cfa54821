"""boundary_target: hand-made maps, a pixel-by-pixel brute force, and bad inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scratchseg.data.targets import TARGETS, boundary_target


def brute_force_target(instances, width):
    """2 where the chessboard square of radius ``width`` (clipped to the image) holds another id."""
    height, width_px = instances.shape
    out = np.zeros(instances.shape, dtype=np.int64)
    for y in range(height):
        for x in range(width_px):
            if instances[y, x] == 0:
                continue
            square = instances[max(y - width, 0):y + width + 1, max(x - width, 0):x + width + 1]
            out[y, x] = 1 if np.all(square == instances[y, x]) else 2
    return out


def test_targets_names_the_two_training_targets():
    assert TARGETS == ("semantic", "boundary")


def test_isolated_square_gets_a_ring_of_width_pixels():
    instances = np.zeros((11, 11), dtype=np.int32)
    instances[2:9, 2:9] = 7
    expected = np.zeros((11, 11), dtype=np.int64)
    expected[2:9, 2:9] = 2
    expected[4:7, 4:7] = 1  # 7 - 2 * 2 = 3 interior rows and columns
    target = boundary_target(instances, width=2)
    assert target.dtype == np.int64
    np.testing.assert_array_equal(target, expected)


def test_touching_squares_are_parted_by_a_boundary_line():
    instances = np.zeros((9, 14), dtype=np.int32)
    instances[1:8, 1:7] = 1
    instances[1:8, 7:13] = 2  # touches square 1 along columns 6 | 7
    target = boundary_target(instances, width=1)
    np.testing.assert_array_equal(target[4], [0, 2, 1, 1, 1, 1, 2, 2, 1, 1, 1, 1, 2, 0])
    assert np.all(target[2:7, 6:8] == 2)  # the line between them, one pixel on each side
    wide = boundary_target(instances, width=2)
    np.testing.assert_array_equal(wide[4], [0, 2, 2, 1, 1, 2, 2, 2, 2, 1, 1, 2, 2, 0])


def test_background_stays_zero_and_ids_need_not_be_consecutive():
    instances = np.zeros((12, 12), dtype=np.uint16)
    instances[1:6, 1:6] = 40000
    instances[6:11, 6:11] = 3
    target = boundary_target(instances, width=1)
    np.testing.assert_array_equal(target == 0, instances == 0)
    assert np.all(target[2:5, 2:5] == 1) and np.all(target[7:10, 7:10] == 1)


def test_object_thinner_than_the_band_becomes_all_boundary():
    instances = np.zeros((9, 20), dtype=np.int32)
    instances[3:6, 2:18] = 1  # 3 pixels thick
    assert set(np.unique(boundary_target(instances, width=2)[instances > 0])) == {2}
    narrow = boundary_target(instances, width=1)
    assert np.all(narrow[4, 3:17] == 1) and np.all(narrow[3] != 1) and np.all(narrow[5] != 1)


def test_image_edge_is_not_a_boundary():
    instances = np.ones((6, 8), dtype=np.int32)
    instances[:, 5:] = 2
    target = boundary_target(instances, width=1)
    np.testing.assert_array_equal(target[0], [1, 1, 1, 1, 2, 2, 1, 1])


def test_width_sets_the_band():
    instances = np.zeros((21, 21), dtype=np.int32)
    instances[1:20, 1:20] = 1
    for width in (1, 2, 3, 5):
        interior = boundary_target(instances, width=width) == 1
        assert interior.sum() == (19 - 2 * width) ** 2


@settings(max_examples=60, deadline=None)
@given(
    instances=arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)),
                     elements=st.integers(0, 3)),
    width=st.integers(1, 3),
)
def test_matches_brute_force(instances, width):
    np.testing.assert_array_equal(boundary_target(instances, width=width),
                                  brute_force_target(instances, width))


def test_bad_inputs_are_refused():
    good = np.zeros((4, 4), dtype=np.int32)
    with pytest.raises(TypeError, match="instances must be an integer label map"):
        boundary_target(good.astype(np.float32))
    with pytest.raises(ValueError, match=r"2-D \(H, W\), got shape \(1, 4, 4\)"):
        boundary_target(good[None])
    with pytest.raises(ValueError, match="ids must be >= 0, got -1"):
        boundary_target(good - 1)
    for width in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="width must be an integer >= 1"):
            boundary_target(good, width=width)
