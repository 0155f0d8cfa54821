"""Segmentation metrics from a confusion matrix (host NumPy).

With the confusion matrix C (rows = truth, columns = prediction), per class k:
TP = C[k, k], FP = sum_i C[i, k] - TP, FN = sum_j C[k, j] - TP, and
IoU_k = TP / (TP + FP + FN), Dice_k = 2 TP / (2 TP + FP + FN).
A class absent from both truth and prediction has no score (nan) and is left
out of the means.
"""

import numpy as np


def confusion_matrix(pred, target, num_classes, ignore_index=None):
    """int64 (K, K) counts: entry [t, p] is the number of pixels of true class t predicted p.

    pred, target: integer arrays of one shape. Pixels whose target equals
    ``ignore_index`` are not counted.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"confusion_matrix: pred and target must have one shape, got {pred.shape} "
            f"and {target.shape}"
        )
    for name, a in (("pred", pred), ("target", target)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"confusion_matrix: {name} must hold integers, got dtype {a.dtype}")
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, a in (("pred", pred), ("target", target)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(
                f"confusion_matrix: {name} values must lie in [0, {num_classes}), "
                f"got values in [{a.min()}, {a.max()}]"
            )
    flat = target.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _as_confusion_matrix(cm):
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square (K, K) confusion matrix, got shape {cm.shape}")
    return cm.astype(np.float64)


def _ratio(numerator, denominator):
    """numerator / denominator elementwise, nan where the denominator is 0."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean_present(scores):
    """The mean over classes that have a score (nan when none has)."""
    present = scores[~np.isnan(scores)]
    return float(present.mean()) if present.size else float("nan")


def pixel_accuracy(cm):
    """trace(C) / sum(C): the fraction of pixels predicted right (nan for an empty matrix)."""
    cm = _as_confusion_matrix(cm)
    return float(_ratio(np.trace(cm), cm.sum()))


def iou_per_class(cm):
    """TP / (TP + FP + FN) per class; nan for a class absent from truth and prediction."""
    cm = _as_confusion_matrix(cm)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(axis=0) + cm.sum(axis=1) - tp)


def mean_iou(cm):
    """The mean of :func:`iou_per_class` over the classes that have a score."""
    return _mean_present(iou_per_class(cm))


def dice_per_class(cm):
    """2 TP / (2 TP + FP + FN) per class; nan for a class absent from truth and prediction."""
    cm = _as_confusion_matrix(cm)
    tp = np.diag(cm)
    return _ratio(2 * tp, cm.sum(axis=0) + cm.sum(axis=1))


def mean_dice(cm):
    """The mean of :func:`dice_per_class` over the classes that have a score."""
    return _mean_present(dice_per_class(cm))
