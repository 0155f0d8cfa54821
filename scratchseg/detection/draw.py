"""Pictures of detections: boxes in their class's colour, labelled "name 0.93", as RGB uint8.

The image (C, H, W), 1 channel (gray) or 3 (RGB), is scaled min..max to 0..255 and
enlarged by a whole factor (nearest neighbour) until its short side is at least
``min_side`` pixels, so the labels (Pillow's default font) stay readable. Class k
draws in PALETTE[(k - 1) % len(PALETTE)].
"""

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from scratchseg.fileio import atomic_write_bytes

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))
MIN_SIDE = 256


def class_colour(label):
    """The (r, g, b) of class ``label`` (1, 2, ...)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def _picture(image, min_side):
    """(RGB uint8 (H * s, W * s, 3), s): the image scaled to 0..255 and enlarged s times."""
    image = np.asarray(image, np.float64)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"draw_detections: image must be (1 or 3, H, W), got shape "
                         f"{image.shape}")
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) * (255.0 / (high - low)) if high > low else np.zeros_like(image)
    rgb = np.repeat(scaled, 3, axis=0) if image.shape[0] == 1 else scaled
    rgb = np.round(rgb).astype(np.uint8).transpose(1, 2, 0)
    scale = max(1, math.ceil(min_side / min(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1), scale


def _label_text(label, score, class_names):
    name = class_names[int(label)] if class_names is not None else str(int(label))
    return name if score is None else f"{name} {float(score):.2f}"


def draw_detections(image, boxes, labels, scores=None, class_names=None, *,
                    score_threshold=0.0, min_side=MIN_SIDE):
    """(H', W', 3) uint8: the image with each box (scores >= score_threshold) and its label.

    boxes: (K, 4) x1 y1 x2 y2 in the image's pixels; the outline is drawn 2 pixels wide
    on the enlarged picture, inside the box; the label sits on a filled strip above it
    (below the top edge when there is no room above).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    given = scores is not None
    scores = np.asarray(scores, np.float64).reshape(-1) if given else np.ones(len(boxes))
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"draw_detections: {len(boxes)} boxes, {len(labels)} labels and "
                         f"{len(scores)} scores; expected one of each per box")
    array, scale = _picture(image, min_side)
    picture = Image.fromarray(array)
    draw = ImageDraw.Draw(picture)
    for box, label, score in zip(boxes, labels, scores):
        if score < score_threshold:
            continue
        colour = class_colour(label)
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=2)
        text = _label_text(label, score if given else None, class_names)
        left, top, right, bottom = draw.textbbox((0, 0), text)
        y = y1 - bottom - 2 if y1 - bottom - 2 >= 0 else y1 + 2
        draw.rectangle((x1, y, x1 + right + 2, y + bottom + 1), fill=colour)
        draw.text((x1 + 1, y), text, fill=(0, 0, 0))
    return np.asarray(picture)


def save_detections_png(path, image, boxes, labels, scores=None, class_names=None, *,
                        score_threshold=0.0, min_side=MIN_SIDE):
    """Write draw_detections(...) to ``path`` as a PNG, atomically."""
    array = draw_detections(image, boxes, labels, scores, class_names,
                            score_threshold=score_threshold, min_side=min_side)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
