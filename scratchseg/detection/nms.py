"""Non-maximum suppression: keep the best-scoring box of each cluster of overlapping boxes."""

import numpy as np

from scratchseg.detection.boxes import box_iou, check_boxes


def _check_scores(boxes, scores, where):
    boxes = check_boxes(boxes, where)
    scores = np.asarray(scores)
    if scores.ndim != 1 or len(scores) != len(boxes):
        raise ValueError(f"{where}: scores must have shape ({len(boxes)},) to match boxes, "
                         f"got {scores.shape}")
    return boxes, scores


def nms(boxes, scores, iou_threshold):
    """int64 indices of the boxes that greedy non-maximum suppression keeps, best score first.

    Boxes are visited in descending score (ties: lower index first, a stable sort of
    -scores); a box is dropped when its IoU with an already kept box is > iou_threshold
    (strictly, as torchvision). The loop runs once per kept box: each kept box's IoU row
    against the boxes still in play removes the ones it suppresses.
    """
    boxes, scores = _check_scores(boxes, scores, "nms")
    remaining = np.argsort(-scores, kind="stable")
    kept = []
    while remaining.size:
        best = remaining[0]
        kept.append(best)
        iou = box_iou(boxes[best:best + 1], boxes[remaining[1:]])[0]
        remaining = remaining[1:][iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def batched_nms(boxes, scores, groups, iou_threshold):
    """nms within each group (class) only: int64 indices, best score first (ties: lower index).

    A box never suppresses a box of another group. One nms per distinct group value.
    """
    boxes, scores = _check_scores(boxes, scores, "batched_nms")
    groups = np.asarray(groups)
    if groups.shape != scores.shape:
        raise ValueError(f"batched_nms: groups must have shape {scores.shape} to match boxes, "
                         f"got {groups.shape}")
    kept = [np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g],
                                            iou_threshold)]
            for g in np.unique(groups)]
    kept = np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, np.int64)
    return kept[np.lexsort((kept, -scores[kept]))]
