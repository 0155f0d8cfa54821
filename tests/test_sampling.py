"""scratchseg.detection.sampling: matching candidates to ground truth and sampling batches."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.detection.sampling import assign_boxes, sample_assignments

FAST_RCNN = dict(positive_threshold=0.5, negative_range=(0.1, 0.5))
RPN = dict(positive_threshold=0.7, negative_range=(0.0, 0.3), keep_best_match=True)


def assign_reference(iou, positive, negative_range, keep_best_match):
    g_count, p_count = iou.shape
    matched = []
    for p in range(p_count):
        column = [iou[g, p] for g in range(g_count)]
        best = max(column, default=0.0)
        if best >= positive:
            matched.append(column.index(best))
        elif negative_range[0] <= best < negative_range[1]:
            matched.append(-1)
        else:
            matched.append(-2)
    if keep_best_match:
        for p in range(p_count):
            winners = [g for g in range(g_count)
                       if iou[g].max() > 0 and iou[g, p] == iou[g].max()]
            if winners:
                matched[p] = max(winners, key=lambda g: (iou[g, p], -g))
    return matched


def test_fast_rcnn_threshold_edges():
    iou = np.array([[0.5, 0.4999, 0.1, 0.0999, 0.0, 0.9, 0.3]])
    np.testing.assert_array_equal(assign_boxes(iou, **FAST_RCNN), [0, -1, -1, -2, -2, 0, -1])


def test_argmax_goes_to_best_ground_truth():
    iou = np.array([[0.6, 0.2, 0.75],
                    [0.8, 0.2, 0.75]])
    np.testing.assert_array_equal(assign_boxes(iou, **FAST_RCNN), [1, -1, 0])


def test_keep_best_match_with_ties():
    iou = np.array([[0.40, 0.50, 0.50, 0.10, 0.00],     # gt 0: best 0.5, tied at 1 and 2
                    [0.00, 0.20, 0.10, 0.00, 0.00],     # gt 1: best 0.2 at 1 (shared with gt 0)
                    [0.00, 0.00, 0.00, 0.00, 0.00]])    # gt 2: no overlap, claims nothing
    without = assign_boxes(iou, 0.7, (0.0, 0.3))
    np.testing.assert_array_equal(without, [-2, -2, -2, -1, -1])
    with_best = assign_boxes(iou, **RPN)
    np.testing.assert_array_equal(with_best, [-2, 0, 0, -1, -1])   # 1: iou 0.5 with gt 0 > 0.2
    np.testing.assert_array_equal(with_best, assign_reference(iou, 0.7, (0.0, 0.3), True))


def test_keep_best_match_goes_to_that_ground_truth():
    iou = np.array([[0.9, 0.8],
                    [0.85, 0.1]])                       # gt 1's best is candidate 0
    np.testing.assert_array_equal(assign_boxes(iou, 0.7, (0.0, 0.3)), [0, 0])
    np.testing.assert_array_equal(assign_boxes(iou, **RPN), [0, 0])
    iou = np.array([[0.8, 0.9],
                    [0.75, 0.1]])                       # candidate 0 is only gt 1's best
    np.testing.assert_array_equal(assign_boxes(iou, **RPN), [1, 0])


def test_no_ground_truth():
    iou = np.zeros((0, 4))
    np.testing.assert_array_equal(assign_boxes(iou, **RPN), [-1] * 4)
    np.testing.assert_array_equal(assign_boxes(iou, **FAST_RCNN), [-2] * 4)
    assert assign_boxes(np.zeros((3, 0)), **RPN).shape == (0,)
    assert assign_boxes(iou, **RPN).dtype == np.int64


@given(st.integers(0, 5), st.integers(0, 30), st.integers(0, 2**32 - 1), st.booleans(),
       st.sampled_from([FAST_RCNN, RPN]))
def test_matches_loop_reference(g_count, p_count, seed, keep, setting):
    rng = np.random.default_rng(seed)
    iou = rng.integers(0, 11, (g_count, p_count)) / 10.0          # exact edges and ties
    setting = dict(setting, keep_best_match=keep)
    expected = assign_reference(iou, setting["positive_threshold"], setting["negative_range"],
                                keep)
    np.testing.assert_array_equal(assign_boxes(iou, **setting), expected)


@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 100),
       st.integers(0, 300), st.sampled_from([0.0, 0.25, 0.3, 0.5, 1.0]), st.integers(0, 2**32 - 1))
def test_sample_sizes_fractions_no_duplicates(n_pos, n_neg, n_ignored, batch, fraction, seed):
    rng = np.random.default_rng(seed)
    matched = rng.permutation(np.concatenate([rng.integers(0, 5, n_pos), np.full(n_neg, -1),
                                              np.full(n_ignored, -2)]).astype(np.int64))
    pos, neg = sample_assignments(matched, batch, fraction, np.random.default_rng(seed))
    assert pos.dtype == np.int64 and neg.dtype == np.int64
    assert len(pos) == min(round(batch * fraction), n_pos)
    assert len(neg) == min(batch - len(pos), n_neg)
    assert len(set(pos.tolist())) == len(pos) and len(set(neg.tolist())) == len(neg)
    assert np.all(matched[pos] >= 0) and np.all(matched[neg] == -1)


def test_sample_paper_batch_and_seed():
    matched = np.array([3] * 100 + [-1] * 1000 + [-2] * 50, dtype=np.int64)
    pos, neg = sample_assignments(matched, 128, 0.25, np.random.default_rng(7))
    assert (len(pos), len(neg)) == (32, 96)
    again = sample_assignments(matched, 128, 0.25, np.random.default_rng(7))
    np.testing.assert_array_equal(pos, again[0])
    np.testing.assert_array_equal(neg, again[1])
    other = sample_assignments(matched, 128, 0.25, np.random.default_rng(8))
    assert not np.array_equal(neg, other[1])
    assert not np.all(np.diff(neg) > 0)                              # drawn order, not sorted
    pos, neg = sample_assignments(matched, 7, 0.25, np.random.default_rng(0))
    assert (len(pos), len(neg)) == (2, 5)                            # round(1.75) = 2
    few = np.array([0, 0, -1, -1, -1, -1, -2], dtype=np.int64)      # too few positives
    pos, neg = sample_assignments(few, 6, 0.5, np.random.default_rng(0))
    assert sorted(pos.tolist()) == [0, 1] and sorted(neg.tolist()) == [2, 3, 4, 5]


@pytest.mark.parametrize("call, error, match", [
    (lambda: assign_boxes(np.zeros(3), 0.5, (0.1, 0.5)), ValueError, r"\(G, P\)"),
    (lambda: assign_boxes(np.zeros((1, 3)), 0.5, (0.1, 0.6)), ValueError, "negative_range"),
    (lambda: sample_assignments(np.zeros(3, np.int64), 4, 0.5, 0), TypeError, "Generator"),
    (lambda: sample_assignments(np.zeros(3), 4, 0.5, np.random.default_rng()), ValueError,
     "integer array"),
    (lambda: sample_assignments(np.zeros(3, np.int64), 4, 1.5, np.random.default_rng()),
     ValueError, "positive_fraction"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
