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
    (strictly, as torchvision). The IoU matrix of the sorted boxes is computed once
    (N^2 numbers: detectors cut to their best few thousand boxes first); the loop then
    runs once per kept box, striking out the rows its IoU row exceeds.
    """
    boxes, scores = _check_scores(boxes, scores, "nms")
    order = np.argsort(-scores, kind="stable")
    overlapping = box_iou(boxes[order], boxes[order]) > iou_threshold
    alive = np.ones(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if alive[i]:
            kept.append(i)
            alive[i + 1:] &= ~overlapping[i, i + 1:]
    return order[np.asarray(kept, dtype=np.int64)]


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
