"""Training targets for detectors: match candidates (proposals, anchors) to ground truth,
then sample a mini-batch of positives and negatives from the matches.

Paper settings:

- Fast R-CNN (Girshick 2015): positive_threshold=0.5, negative_range=(0.1, 0.5); 128 RoIs
  per image (batch_size=128), positive_fraction=0.25.
- Faster R-CNN's RPN (Ren et al. 2015): positive_threshold=0.7, negative_range=(0.0, 0.3),
  keep_best_match=True; 256 anchors per image, positive_fraction=0.5.
"""

import numpy as np

NEGATIVE = -1  # matched value of a background candidate
IGNORED = -2  # matched value of a candidate that no loss sees


def assign_boxes(iou, positive_threshold, negative_range, keep_best_match=False):
    """int64 (P,) match of each candidate to a ground truth, from the (G, P) IoU matrix.

    With m_p = max_g iou[g, p] (0 when G = 0): matched[p] = argmax_g iou[g, p] when
    m_p >= positive_threshold; -1 (background) when lo <= m_p < hi for negative_range
    = (lo, hi); -2 (ignored) otherwise. Ties in the argmax go to the lower g.

    keep_best_match (the RPN's rule, so that every ground truth gets an anchor): for each
    g whose best IoU b_g = max_p iou[g, p] is > 0, every p with iou[g, p] == b_g becomes
    positive, matched to g; a candidate that is best for several ground truths goes to the
    one it overlaps most (ties: lower g). Unlike torchvision, which keeps such a candidate's
    own argmax, the candidate always goes to a ground truth it is the best match for.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"assign_boxes: iou must be a (G, P) matrix, got shape {iou.shape}")
    low, high = (float(v) for v in negative_range)
    if not 0.0 <= low <= high <= positive_threshold:
        raise ValueError("assign_boxes: need 0 <= negative_range[0] <= negative_range[1] <= "
                         f"positive_threshold, got {negative_range!r} and {positive_threshold!r}")
    count = iou.shape[1]
    best_iou = iou.max(axis=0) if iou.shape[0] else np.zeros(count)
    best_gt = iou.argmax(axis=0) if iou.shape[0] else np.zeros(count, dtype=np.int64)
    matched = np.full(count, IGNORED, dtype=np.int64)
    matched[(best_iou >= low) & (best_iou < high)] = NEGATIVE
    positive = best_iou >= positive_threshold
    matched[positive] = best_gt[positive]
    if keep_best_match and iou.size:
        per_gt_best = iou.max(axis=1, keepdims=True)                      # (G, 1)
        is_best = (iou == per_gt_best) & (per_gt_best > 0)                # (G, P)
        chosen = np.where(is_best, iou, -1.0).argmax(axis=0)              # (P,)
        has_best = is_best.any(axis=0)
        matched[has_best] = chosen[has_best]
    return matched


def sample_assignments(matched, batch_size, positive_fraction, rng):
    """(positive_indices, negative_indices), int64, in the random order they were drawn.

    At most round(batch_size * positive_fraction) positives (Python's round) drawn without
    replacement from the candidates with matched >= 0; negatives (matched == -1) fill the
    batch up to batch_size, also without replacement. Ignored candidates (-2) never appear.
    """
    matched = np.asarray(matched)
    if matched.ndim != 1 or matched.dtype.kind not in "iu":
        raise ValueError("sample_assignments: matched must be a 1-D integer array, got "
                         f"shape {matched.shape} dtype {matched.dtype}")
    if int(batch_size) != batch_size or batch_size < 0:
        raise ValueError(f"sample_assignments: batch_size must be an integer >= 0, "
                         f"got {batch_size!r}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"sample_assignments: positive_fraction must be in [0, 1], "
                         f"got {positive_fraction!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"sample_assignments: rng must be a numpy.random.Generator, "
                        f"got {type(rng).__name__}")
    positives = np.flatnonzero(matched >= 0)
    negatives = np.flatnonzero(matched == NEGATIVE)
    num_pos = min(round(int(batch_size) * positive_fraction), positives.size)
    num_neg = min(int(batch_size) - num_pos, negatives.size)
    positives = rng.permutation(positives)[:num_pos].astype(np.int64)
    negatives = rng.permutation(negatives)[:num_neg].astype(np.int64)
    return positives, negatives
