"""The CPU engine's RoI max-pooling: the reference op run on groups of RoIs of like size.

The reference scans the window offsets of every bin up to the largest window of any
RoI, so one proposal covering the image makes every small one pay for its window
(selective search mixes both). Here the RoIs are grouped by their largest bin
window, rounded up to a power of two, and each group runs the reference op on its
own: the same arithmetic per RoI, so the same results bit for bit, and the cache
is the reference's, so the backward is the reference's too.
"""

from scratchseg.backend import get_array_module
from scratchseg.functional import roi_pool as reference
from scratchseg.grad_mode import saved_for_backward

roi_max_pool_backward = reference.roi_max_pool_backward


def _window_classes(xp, x, rois, output_size, spatial_scale):
    """Per RoI: ceil(log2) of its largest bin window, the group it runs in."""
    (oh, ow) = reference._check_roi_pool(x, rois, output_size, spatial_scale)
    corners = reference._round_half_away(xp, rois[:, 1:] * rois.dtype.type(spatial_scale))
    h0, h1 = reference._bin_edges(xp, corners[:, 1], corners[:, 3], oh, x.shape[2], rois.dtype)
    w0, w1 = reference._bin_edges(xp, corners[:, 0], corners[:, 2], ow, x.shape[3], rois.dtype)
    extent = xp.maximum((h1 - h0).max(axis=1), (w1 - w0).max(axis=1))
    return xp.ceil(xp.log2(xp.maximum(extent, 1))).astype(xp.int64), (oh, ow)


def roi_max_pool_forward(x, rois, output_size, spatial_scale=1.0):
    """The reference's y and cache, computed one group of like-sized RoIs at a time."""
    xp = get_array_module(x)
    classes, (oh, ow) = _window_classes(xp, x, rois, output_size, spatial_scale)
    y = xp.zeros((rois.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
    argmax = xp.full((rois.shape[0], oh, ow, x.shape[1]), -1, dtype=xp.int64)
    for group in xp.unique(classes).tolist():
        members = xp.flatnonzero(classes == group)
        y[members], cache = reference.roi_max_pool_forward(x, rois[members], output_size,
                                                           spatial_scale)
        if cache is not None:
            argmax[members] = cache[0]
    return y, saved_for_backward(argmax, x.shape, x.dtype)
