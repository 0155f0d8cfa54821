"""Anchors: the reference boxes that Faster R-CNN's region proposal network regresses from."""

import numpy as np


def anchor_grid(feature_height, feature_width, stride, sizes, aspect_ratios):
    """float64 (feature_height * feature_width * A, 4) anchors, A = len(sizes) * len(aspect_ratios).

    The anchor of size s and ratio r has area s^2 and height / width = r:
    w = s / sqrt(r), h = s sqrt(r), centred at ((x + 0.5) stride, (y + 0.5) stride) for
    feature cell (y, x), in image pixels (boxes as in scratchseg.detection.boxes).

    Order: row (y * feature_width + x) * A + a, with a = i_size * len(aspect_ratios) +
    i_ratio (sizes outer, ratios inner). An RPN's conv output of shape (N, A, H, W)
    (or (N, A * 4, H, W) viewed as (N, A, 4, H, W)) matches it once transposed to
    (N, H, W, A) (or (N, H, W, A, 4)) and reshaped to (N, H * W * A) (or (N, H * W * A, 4)).
    """
    for name, value in (("feature_height", feature_height), ("feature_width", feature_width)):
        if int(value) != value or value < 0:
            raise ValueError(f"anchor_grid: {name} must be an integer >= 0, got {value!r}")
    if not stride > 0:
        raise ValueError(f"anchor_grid: stride must be > 0, got {stride!r}")
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1)
    ratios = np.asarray(aspect_ratios, dtype=np.float64).reshape(-1)
    if sizes.size == 0 or ratios.size == 0 or np.any(sizes <= 0) or np.any(ratios <= 0):
        raise ValueError("anchor_grid: sizes and aspect_ratios must be non-empty and > 0, "
                         f"got {sizes.tolist()} and {ratios.tolist()}")
    half_w = (sizes[:, None] / np.sqrt(ratios)[None, :]).reshape(-1) / 2   # (A,), a = i_s*R + i_r
    half_h = (sizes[:, None] * np.sqrt(ratios)[None, :]).reshape(-1) / 2
    base = np.stack([-half_w, -half_h, half_w, half_h], axis=1)            # (A, 4) about (0, 0)
    cy, cx = np.meshgrid((np.arange(int(feature_height)) + 0.5) * stride,
                         (np.arange(int(feature_width)) + 0.5) * stride, indexing="ij")
    centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(-1, 1, 4)       # (H * W, 1, 4)
    return (centres + base[None]).reshape(-1, 4)
