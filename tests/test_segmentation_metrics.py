"""Confusion matrix, pixel accuracy, IoU and Dice against hand counts and plain loops."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from scratchseg.metrics import (
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
)

# truth rows, prediction columns
TARGET = np.array([[0, 0, 1, 1],
                   [0, 2, 2, 1]])
PRED = np.array([[0, 1, 1, 1],
                 [2, 2, 0, 1]])
# (t, p): (0,0) (0,1) (1,1) (1,1) / (0,2) (2,2) (2,0) (1,1)
HAND = np.array([[1, 1, 1],
                 [0, 3, 0],
                 [1, 0, 1]])


def loop_confusion(pred, target, num_classes, ignore_index=None):
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(np.ravel(pred).tolist(), np.ravel(target).tolist()):
        if ignore_index is not None and t == ignore_index:
            continue
        counts[t, p] += 1
    return counts


def test_hand_computed_example():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, HAND)
    assert confusion_matrix(PRED, TARGET, 3)[0, 1] == 1  # truth 0 predicted 1, not reversed
    np.testing.assert_array_equal(confusion_matrix(TARGET, PRED, 3), HAND.T)


def test_hand_computed_scores():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert pixel_accuracy(cm) == pytest.approx(5 / 8)
    # class 0: TP 1, FP 1 (2->0), FN 2; class 1: TP 3, FP 1, FN 0; class 2: TP 1, FP 1, FN 1
    iou = iou_per_class(cm)
    np.testing.assert_allclose(iou, [1 / 4, 3 / 4, 1 / 3])
    assert mean_iou(cm) == pytest.approx((1 / 4 + 3 / 4 + 1 / 3) / 3)
    dice = dice_per_class(cm)
    np.testing.assert_allclose(dice, [2 / 5, 6 / 7, 2 / 4])
    assert mean_dice(cm) == pytest.approx((2 / 5 + 6 / 7 + 1 / 2) / 3)


@settings(max_examples=30)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k),
    array_shapes(min_dims=1, max_dims=3, max_side=6),
)).flatmap(lambda ks: st.tuples(
    st.just(ks[0]),
    arrays(np.int64, ks[1], elements=st.integers(0, ks[0] - 1)),
    arrays(np.int32, ks[1], elements=st.integers(0, ks[0] - 1)),
)))
def test_matches_loop_on_random_inputs(data):
    k, pred, target = data
    cm = confusion_matrix(pred, target, k)
    np.testing.assert_array_equal(cm, loop_confusion(pred, target, k))
    assert cm.sum() == pred.size
    expected_iou, expected_dice = [], []
    for c in range(k):
        tp = int(np.sum((pred == c) & (target == c)))
        fp = int(np.sum((pred == c) & (target != c)))
        fn = int(np.sum((pred != c) & (target == c)))
        expected_iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        expected_dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    np.testing.assert_allclose(iou_per_class(cm), expected_iou)
    np.testing.assert_allclose(dice_per_class(cm), expected_dice)
    assert pixel_accuracy(cm) == pytest.approx(np.mean(pred == target))


@settings(max_examples=20)
@given(arrays(np.int64, (5, 7), elements=st.integers(0, 3)),
       arrays(np.int64, (5, 7), elements=st.integers(0, 4)))
def test_ignore_index_matches_loop(pred, target):
    cm = confusion_matrix(pred, target, 4, ignore_index=4)
    np.testing.assert_array_equal(cm, loop_confusion(pred, target, 4, ignore_index=4))
    assert cm.sum() == np.sum(target != 4)


def test_ignore_index_out_of_range_prediction_under_ignored_pixel():
    pred = np.array([0, 1, 9])
    target = np.array([0, 1, 255])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2, ignore_index=255),
                                  [[1, 0], [0, 1]])
    with pytest.raises(ValueError):
        confusion_matrix(pred, target, 2)


def test_absent_class_is_nan_and_left_out_of_means():
    pred = np.array([0, 0, 1, 1])
    target = np.array([0, 1, 1, 1])
    cm = confusion_matrix(pred, target, 3)  # class 2 absent from both
    iou, dice = iou_per_class(cm), dice_per_class(cm)
    assert math.isnan(iou[2]) and math.isnan(dice[2])
    np.testing.assert_allclose(iou[:2], [1 / 2, 2 / 3])
    np.testing.assert_allclose(dice[:2], [2 / 3, 4 / 5])
    assert mean_iou(cm) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert mean_dice(cm) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_class_only_predicted_or_only_true_scores_zero():
    cm = confusion_matrix(np.array([0, 2, 0]), np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(iou_per_class(cm), [1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(dice_per_class(cm), [1 / 2, 0.0, 0.0])


def test_perfect_prediction_and_empty_matrix():
    target = np.array([[0, 1], [2, 2]])
    cm = confusion_matrix(target, target, 4)
    assert pixel_accuracy(cm) == 1.0 and mean_iou(cm) == 1.0 and mean_dice(cm) == 1.0
    empty = np.zeros((3, 3), dtype=np.int64)
    assert math.isnan(pixel_accuracy(empty))
    assert math.isnan(mean_iou(empty)) and math.isnan(mean_dice(empty))
    assert np.isnan(iou_per_class(empty)).all()


def test_scores_accept_summed_matrices():
    """Matrices of several images add up: scores of the sum, not the mean of scores."""
    a = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    b = confusion_matrix(np.array([1, 1]), np.array([1, 1]), 2)
    both = confusion_matrix(np.array([0, 1, 1, 1, 1]), np.array([0, 1, 0, 1, 1]), 2)
    np.testing.assert_array_equal(a + b, both)
    assert mean_iou(a + b) == pytest.approx(mean_iou(both))


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(np.array([0, 1]), np.array([0, -1]), 3)
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(np.array([-1, 1]), np.array([0, 1]), 3)
    with pytest.raises(TypeError, match="integers"):
        confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(np.array([0]), np.array([0]), 0)
    for score in (pixel_accuracy, iou_per_class, mean_iou, dice_per_class, mean_dice):
        with pytest.raises(ValueError, match="square"):
            score(np.zeros((2, 3)))
