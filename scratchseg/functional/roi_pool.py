"""RoI max-pooling (Fast R-CNN): each box's feature window cut into oh x ow bins, max per bin.

The rounding and bin rules are torchvision.ops.roi_pool's (its CPU kernel), so
boxes, scales and results move between the two unchanged.
"""

import math
import numbers

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_positive,
    check_same_dtype,
    check_upstream,
    pair,
)
from scratchseg.grad_mode import saved_for_backward

OP = "roi_max_pool"
FLT_MAX = 3.4028234663852886e38  # torchvision starts every bin's max at -FLT_MAX


def _check_roi_pool(x, rois, output_size, spatial_scale):
    check_float_array(x, "x", OP, ndim=4)
    check_float_array(rois, "rois", OP)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"{OP}: rois must have shape (R, 5), rows [batch_index, x1, y1, x2, "
                         f"y2], got shape {tuple(rois.shape)}")
    check_same_dtype(OP, x=x, rois=rois)
    size = pair(output_size, "output_size", OP)
    check_positive(min(size), "output_size", OP)
    if (not isinstance(spatial_scale, numbers.Real) or isinstance(spatial_scale, bool)
            or not math.isfinite(spatial_scale) or spatial_scale <= 0):
        raise ValueError(f"{OP}: spatial_scale must be a finite number > 0, got "
                         f"{spatial_scale!r}")
    xp = get_array_module(rois)
    if rois.shape[0] and not bool(xp.isfinite(rois).all()):
        raise ValueError(f"{OP}: rois must be finite, got NaN or infinity")
    batch = rois[:, 0]
    bad = (batch != xp.floor(batch)) | (batch < 0) | (batch >= x.shape[0])
    if rois.shape[0] and bool(bad.any()):
        first = int(xp.argmax(bad))
        raise ValueError(f"{OP}: each roi's batch_index (column 0) must be an integer in "
                         f"[0, {x.shape[0]}) for x of shape {tuple(x.shape)}, got "
                         f"{float(batch[first])} in roi {first}")
    return size


def _round_half_away(xp, v):
    """C++ std::round: halves go away from zero (numpy's round goes to the even integer)."""
    whole = xp.trunc(v)
    return (whole + xp.where(xp.abs(v - whole) >= 0.5, xp.sign(v), 0)).astype(xp.int64)


def _bin_edges(xp, start, end, bins, limit, dtype):
    """Per roi and bin: [start, end) along one axis, torchvision's rule, clipped to [0, limit]."""
    size = xp.maximum(end - start + 1, 1).astype(dtype)
    bin_size = (size / dtype.type(bins))[:, None]
    lower = xp.floor(xp.arange(bins, dtype=dtype) * bin_size).astype(xp.int64)
    upper = xp.ceil(xp.arange(1, bins + 1, dtype=dtype) * bin_size).astype(xp.int64)
    return (xp.clip(lower + start[:, None], 0, limit),
            xp.clip(upper + start[:, None], 0, limit))


def roi_max_pool_forward(x, rois, output_size, spatial_scale=1.0):
    """y[r, c, i, j] = max of x[b_r, c, h, w] over bin (i, j) of roi r; 0 for an empty bin.

    rois (R, 5) rows [b, x1, y1, x2, y2] in image coordinates, x (N, C, H, W) the
    features at spatial_scale. As torchvision: x1' = round(x1 s) (half away from
    zero), ..., roi_w = max(x2' - x1' + 1, 1), bin_w = roi_w / ow; bin j spans
    w in [floor(j bin_w) + x1', ceil((j + 1) bin_w) + x1'), clipped to [0, W]; the
    same along h. The window offsets are scanned row-major (h outer, w inner) with
    a strict >, so each bin remembers its first maximum. Each step gathers whole
    pixels (all C channels, contiguous in an (N*H*W, C) copy of x). The cache is
    the maxima's pixel indices into that copy (-1: no gradient) and x's shape and dtype.
    """
    (oh, ow) = _check_roi_pool(x, rois, output_size, spatial_scale)
    xp = get_array_module(x)
    n, c, height, width = x.shape
    corners = _round_half_away(xp, rois[:, 1:] * rois.dtype.type(spatial_scale))
    h0, h1 = _bin_edges(xp, corners[:, 1], corners[:, 3], oh, height, rois.dtype)
    w0, w1 = _bin_edges(xp, corners[:, 0], corners[:, 2], ow, width, rois.dtype)
    image = rois[:, 0].astype(xp.int64)[:, None, None] * (height * width)
    pixels = x.transpose(0, 2, 3, 1).reshape(-1, c)  # row b H W + h W + w: x[b, :, h, w]
    best = xp.full((rois.shape[0], oh, ow, c), -FLT_MAX, dtype=x.dtype)
    argmax = xp.full(best.shape, -1, dtype=xp.int64)
    tall = int((h1 - h0).max()) if rois.shape[0] else 0
    wide = int((w1 - w0).max()) if rois.shape[0] else 0
    for i in range(tall):  # window offsets, row-major: the first max is kept
        h = h0 + i
        for j in range(wide):
            w = w0 + j
            inside = (h < h1)[:, :, None] & (w < w1)[:, None, :]  # (R, oh, ow)
            pixel = (image + xp.minimum(h, height - 1)[:, :, None] * width
                     + xp.minimum(w, width - 1)[:, None, :])
            value = pixels[pixel]  # (R, oh, ow, C)
            better = inside[..., None] & (value > best)
            best = xp.where(better, value, best)
            argmax = xp.where(better, pixel[..., None], argmax)
    empty = (h1 <= h0)[:, :, None] | (w1 <= w0)[:, None, :]
    y = xp.where(empty[..., None], x.dtype.type(0), best).transpose(0, 3, 1, 2)
    return xp.ascontiguousarray(y), saved_for_backward(argmax, x.shape, x.dtype)


def roi_max_pool_backward(dy, cache):
    """dx[b_r, c, h*, w*] += dy[r, c, i, j] at each bin's first maximum (h*, w*).

    Bins that overlap share elements, so the gradients are scatter-added (one
    bincount over flat indices into x laid out (N, H, W, C), then transposed back);
    empty bins pass nothing. rois get no gradient.
    """
    argmax, (n, c, height, width), dtype = check_cache("roi_max_pool_backward", cache)
    r, oh, ow, _ = argmax.shape
    check_upstream("roi_max_pool_backward", dy, (r, c, oh, ow), dtype, backend_name(argmax))
    xp = get_array_module(dy)
    hit = argmax >= 0
    flat = xp.where(hit, argmax * c + xp.arange(c), 0)  # pixel * C + channel
    weights = xp.where(hit, dy.transpose(0, 2, 3, 1), 0)
    dx = xp.bincount(flat.reshape(-1), weights=weights.reshape(-1),
                     minlength=n * height * width * c)
    return xp.ascontiguousarray(dx.astype(dy.dtype).reshape(n, height, width, c)
                                .transpose(0, 3, 1, 2))
