"""Image files as raw float32 (C, H, W) pages, values exactly as stored.

PNG, JPEG, BMP and GIF go through Pillow (a palette turns into RGB unless its
colours are gray), TIFF through tifffile, whose series axes tell channels from
pages: 'C' or 'S' is a channel axis, 'Z' or 'T' (or any other letter) a page
axis, and the generic 'I' or 'Q' is channels only when its length equals the
``channels`` asked for. Interleaved RGBA drops its alpha. Nothing is scaled
by bit depth: normalisation (scratchseg.data.normalize) comes after.
"""

import contextlib
import struct
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from scratchseg.data.normalize import normalize_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff")
_READ_ERRORS = (OSError, ValueError, EOFError, IndexError, KeyError, struct.error)
_PILLOW_AS_STORED = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA")


@contextlib.contextmanager
def reading(path):
    """Turn a missing or unreadable file into a ValueError that names it."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: file not found")
    try:
        yield
    except _READ_ERRORS as error:
        raise ValueError(f"{path}: cannot read it as an image ({error})") from error


def is_tiff(path):
    return Path(path).suffix.lower() in TIFF_EXTENSIONS


def read_tiff(path):
    """(array, axes) of the TIFF's first series, e.g. ((3, H, W), 'CYX')."""
    with reading(path), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.asarray(), series.axes


def open_picture(path):
    """The loaded Pillow picture of a one-frame file (a multi-frame file is an error)."""
    with reading(path), Image.open(path) as picture:
        picture.load()
        frames = getattr(picture, "n_frames", 1)
    if frames > 1:
        raise ValueError(f"{path}: holds {frames} frames; save a stack as a multi-page TIFF")
    return picture


def palette_colours(picture):
    """The (r, g, b) of each entry of a palette picture's palette, as Pillow holds it."""
    flat = picture.getpalette("RGB") or []
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def _gray_palette(picture):
    colours = np.array(palette_colours(picture) or [(0, 0, 0)], dtype=np.int64)
    used = np.unique(np.asarray(picture))
    used = colours[used[used < len(colours)]]
    return bool(np.all(used == used[:, :1]))


def _pillow_array(path):
    """(array, axes) of a Pillow-read file: (H, W) 'YX' or (H, W, 3|4) 'YXS'."""
    picture = open_picture(path)
    if picture.mode == "P":
        picture = picture.convert("L" if _gray_palette(picture) else "RGB")
    elif picture.mode == "LA":
        picture = picture.convert("L")
    elif picture.mode not in _PILLOW_AS_STORED:
        picture = picture.convert("RGB")
    array = np.asarray(picture)
    return array, "YX" if array.ndim == 2 else "YXS"


def _roles(axes, shape, channels):
    """'channels' or 'pages' for each axis of ``axes`` other than Y and X."""
    roles = ["channels" if a in "CS" else "generic" if a in "IQ" else "pages" for a in axes]
    if roles == ["generic"] and shape[0] == channels:
        roles = ["channels"]  # (N, H, W) that the axes leave open: N channels were asked for
    if len(roles) == 2 and "channels" not in roles and roles[1] == "generic" \
            and shape[1] in (1, 3, 4):
        roles[1] = "channels"  # (N, C, H, W) or (N, H, W, C) with unnamed axes
    return ["pages" if role == "generic" else role for role in roles]


def _as_pages_channels(array, axes, channels, path):
    """The array as (N, C, H, W) by its axes; ValueError naming ``path`` for other layouts."""
    shown = f"got shape {array.shape} (axes {axes})"
    where = "a (H, W), (H, W, 3|4), (C, H, W), (N, H, W) or (N, C, H, W) image"
    if array.ndim != len(axes) or "Y" not in axes or "X" not in axes or array.ndim > 4:
        raise ValueError(f"{path}: expected {where}, {shown}")
    if axes.endswith("S") and array.shape[-1] == 4:
        array = array[..., :3]  # interleaved RGBA: the alpha is no image content
    others = [i for i, axis in enumerate(axes) if axis not in "YX"]
    roles = _roles([axes[i] for i in others], [array.shape[i] for i in others], channels)
    if roles.count("channels") > 1 or roles.count("pages") > 1:
        raise ValueError(f"{path}: expected {where}, {shown}")
    page_axis = [i for i, role in zip(others, roles) if role == "pages"]
    channel_axis = [i for i, role in zip(others, roles) if role == "channels"]
    pages = array.shape[page_axis[0]] if page_axis else 1
    depth = array.shape[channel_axis[0]] if channel_axis else 1
    yx = [axes.index("Y"), axes.index("X")]
    return array.transpose(page_axis + channel_axis + yx).reshape(
        (pages, depth) + tuple(array.shape[i] for i in yx))


def read_pages(path, channels=None):
    """A list of raw float32 (C, H, W) pages: one for a picture, N for a stack."""
    array, axes = read_tiff(path) if is_tiff(path) else _pillow_array(path)
    if array.dtype != bool and array.dtype.kind not in "iuf":
        raise ValueError(f"{path}: unsupported pixel type {array.dtype}")
    stack = _as_pages_channels(array, axes, channels, path)
    return [np.ascontiguousarray(page, dtype=np.float32) for page in stack]


def read_image(path, *, normalize="percentile", channels=None):
    """One normalised float32 (C, H, W) image; a stack of several pages is an error."""
    pages = read_pages(path, channels)
    if len(pages) > 1:
        raise ValueError(f"{path}: holds {len(pages)} pages, not one image; predict and train "
                         f"take a stack page by page")
    return normalize_image(pages[0], normalize)
