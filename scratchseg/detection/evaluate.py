"""COCO-style average precision of boxes: COCOeval's bbox metric for area range "all".

For each class and IoU threshold t: per image, the detections sorted by score
(descending, stable) and cut to the best ``max_detections`` match greedily, each
to the unmatched ground truth of highest IoU >= t (non-crowd first; crowd boxes
can take any number of detections, and those detections count for nothing). All
images' detections are then ranked by score; with TP and FP the running counts
and G the non-crowd ground truths, recall = TP / G, precision = TP / (TP + FP),
made non-increasing from the right and read at the 101 recalls 0, 0.01, .., 1
(the first rank whose recall reaches each one; 0 past the last). AP is the mean
of those 101 values; "map" averages AP over the thresholds and over the classes
that have non-crowd ground truth.

IoU is pycocotools' on [x, y, w, h]: intersection / (area_d + area_g - intersection),
or intersection / area_d for a crowd box; no +1 anywhere.
"""

import numpy as np

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def coco_iou(detections, truths, crowd):
    """(D, G) float64 IoU of xyxy boxes in pycocotools' arithmetic (crowd: / detection area)."""
    d = np.asarray(detections, np.float64).reshape(-1, 4)
    g = np.asarray(truths, np.float64).reshape(-1, 4)
    dw, dh = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    w = np.minimum((d[:, 0] + dw)[:, None], g[:, 0] + gw) - np.maximum(d[:, None, 0], g[:, 0])
    h = np.minimum((d[:, 1] + dh)[:, None], g[:, 1] + gh) - np.maximum(d[:, None, 1], g[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = np.where(np.asarray(crowd, bool), (dw * dh)[:, None],
                     (dw * dh)[:, None] + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def _last_best(values, eligible):
    """Per row, the last column holding the row's maximum among ``eligible`` (-1: none)."""
    masked = np.where(eligible, values, -np.inf)
    best = masked.max(axis=1, initial=-np.inf)
    last = values.shape[1] - 1 - np.argmax((masked == best[:, None])[:, ::-1], axis=1)
    return np.where(np.isfinite(best), last, -1)


def match_image(iou, crowd, thresholds):
    """(matched (T, D) bool, ignored (T, D) bool) of one image and class, COCOeval's loop.

    Rows of ``iou`` are detections best first, columns ground truths. A detection
    takes the last non-crowd gt of highest IoU >= t that is still free, else the
    last crowd gt of highest IoU >= t (taken or not); a match to a crowd gt is
    ignored. (COCOeval sorts crowd gts last and scans them after the others; "last"
    is its tie rule, as a later gt of equal IoU replaces the match so far.)
    """
    crowd = np.asarray(crowd, bool)
    limit = np.minimum(thresholds, 1 - 1e-10)[:, None]
    taken = np.zeros((len(thresholds), len(crowd)), bool)
    matched = np.zeros((len(thresholds), len(iou)), bool)
    ignored = np.zeros_like(matched)
    if iou.size == 0:
        return matched, ignored
    rows = np.arange(len(thresholds))
    for d, row in enumerate(iou):
        reach = row[None, :] >= limit
        regular = _last_best(np.broadcast_to(row, taken.shape), reach & ~taken & ~crowd)
        on_crowd = _last_best(np.broadcast_to(row, taken.shape), reach & crowd)
        gt = np.where(regular >= 0, regular, on_crowd)
        matched[:, d] = gt >= 0
        ignored[:, d] = (regular < 0) & (on_crowd >= 0)
        taken[rows[regular >= 0], regular[regular >= 0]] = True
    return matched, ignored


def _unpack(item, names, where):
    if all(hasattr(item, name) for name in names):
        return [getattr(item, name) for name in names]
    if len(item) != len(names):
        raise ValueError(f"average_precision: {where} must be ({', '.join(names)}), got "
                         f"{len(item)} items")
    return list(item)


def _image_arrays(truth, detection, num_classes, index):
    """The checked (gt boxes, gt labels, crowd, det boxes, det scores, det labels) of image i."""
    boxes, labels = _unpack(truth, ("boxes", "labels"), f"ground_truth[{index}]")
    crowd = getattr(truth, "crowd", None)
    d_boxes, scores, d_labels = _unpack(detection, ("boxes", "scores", "labels"),
                                        f"detections[{index}]")
    arrays = [np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels).reshape(-1),
              np.zeros(len(labels), bool) if crowd is None else np.asarray(crowd, bool),
              np.asarray(d_boxes, np.float64).reshape(-1, 4),
              np.asarray(scores, np.float64).reshape(-1), np.asarray(d_labels).reshape(-1)]
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
        raise ValueError(f"average_precision: ground_truth[{index}] has {len(arrays[0])} "
                         f"boxes, {len(arrays[1])} labels, {len(arrays[2])} crowd flags")
    if not len(arrays[3]) == len(arrays[4]) == len(arrays[5]):
        raise ValueError(f"average_precision: detections[{index}] has {len(arrays[3])} "
                         f"boxes, {len(arrays[4])} scores, {len(arrays[5])} labels")
    for what, values in (("ground_truth", arrays[1]), ("detections", arrays[5])):
        if values.size and (values.min() < 1 or values.max() > num_classes):
            raise ValueError(f"average_precision: {what}[{index}] has labels "
                             f"{np.unique(values).tolist()}; expected 1..{num_classes}")
    if not np.isfinite(arrays[4]).all():
        raise ValueError(f"average_precision: detections[{index}] has non-finite scores")
    return arrays


def _class_results(images, label, thresholds, max_detections):
    """(scores, matched (T, N), ignored (T, N), number of non-crowd gts) of one class."""
    scores, matched, ignored, positives = [], [], [], 0
    for gt_boxes, gt_labels, crowd, boxes, det_scores, det_labels in images:
        g, d = gt_labels == label, np.flatnonzero(det_labels == label)
        d = d[np.argsort(-det_scores[d], kind="stable")][:max_detections]
        positives += int(np.count_nonzero(~crowd[g]))
        m, i = match_image(coco_iou(boxes[d], gt_boxes[g], crowd[g]), crowd[g], thresholds)
        scores.append(det_scores[d])
        matched.append(m)
        ignored.append(i)
    return np.concatenate(scores), np.hstack(matched), np.hstack(ignored), positives


def precision_at_recalls(scores, matched, ignored, positives):
    """(T, 101) interpolated precision of one class's ranked detections (COCOeval's)."""
    order = np.argsort(-scores, kind="stable")
    matched, ignored = matched[:, order], ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    result = np.zeros((len(matched), len(RECALL_POINTS)))
    for t in range(len(matched)):
        recall = tp[t] / positives
        precision = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, RECALL_POINTS, side="left")
        reached = at < len(precision)
        result[t, reached] = precision[at[reached]]
    return result


def average_precision(ground_truth, detections, num_classes,
                      iou_thresholds=COCO_IOU_THRESHOLDS, max_detections=100):
    """COCO AP of per-image detections against ground truth (see the module docstring).

    ground_truth: per image, an object with ``boxes`` (K, 4), ``labels`` (K,) and
    optionally ``crowd`` (K,) (a DetectionSample), or a (boxes, labels) pair.
    detections: per image, (boxes (D, 4), scores (D,), labels (D,)) or an object
    with those attributes. Images tie-break in list order (COCOeval: ascending id).
    Returns {"map", "map50", "map75", "per_class": {label: {"ap", "ap50"}} (NaN
    where a class has no non-crowd ground truth), "precision" (T, 101, num_classes),
    "iou_thresholds"}.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"average_precision: {len(ground_truth)} ground-truth images but "
                         f"{len(detections)} detection lists; give one per image")
    requested = np.asarray(iou_thresholds, np.float64).reshape(-1)
    if requested.size == 0 or np.any((requested < 0) | (requested > 1)):
        raise ValueError(f"average_precision: iou_thresholds must be values in [0, 1], "
                         f"got {requested}")
    extra = [t for t in (0.5, 0.75) if not np.isclose(requested, t).any()]
    thresholds = np.concatenate([requested, extra])
    images = [_image_arrays(t, d, num_classes, i)
              for i, (t, d) in enumerate(zip(ground_truth, detections))]
    precision = np.full((len(thresholds), len(RECALL_POINTS), num_classes), np.nan)
    for label in range(1, num_classes + 1):
        scores, matched, ignored, positives = _class_results(images, label, thresholds,
                                                             max_detections)
        if positives:
            precision[:, :, label - 1] = precision_at_recalls(scores, matched, ignored,
                                                              positives)
    return _summary(precision, thresholds, len(requested))


def _mean(values):
    values = values[~np.isnan(values)]
    return float(np.mean(values)) if values.size else float("nan")


def _summary(precision, thresholds, count):
    """The result dict from the (T + extra, 101, K) precision; NaN classes left out."""
    at = {t: int(np.argmax(np.isclose(thresholds, t))) for t in (0.5, 0.75)}
    per_class = {label: {"ap": _mean(precision[:count, :, label - 1]),
                         "ap50": _mean(precision[at[0.5], :, label - 1])}
                 for label in range(1, precision.shape[2] + 1)}
    return {"map": _mean(precision[:count]), "map50": _mean(precision[at[0.5]]),
            "map75": _mean(precision[at[0.75]]), "per_class": per_class,
            "precision": precision[:count], "iou_thresholds": thresholds[:count]}
