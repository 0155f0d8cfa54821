"""Mask files: reading their values page by page, writing them back, checking a training set.

A mask holds one integer value per pixel, in one of three styles (``MaskStyle``):
``gray`` (8- or 16-bit grayscale or integer TIFF, values in [0, 65535]),
``palette`` (a palette PNG or GIF: the values are palette indices) and ``rgb``
(each colour is a value, packed as r * 65536 + g * 256 + b; an RGB file whose
three channels agree everywhere is gray). ``write_mask`` writes values back in
their file's style, so predictions look like the masks they learnt from.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from scratchseg.data.images import is_tiff, open_picture, palette_colours, read_tiff
from scratchseg.fileio import atomic_path

MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".gif", ".bmp")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
MASK_VALUE_RANGE = (0, 65535)  # the values an 8- or 16-bit grayscale PNG holds
MASK_KINDS = ("gray", "palette", "rgb")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_MIN_INSTANCE_IDS = 8


@dataclass(frozen=True)
class MaskStyle:
    """How a mask file stores its values: kind "gray", "palette" or "rgb"; for "palette",
    ``palette`` holds the file's (r, g, b) of each index (kept as a tuple of tuples)."""

    kind: str
    palette: tuple = ()

    def __post_init__(self):
        if self.kind not in MASK_KINDS:
            raise ValueError(f"MaskStyle: kind must be one of {', '.join(MASK_KINDS)}, got "
                             f"{self.kind!r}")
        colours = tuple(tuple(int(c) for c in colour) for colour in self.palette or ())
        object.__setattr__(self, "palette", colours)


def refuse_jpeg(path):
    """ValueError for a JPEG mask: its compression changes the values."""
    if Path(path).suffix.lower() in JPEG_EXTENSIONS:
        raise ValueError(f"{path}: a mask cannot be JPEG: lossy compression invents values "
                         f"along every edge; save masks as PNG, TIFF, GIF or BMP")


def _pack_colours(rgb, path):
    """(..., H, W) values from (..., H, W, 3) 8-bit colours; gray when the channels agree."""
    rgb = rgb[..., :3].astype(np.int64)
    if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
        raise ValueError(f"{path}: a colour mask needs 8-bit channels, got values from "
                         f"{rgb.min()} to {rgb.max()}; save it as an 8-bit RGB PNG")
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0], "gray"
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], "rgb"


def _read_tiff_mask(path):
    array, axes = read_tiff(path)
    colour = axes.endswith("S") and array.shape[-1] in (3, 4)
    if array.ndim - colour not in (2, 3):
        raise ValueError(f"{path}: a mask must be (H, W), (H, W, 3) colour or an (N, H, W) "
                         f"stack, got shape {array.shape} (axes {axes})")
    if array.ndim - colour == 2:
        array = array[None]
    return (*_pack_colours(array, path), ()) if colour else (array, "gray", ())


def _read_pillow_mask(path):
    picture = open_picture(path)
    if picture.mode == "P":
        return np.asarray(picture)[None], "palette", tuple(palette_colours(picture))
    if picture.mode in ("RGB", "RGBA"):
        return (*_pack_colours(np.asarray(picture)[None], path), ())
    if picture.mode not in _GRAY_MODES:
        raise ValueError(f"{path}: cannot read a mask from a {picture.mode} picture; save it "
                         f"as grayscale, palette or RGB PNG")
    return np.asarray(picture.convert("L") if picture.mode == "LA" else picture)[None], "gray", ()


def _check_gray_values(path, array):
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise ValueError(f"{path}: mask values must be integers, got fractional values")
    if array.dtype.kind not in "iubf":
        raise ValueError(f"{path}: unsupported mask type {array.dtype}")
    low, high = MASK_VALUE_RANGE
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{path}: mask values must be integers in [{low}, {high}] (one value "
                         f"per class, as an 8- or 16-bit PNG mask holds), got values from "
                         f"{array.min():g} to {array.max():g}")


def read_mask_pages(path):
    """(int64 (H, W) values of each page, MaskStyle) of a PNG, TIFF, GIF or BMP mask."""
    refuse_jpeg(path)
    reader = _read_tiff_mask if is_tiff(path) else _read_pillow_mask
    array, kind, palette = reader(path)
    if kind == "gray":
        _check_gray_values(path, array)
    return [page.astype(np.int64) for page in array], MaskStyle(kind, palette)


def mask_png_dtype(values, what):
    """uint8 when every value fits, else uint16; ValueError naming ``what`` outside [0, 65535]."""
    values = np.asarray(values)
    low, high = MASK_VALUE_RANGE
    if values.dtype.kind not in "iub" or (values.size and (values.min() < low
                                                           or values.max() > high)):
        shown = f"values from {values.min()} to {values.max()}" if values.size else "no values"
        raise ValueError(f"{what}: a mask PNG holds integers in [{low}, {high}], got "
                         f"{values.dtype} {shown}")
    return np.uint8 if values.max(initial=0) < 256 else np.uint16


def _integers_below(values, limit, path, what):
    if values.dtype.kind not in "iub" or (values.size and (values.min() < 0
                                                           or values.max() >= limit)):
        raise ValueError(f"{path}: {what} holds integers in [0, {limit - 1}], got "
                         f"{values.dtype} values" + (f" from {values.min()} to {values.max()}"
                                                     if values.size else ""))


def _mask_picture(path, values, style):
    if style.kind == "gray":
        return Image.fromarray(values.astype(mask_png_dtype(values, path)))
    if style.kind == "palette":
        _integers_below(values, 256, path, "a palette mask")
        picture = Image.fromarray(values.astype(np.uint8))
        picture.putpalette([channel for colour in style.palette for channel in colour])
        return picture
    _integers_below(values, 1 << 24, path, "a colour mask")
    shifts = np.array([16, 8, 0])
    return Image.fromarray(((values[..., None] >> shifts) & 255).astype(np.uint8))


def write_mask(path, values, style):
    """Write (H, W) mask values as a PNG in ``style`` (gray 8/16-bit, palette, RGB), atomically."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"{path}: a mask needs an (H, W) array, got shape {values.shape}")
    picture = _mask_picture(path, values, style)
    with atomic_path(path) as temp:
        picture.save(temp, format="PNG")


def write_labels(path, labels):
    """Write an (H, W) instance label image (0 background, one id per object) as a 16-bit PNG."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub" or (labels.size and labels.min() < 0):
        raise ValueError(f"{path}: instance labels must be an (H, W) array of integers >= 0, got "
                         f"{labels.dtype} of shape {labels.shape}")
    ids = np.unique(labels[labels > 0])
    if len(ids) > MASK_VALUE_RANGE[1]:
        raise ValueError(f"{path}: {len(ids)} objects do not fit a 16-bit PNG (at most "
                         f"{MASK_VALUE_RANGE[1]})")
    if labels.max(initial=0) > MASK_VALUE_RANGE[1]:
        labels = np.searchsorted(np.concatenate([[0], ids]), labels)  # ids 1..N, same objects
    with atomic_path(path) as temp:
        Image.fromarray(labels.astype(np.uint16)).save(temp, format="PNG")


def _distinct(pages, ignore_value):
    values = np.unique(np.concatenate([np.unique(page) for page in pages]))
    return values[values != ignore_value] if ignore_value is not None else values


def _pieces(page, value, box):
    """The number of 8-connected pieces of ``value`` within ``box`` of ``page``."""
    return ndimage.label(page[box] == value, structure=np.ones((3, 3)))[1]


def _nearly_consecutive(ids):
    """Three quarters of the sorted ``ids`` lie within a range twice their number."""
    run = -(-3 * len(ids) // 4)
    return np.min(ids[run - 1:] - ids[:len(ids) - run + 1]) + 1 <= 2 * run


def _looks_like_instances(pages, ids):
    """At least 8 ids, nearly consecutive, and most of them one connected piece on each page."""
    if len(ids) < _MIN_INSTANCE_IDS or not _nearly_consecutive(ids):
        return False
    ids, split = set(ids.tolist()), set()
    for page in pages:
        values, inverse = np.unique(page, return_inverse=True)
        boxes = ndimage.find_objects(inverse.reshape(page.shape) + 1)
        for value, box in zip(values, boxes):
            if value in ids and value not in split and _pieces(page, value, box) > 1:
                split.add(value)
                if len(split) > len(ids) // 4:
                    return False
    return True


def _refuse_instance_ids(values_by_file, distinct, paths):
    for path in paths:
        ids = distinct[path][distinct[path] != 0]
        if _looks_like_instances(values_by_file[path], ids):
            raise ValueError(
                f"{path}: holds {len(ids)} nonzero values, nearly consecutive, most of them "
                f"one connected object: these look like instance ids, not classes. Train with "
                f"--masks instances (every nonzero id is one object of the foreground class), "
                f"or --masks classes if they really are {len(ids)} classes")


def check_class_masks(values_by_file, *, max_classes=32, instances_check=True,
                      ignore_value=None):
    """ValueError when a training set's masks do not look like class masks.

    ``values_by_file``: {path: [(H, W) values of each page]}. Refused: instance ids
    (when ``instances_check``), more than ``max_classes`` distinct values, and
    binary masks of which some use 0/1 and others 0/255. ``ignore_value`` counts for none.
    """
    distinct = {path: _distinct(pages, ignore_value) for path, pages in values_by_file.items()}
    values = np.unique(np.concatenate(list(distinct.values()))) if distinct else []
    crowded = sorted(distinct, key=lambda path: -len(distinct[path]))
    if len(values) > max_classes:
        if instances_check:
            _refuse_instance_ids(values_by_file, distinct, crowded[:3])
        named = ", ".join(f"{path} ({len(distinct[path])})" for path in crowded[:3])
        raise ValueError(
            f"masks hold {len(values)} distinct values but at most {max_classes} classes are "
            f"allowed; most distinct values in: {named}. Likely causes: masks saved as JPEG or "
            f"resized with interpolation (re-export them as PNG, resizing with nearest-"
            f"neighbour); instance labels (train with --masks instances); or truly that many "
            f"classes (raise --max-classes N)")
    if instances_check:
        _refuse_instance_ids(values_by_file, distinct, list(distinct))
    ones = [path for path, held in distinct.items() if set(held.tolist()) in ({1}, {0, 1})]
    full = [path for path, held in distinct.items() if set(held.tolist()) in ({255}, {0, 255})]
    if ones and full:
        raise ValueError(
            f"{ones[0]} holds only 0 and 1 but {full[0]} holds only 0 and 255, so 1 and 255 "
            f"would become two different classes; save every mask with the same values "
            f"(0 and 1, or 0 and 255, everywhere)")
