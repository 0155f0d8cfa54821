"""Overlap-tile strategy (U-Net paper, Fig. 2): predict images of any size, cut training tiles.

A valid (unpadded) network maps an input tile of edge s to an output of edge
o < s, centred: the output covers the input minus a margin of (s - o) // 2 on
the top and left. To predict an image, its output is split into non-overlapping
o x o tiles; each is computed from the s x s input around it, so neighbouring
input tiles overlap by s - o. Context beyond the image border is the image
mirrored at the border (edge pixel not repeated, as ``np.pad(mode="reflect")``),
repeatedly for images smaller than the margin.
"""

import math

import numpy as np

from scratchseg.backend import to_device, to_numpy
from scratchseg.grad_mode import no_grad

DEFAULT_OUTPUT_TILE = 192
_MAX_SIZE_STEPS = 10_000


def input_size_for_output(model, output_size):
    """The smallest valid input edge s from ``model.valid_input_size(output_size)`` upwards
    with ``model.output_size(s) >= output_size``."""
    if output_size < 1:
        raise ValueError(f"input_size_for_output: output_size must be >= 1, got {output_size}")
    size = model.valid_input_size(output_size)
    for _ in range(_MAX_SIZE_STEPS):
        if model.output_size(size) >= output_size:
            return size
        size = model.valid_input_size(size + 1)
    raise ValueError(
        f"input_size_for_output: no input up to {size} gives an output of {output_size} pixels"
    )


def mirror_indices(start, length, n):
    """Indices into an axis of ``n`` elements for positions start .. start + length - 1,
    mirrored at both ends: ... 2 1 | 0 1 .. n-1 | n-2 n-3 ..."""
    positions = np.arange(start, start + length)
    if n == 1:
        return np.zeros_like(positions)
    period = 2 * (n - 1)
    positions = np.mod(positions, period)
    return np.where(positions < n, positions, period - positions)


def mirror_crop(array, top, left, height, width):
    """The (..., height, width) window of ``array`` at (top, left), mirrored outside the array."""
    rows = mirror_indices(top, height, array.shape[-2])
    cols = mirror_indices(left, width, array.shape[-1])
    return array[..., rows[:, None], cols]


def tile_geometry(model, tile):
    """(input edge, output margin, trim, step) of the overlap-tile grid for an output tile edge.

    The valid sizes of a U-Net of depth d are 2^d apart, and its max-pools see
    the same grid in two inputs only if their origins differ by a multiple of
    2^d: so tiles advance by ``step``, the largest multiple of that spacing
    that fits in the output, and keep that much of it. A valid network's output
    is its input less ``margin`` on each side; a same-padded network (output =
    input) would see zero padding at its tile border, so ``trim`` pixels of
    context, its whole ``context_radius()`` rounded up to the pooling grid, are
    added around each tile and cut from its output.
    """
    size_in = input_size_for_output(model, tile)
    align = model.valid_input_size(size_in + 1) - size_in
    size_out = model.output_size(size_in)
    trim = 0 if size_out < size_in else -(-model.context_radius() // align) * align
    size_in = input_size_for_output(model, size_out + 2 * trim)
    size_out = model.output_size(size_in)
    margin = (size_in - size_out) // 2
    step = (size_out - 2 * trim) // align * align
    while step < 1:
        size_in = model.valid_input_size(size_in + 1)
        size_out = model.output_size(size_in)
        margin = (size_in - size_out) // 2
        step = (size_out - 2 * trim) // align * align
    return size_in, margin, trim, step


def predict_logits(model, image, tile=None, batch_size=4):
    """float32 (K, H, W) logits of ``model`` for a host image (C, H, W) of any size.

    tile: the wanted output tile edge; default min(192, max(H, W)). Tiles of the
    mirror-padded image run through ``model.forward`` ``batch_size`` at a time
    on ``model.device`` and are stitched on the pooling grid (see
    tile_geometry), so for a valid network the result equals one pass over the
    whole mirror-padded image, whatever the tile size (to float rounding; for a
    same-padded network too). The forwards run under ``no_grad()``: no layer
    keeps a cache for a backward (its result is bitwise the same). Put the model
    in eval mode first (``load_trained`` and the training loop's ``evaluate`` do).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"predict_logits: image must be (C, H, W), got shape {image.shape}")
    if batch_size < 1:
        raise ValueError(f"predict_logits: batch_size must be >= 1, got {batch_size}")
    height, width = image.shape[1:]
    size_in, margin, trim, step = tile_geometry(
        model, tile or min(DEFAULT_OUTPUT_TILE, max(height, width)))
    size_out = size_in - 2 * margin
    rows, cols = math.ceil(height / step), math.ceil(width / step)
    offset = margin + trim
    context = mirror_crop(image, -offset, -offset, (rows - 1) * step + size_in,
                          (cols - 1) * step + size_in)
    corners = [(r * step, c * step) for r in range(rows) for c in range(cols)]
    logits = None
    for first in range(0, len(corners), batch_size):
        batch = corners[first : first + batch_size]
        x = np.stack([context[:, y : y + size_in, x : x + size_in] for y, x in batch])
        with no_grad():
            out = to_numpy(model.forward(to_device(x, model.device)))
        if out.ndim != 4 or out.shape[0] != len(batch) or out.shape[2:] != (size_out, size_out):
            raise ValueError(
                f"predict_logits: model.forward on {x.shape} must return (N, K, {size_out}, "
                f"{size_out}) with N = {len(batch)}, got {out.shape}"
            )
        if logits is None:
            logits = np.empty((out.shape[1], rows * step, cols * step), np.float32)
        for (y, x), tile_logits in zip(batch, out, strict=True):
            logits[:, y : y + step, x : x + step] = tile_logits[:, trim : trim + step,
                                                                trim : trim + step]
    return logits[:, :height, :width]


def random_tile(image, mask, weight, *, input_size, output_size, rng, window=None):
    """A random training tile: (image (C, s, s), mask (o, o), weight (o, o) or None).

    The o x o output window is placed uniformly inside the image (or, along an
    axis shorter than o, so that the image lies inside the window, the rest
    mirrored). The image crop is the s x s input centred on it, mirrored beyond
    the border; s = ``input_size``, o = ``output_size``. With ``window`` = w >= s,
    image, mask and weight are all the w x w window centred on the output
    instead (what augmentation transforms before ``centre_tile`` cuts the tile).
    """
    if not 1 <= output_size <= input_size <= (window or input_size):
        raise ValueError(
            f"random_tile: need 1 <= output_size <= input_size <= window, got {output_size}, "
            f"{input_size} and {window}"
        )
    height, width = image.shape[-2:]
    if np.shape(mask) != (height, width) or (
        weight is not None and np.shape(weight) != (height, width)
    ):
        raise ValueError(
            f"random_tile: mask and weight must be (H, W) = {(height, width)} like the image, "
            f"got {np.shape(mask)} and {None if weight is None else np.shape(weight)}"
        )
    top = int(rng.integers(min(0, height - output_size), max(0, height - output_size) + 1))
    left = int(rng.integers(min(0, width - output_size), max(0, width - output_size) + 1))
    if window is not None:
        margin = (window - output_size) // 2
        crops = [mirror_crop(a, top - margin, left - margin, window, window)
                 for a in (image, mask, weight) if a is not None]
        return crops[0], crops[1], crops[2] if weight is not None else None
    margin = (input_size - output_size) // 2
    image_tile = mirror_crop(image, top - margin, left - margin, input_size, input_size)
    mask_tile = mirror_crop(mask, top, left, output_size, output_size)
    if weight is not None:
        weight = mirror_crop(weight, top, left, output_size, output_size)
    return image_tile, mask_tile, weight


def centre_tile(image, mask, weight, *, input_size, output_size):
    """The s x s image and o x o mask and weight at the centre of a window from random_tile."""
    size = image.shape[-1]
    start_in, start_out = (size - input_size) // 2, (size - output_size) // 2
    window_in = slice(start_in, start_in + input_size)
    window_out = slice(start_out, start_out + output_size)
    return (image[..., window_in, window_in], mask[window_out, window_out],
            None if weight is None else weight[window_out, window_out])
