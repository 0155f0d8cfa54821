"""Box geometry: areas, IoU, clipping, and R-CNN's box-regression parametrisation.

A box is a row (x1, y1, x2, y2) of a float (K, 4) array, in pixel coordinates where
pixel column i covers [i, i + 1): a box around columns 3..5 has x1 = 3, x2 = 6, and its
area is (x2 - x1)(y2 - y1), with no +1 (torchvision's convention). Functions keep a
floating input's dtype; other inputs become float64.
"""

import math

import numpy as np

# The largest log-scale decode_boxes lets exp see: a box grows at most 1000/16 = 62.5
# times per side in one step (torchvision's bound).
DEFAULT_MAX_LOG_SCALE = math.log(1000.0 / 16)


def check_boxes(boxes, where, name="boxes"):
    """``boxes`` as a floating (K, 4) array; a ValueError naming ``where`` otherwise."""
    array = np.asarray(boxes)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{where}: {name} must be a real (K, 4) array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{where}: {name} must have shape (K, 4), got {array.shape}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def _check_paired(a, b, where, names):
    if len(a) != len(b):
        raise ValueError(f"{where}: {names[0]} and {names[1]} must have the same K, "
                         f"got {len(a)} and {len(b)}")


def box_area(boxes):
    """(K,) areas (x2 - x1)(y2 - y1) of (K, 4) boxes."""
    boxes = check_boxes(boxes, "box_area")
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a, b):
    """(N, M) intersection over union of (N, 4) boxes ``a`` with (M, 4) boxes ``b``.

    IoU_nm = |a_n ∩ b_m| / (|a_n| + |b_m| - |a_n ∩ b_m|), where the intersection's width
    is max(0, min(x2) - max(x1)) (likewise its height); 0 where the union is 0.
    """
    a = check_boxes(a, "box_iou", "a")
    b = check_boxes(b, "box_iou", "b")
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    iou = np.zeros_like(inter)
    np.divide(inter, union, out=iou, where=union > 0)
    return iou


def clip_boxes(boxes, height, width):
    """A copy of (K, 4) boxes with x clipped to [0, width] and y to [0, height]."""
    boxes = check_boxes(boxes, "clip_boxes")
    if height < 0 or width < 0:
        raise ValueError(f"clip_boxes: height and width must be >= 0, got {height}, {width}")
    out = boxes.copy()
    out[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return out


def remove_small_boxes(boxes, min_size):
    """int64 indices of the boxes whose width x2 - x1 and height y2 - y1 are both >= min_size."""
    boxes = check_boxes(boxes, "remove_small_boxes")
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return np.flatnonzero(keep).astype(np.int64)


def _centres_sizes(boxes):
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * width, boxes[:, 1] + 0.5 * height, width, height


def encode_boxes(reference, target, weights=(1.0, 1.0, 1.0, 1.0)):
    """(K, 4) deltas that move each reference box P onto its target box G (R-CNN, eq. 6-9).

    With centres (px, py), sizes (pw, ph) and weights (wx, wy, ww, wh):
    tx = wx (gx - px) / pw,  ty = wy (gy - py) / ph,  tw = ww log(gw / pw),
    th = wh log(gh / ph). Every width and height must be > 0.
    """
    reference = check_boxes(reference, "encode_boxes", "reference")
    target = check_boxes(target, "encode_boxes", "target")
    _check_paired(reference, target, "encode_boxes", ("reference", "target"))
    wx, wy, ww, wh = _check_weights(weights, "encode_boxes")
    px, py, pw, ph = _centres_sizes(reference)
    gx, gy, gw, gh = _centres_sizes(target)
    for name, w, h in (("reference", pw, ph), ("target", gw, gh)):
        if not (np.all(w > 0) and np.all(h > 0)):
            raise ValueError(f"encode_boxes: every {name} box needs width and height > 0 "
                             "(log(gw / pw) is undefined otherwise)")
    deltas = np.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                       ww * np.log(gw / pw), wh * np.log(gh / ph)], axis=1)
    return deltas.astype(np.result_type(reference, target), copy=False)


def decode_boxes(reference, deltas, weights=(1.0, 1.0, 1.0, 1.0),
                 max_log_scale=DEFAULT_MAX_LOG_SCALE):
    """(K, 4) boxes from reference boxes and deltas: the inverse of encode_boxes.

    gx = px + pw tx / wx,  gy = py + ph ty / wy,  gw = pw exp(min(tw / ww, max_log_scale)),
    gh = ph exp(min(th / wh, max_log_scale)); the clamp (torchvision's) keeps exp finite.
    """
    reference = check_boxes(reference, "decode_boxes", "reference")
    deltas = check_boxes(deltas, "decode_boxes", "deltas")
    _check_paired(reference, deltas, "decode_boxes", ("reference", "deltas"))
    wx, wy, ww, wh = _check_weights(weights, "decode_boxes")
    px, py, pw, ph = _centres_sizes(reference)
    gx = px + pw * deltas[:, 0] / wx
    gy = py + ph * deltas[:, 1] / wy
    gw = pw * np.exp(np.minimum(deltas[:, 2] / ww, max_log_scale))
    gh = ph * np.exp(np.minimum(deltas[:, 3] / wh, max_log_scale))
    boxes = np.stack([gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], axis=1)
    return boxes.astype(np.result_type(reference, deltas), copy=False)


def _check_weights(weights, where):
    values = tuple(float(w) for w in weights)
    if len(values) != 4 or not all(w > 0 for w in values):
        raise ValueError(f"{where}: weights must be 4 positive numbers (wx, wy, ww, wh), "
                         f"got {weights!r}")
    return values
