"""The CPU engine's crop-and-copy skip: the concatenation's copies, a slice of the channels
per core."""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.fast.threads import in_parts
from scratchseg.functional._checks import check_cache, check_concat, check_upstream
from scratchseg.functional.skip import center_crop, crop_offsets
from scratchseg.grad_mode import saved_for_backward


def concat_forward(skip, x):
    """y = [crop(skip) ; x] along channels, crop(skip) centred to x's H x W."""
    check_concat("concat", skip, x)
    xp = get_array_module(skip, x)
    offsets = crop_offsets(skip.shape, x.shape[2], x.shape[3], "concat")
    cropped, c_skip = center_crop(skip, x.shape[2], x.shape[3]), skip.shape[1]
    y = xp.empty((x.shape[0], c_skip + x.shape[1], *x.shape[2:]), dtype=x.dtype)

    def copy_channels(part):  # y's channels part.start..part.stop-1 from skip and/or x
        for source, first in ((cropped, 0), (x, c_skip)):
            lo, hi = max(part.start, first), min(part.stop, first + source.shape[1])
            if lo < hi:
                y[:, lo:hi] = source[:, lo - first:hi - first]

    in_parts(xp, y.shape[1], copy_channels, y.size)
    return y, saved_for_backward(skip.shape, offsets, (y.shape, y.dtype, backend_name(y)))


def concat_backward(dy, cache):
    """dskip = zeros(skip) with dy[:, :C_skip] in the cropped window; dx = dy[:, C_skip:]."""
    skip_shape, (top, left), output = check_cache("concat_backward", cache)
    check_upstream("concat_backward", dy, *output)
    xp = get_array_module(dy)
    c_skip = skip_shape[1]
    h, w = dy.shape[2:]
    if tuple(skip_shape[2:]) == (h, w):  # nothing was cropped: the split is two views
        dskip = dy[:, :c_skip]
    else:
        dskip = xp.zeros(skip_shape, dtype=dy.dtype)
        dskip[:, :, top : top + h, left : left + w] = dy[:, :c_skip]
    return dskip, xp.ascontiguousarray(dy[:, c_skip:])
