"""Instance-segmentation metrics from label images (host NumPy).

A label image holds 0 for background and one positive id per object (ids need
not be consecutive). A true object t and a predicted object p overlap by
IoU(t, p) = |t & p| / |t | p|; objects are matched one to one where
IoU >= a threshold. With TP matched pairs, FP unmatched predicted objects and
FN unmatched true objects:

    precision = TP / (TP + FP)        recall = TP / (TP + FN)
    F1 = 2 TP / (2 TP + FP + FN)      AP = TP / (TP + FP + FN)
    SQ = (sum of matched IoUs) / TP   RQ = TP / (TP + FP/2 + FN/2)
    PQ = (sum of matched IoUs) / (TP + FP/2 + FN/2) = SQ * RQ

AP is the Data Science Bowl 2018 score ("accuracy" in StarDist), and its mean
over the thresholds 0.5, 0.55, ..., 0.95 the DSB mean AP; PQ (panoptic
quality, Kirillov et al., CVPR 2019) is taken at IoU >= 0.5.

A 0/0 arises only when TP = 0. It is 0 when either image has an object (every
score is then 0) and 1 when neither has one: an empty image predicted empty
is perfect. StarDist's ``matching`` agrees except that it scores two empty
images 0. Over a dataset the counts are summed before the ratios are formed,
as in StarDist's ``matching_dataset``, so an empty image adds nothing.
"""

import math
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

# 0.5, 0.55, ..., 0.95 as exact decimals: an IoU of 11/20 matches at 0.55
THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
PQ_THRESHOLD = 0.5


class InstanceMatch(NamedTuple):
    """The outcome of :func:`match_instances`."""

    tp: int
    fp: int
    fn: int
    pairs: np.ndarray  # (TP, 2) matched (true id, predicted id)
    ious: np.ndarray  # (TP,) float64 IoU of each matched pair


def _check_label_pair(true_labels, pred_labels, where):
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    if true_labels.shape != pred_labels.shape:
        raise ValueError(
            f"{where}: true_labels and pred_labels must have one shape, got "
            f"{true_labels.shape} and {pred_labels.shape}"
        )
    for name, labels in (("true_labels", true_labels), ("pred_labels", pred_labels)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{where}: {name} must hold integer ids, got dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise ValueError(
                f"{where}: {name} must hold ids >= 0 (0 = background), got {labels.min()}"
            )
    return true_labels, pred_labels


def _check_threshold(threshold, where, name="threshold"):
    threshold = float(threshold)
    if not 0 < threshold <= 1:
        raise ValueError(f"{where}: {name} must lie in (0, 1], got {threshold}")
    return threshold


def _check_thresholds(thresholds, where):
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"{where}: thresholds must be a non-empty 1-D sequence of IoUs, got {thresholds!r}"
        )
    return tuple(_check_threshold(value, where, "thresholds") for value in values.tolist())


def _object_index(labels):
    """The sorted object ids, and each pixel's index into [0, *ids] (0 = background)."""
    with_background = np.concatenate((np.zeros(1, labels.dtype), labels.ravel()))
    ids, index = np.unique(with_background, return_inverse=True)
    return ids[1:], index[1:]


def _iou_matrix(true_labels, pred_labels):
    ids_true, index_true = _object_index(true_labels)
    ids_pred, index_pred = _object_index(pred_labels)
    rows, cols = ids_true.size + 1, ids_pred.size + 1
    joint = np.bincount(index_true * cols + index_pred, minlength=rows * cols)
    joint = joint.reshape(rows, cols)
    intersection = joint[1:, 1:]
    area_true, area_pred = joint[1:, :].sum(axis=1), joint[:, 1:].sum(axis=0)
    union = area_true[:, None] + area_pred[None, :] - intersection
    return ids_true, ids_pred, intersection / union


def iou_matrix(true_labels, pred_labels):
    """(ids_true, ids_pred, iou): the sorted object ids and the float64 (T, P) IoU matrix.

    iou[i, j] = |t_i & p_j| / (|t_i| + |p_j| - |t_i & p_j|), each count read from
    one joint histogram of the (true, predicted) index pairs over the pixels.
    Label images of any shape work; each id is one object however many pieces
    or slices it spans.
    """
    true_labels, pred_labels = _check_label_pair(true_labels, pred_labels, "iou_matrix")
    return _iou_matrix(true_labels, pred_labels)


def _match(iou, threshold):
    """Row and column indices of the largest-total-IoU one-to-one matching of pairs >= threshold.

    Objects with no pair at or above the threshold stay out of the assignment.
    """
    eligible = iou >= threshold
    candidate_rows = np.flatnonzero(eligible.any(axis=1))
    candidate_cols = np.flatnonzero(eligible.any(axis=0))
    sub = np.ix_(candidate_rows, candidate_cols)
    rows, cols = linear_sum_assignment(np.where(eligible, iou, 0.0)[sub], maximize=True)
    keep = eligible[sub][rows, cols]
    return candidate_rows[rows[keep]], candidate_cols[cols[keep]]


def match_instances(true_labels, pred_labels, threshold=0.5):
    """Match objects one to one, maximising the total IoU over pairs with IoU >= threshold.

    Returns an :class:`InstanceMatch`: TP, FP, FN and the matched (true id,
    predicted id) pairs with their IoUs. threshold lies in (0, 1].

    For threshold > 0.5 the matching is unique (IoU > 0.5 means p covers more
    than half of t and t more than half of p, which no two disjoint objects can
    both do), so the assignment (scipy's linear_sum_assignment) only finds it;
    at exactly 0.5 the one tie, an object cut into two exact halves, gives the
    same counts and IoU sum either way. Below 0.5 StarDist maximises the number
    of matches first, so its TP can be larger there.
    """
    true_labels, pred_labels = _check_label_pair(true_labels, pred_labels, "match_instances")
    threshold = _check_threshold(threshold, "match_instances")
    ids_true, ids_pred, iou = _iou_matrix(true_labels, pred_labels)
    rows, cols = _match(iou, threshold)
    return InstanceMatch(
        tp=rows.size,
        fp=ids_pred.size - rows.size,
        fn=ids_true.size - rows.size,
        pairs=np.stack([ids_true[rows], ids_pred[cols]], axis=1),
        ious=iou[rows, cols],
    )


def _counts(true_labels, pred_labels, thresholds):
    """float64 (K, 4): TP, FP, FN and the sum of the matched IoUs at each threshold.

    The sum is math.fsum's, exactly rounded, so it does not depend on the ids' order.
    """
    _, _, iou = _iou_matrix(true_labels, pred_labels)
    n_true, n_pred = iou.shape
    counts = []
    for threshold in thresholds:
        rows, cols = _match(iou, threshold)
        counts.append((rows.size, n_pred - rows.size, n_true - rows.size,
                       math.fsum(iou[rows, cols])))
    return np.array(counts, dtype=np.float64)


def _ratio(numerator, denominator, no_objects):
    """numerator / denominator; a 0/0 is 1 when neither image has an object, else 0."""
    if denominator == 0:
        return 1.0 if no_objects else 0.0
    return float(numerator / denominator)


def _report(counts, thresholds):
    """The JSON-ready scores from :func:`_counts` at (*thresholds, PQ_THRESHOLD)."""
    per_threshold = []
    for threshold, (tp, fp, fn, _) in zip(thresholds, counts):
        no_objects = tp + fp + fn == 0
        per_threshold.append({
            "threshold": threshold,
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "precision": _ratio(tp, tp + fp, no_objects),
            "recall": _ratio(tp, tp + fn, no_objects),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn, no_objects),
            "ap": _ratio(tp, tp + fp + fn, no_objects),
        })
    tp, fp, fn, matched_iou = counts[-1]
    no_objects = tp + fp + fn == 0
    return {
        "n_true": int(tp + fn),
        "n_pred": int(tp + fp),
        "per_threshold": per_threshold,
        "mean_ap": float(np.mean([row["ap"] for row in per_threshold])),
        "pq": _ratio(matched_iou, tp + (fp + fn) / 2, no_objects),
        "sq": _ratio(matched_iou, tp, no_objects),
        "rq": _ratio(tp, tp + (fp + fn) / 2, no_objects),
    }


def instance_scores(true_labels, pred_labels, thresholds=THRESHOLDS):
    """Detection and panoptic scores of one predicted label image against the truth.

    Returns a dict of plain ints, floats and lists (ready for ``json.dump``):
    n_true, n_pred; per_threshold, one dict per threshold with threshold, tp,
    fp, fn, precision, recall, f1 and ap (the DSB ratio TP / (TP + FP + FN));
    mean_ap, the mean of ap over the thresholds; and pq, sq, rq at IoU >= 0.5.
    Matching as :func:`match_instances`; 0/0 as the module docstring says.
    """
    true_labels, pred_labels = _check_label_pair(true_labels, pred_labels, "instance_scores")
    thresholds = _check_thresholds(thresholds, "instance_scores")
    return _report(_counts(true_labels, pred_labels, (*thresholds, PQ_THRESHOLD)), thresholds)


def dataset_instance_scores(pairs, thresholds=THRESHOLDS):
    """The scores of a dataset: TP, FP, FN and matched IoUs summed over images, then the ratios.

    pairs: an iterable of (true_labels, pred_labels), read once (a generator
    keeps one image in memory). Returns :func:`instance_scores`' keys for the
    summed counts, plus n_images and images, the list of each image's own
    :func:`instance_scores`. Summing counts weighs every object alike, as
    StarDist's ``matching_dataset`` does; the mean of the images' ratios would
    weigh a sparse image like a crowded one.
    """
    thresholds = _check_thresholds(thresholds, "dataset_instance_scores")
    image_counts = []
    for i, pair in enumerate(pairs):
        try:
            true_labels, pred_labels = pair
        except (TypeError, ValueError):
            raise ValueError(
                f"dataset_instance_scores: pairs[{i}] must be a (true_labels, pred_labels) pair"
            ) from None
        true_labels, pred_labels = _check_label_pair(
            true_labels, pred_labels, f"dataset_instance_scores: pairs[{i}]"
        )
        image_counts.append(_counts(true_labels, pred_labels, (*thresholds, PQ_THRESHOLD)))
    if not image_counts:
        raise ValueError(
            "dataset_instance_scores: pairs is empty; expected at least one "
            "(true_labels, pred_labels) pair"
        )
    return {
        **_report(np.sum(image_counts, axis=0), thresholds),
        "n_images": len(image_counts),
        "images": [_report(counts, thresholds) for counts in image_counts],
    }
