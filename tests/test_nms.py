"""scratchseg.detection.nms against brute-force greedy loops (and torchvision when it loads)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_boxes import iou_reference, random_boxes

from scratchseg.detection.nms import batched_nms, nms


def nms_reference(boxes, scores, threshold):
    """The textbook greedy loop: visit by descending score (stable), keep unless IoU > t."""
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    iou = iou_reference(boxes, boxes)
    kept = []
    for k in order:
        if all(iou[k, j] <= threshold for j in kept):
            kept.append(k)
    return kept


def scores_with_ties(rng, count):
    return rng.integers(0, max(count // 2, 1), count) / 4.0        # many equal scores


counts = st.integers(0, 40)
seeds = st.integers(0, 2**32 - 1)
thresholds = st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0])


@given(counts, seeds, thresholds, st.booleans())
def test_matches_greedy_reference(count, seed, threshold, ties):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, count, extent=30)
    scores = scores_with_ties(rng, count) if ties else rng.random(count)
    kept = nms(boxes, scores, threshold)
    assert kept.dtype == np.int64
    np.testing.assert_array_equal(kept, nms_reference(boxes, scores, threshold))


def test_strictly_greater_suppresses_and_ties_keep_lower_index():
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [0, 0, 2, 2], [10, 10, 11, 11]], float)
    # IoU(0, 1) = 2 / 6 = 1/3; boxes 0 and 2 coincide and tie in score
    scores = np.array([0.9, 0.8, 0.9, 0.1])
    np.testing.assert_array_equal(nms(boxes, scores, 1 / 3), [0, 1, 3])  # 1/3 is not > 1/3
    np.testing.assert_array_equal(nms(boxes, scores, 0.33), [0, 3])
    np.testing.assert_array_equal(nms(boxes, scores, 1.0), [0, 2, 1, 3])


def test_empty():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    kept = batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.5)
    assert kept.shape == (0,) and kept.dtype == np.int64


@given(counts, seeds, thresholds, st.integers(1, 4))
def test_batched_matches_per_group_loop(count, seed, threshold, num_groups):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, count, extent=30)
    scores = scores_with_ties(rng, count)
    groups = rng.integers(0, num_groups, count)
    expected = []
    for g in range(num_groups):
        members = [k for k in range(count) if groups[k] == g]
        expected += [members[k] for k in nms_reference(boxes[members], scores[members],
                                                       threshold)]
    expected.sort(key=lambda k: (-scores[k], k))
    np.testing.assert_array_equal(batched_nms(boxes, scores, groups, threshold), expected)


def test_batched_groups_do_not_suppress_each_other():
    boxes = np.array([[0, 0, 4, 4]] * 3, float)
    scores = np.array([0.5, 0.9, 0.7])
    np.testing.assert_array_equal(batched_nms(boxes, scores, [0, 1, 0], 0.5), [1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1])


def test_matches_torchvision(rng):
    try:
        import torch
        from torchvision.ops import nms as tv_nms
    except Exception as error:  # torchvision is not a dependency and may not load
        pytest.skip(f"torchvision.ops does not load here: {error!r}")
    boxes, scores = random_boxes(rng, 200, extent=60), rng.random(200)
    expected = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), expected)


def test_errors():
    with pytest.raises(ValueError, match=r"nms: scores must have shape \(2,\)"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="batched_nms: groups"):
        batched_nms(np.zeros((2, 4)), np.zeros(2), [0], 0.5)
