"""The U-Net's crop-and-copy skip: centre-crop the encoder map, concatenate channels."""

import numbers

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import check_cache, check_concat, check_upstream
from scratchseg.grad_mode import saved_for_backward


def crop_offsets(shape, height, width, op):
    """(top, left) = ((H - height) // 2, (W - width) // 2) for an array of ``shape``."""
    h, w = shape[-2:]
    if height > h or width > w or height < 1 or width < 1:
        raise ValueError(f"{op}: cannot crop {h}x{w} to {height}x{width}")
    return (h - height) // 2, (w - width) // 2


def center_crop(x, height, width):
    """x[..., t:t+height, l:l+width] with t = (H - height) // 2, l = (W - width) // 2 (a view)."""
    op = "center_crop"
    if not hasattr(x, "ndim") or not hasattr(x, "shape"):
        raise TypeError(f"{op}: x must be a NumPy or CuPy array, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{op}: x must have rank 2 or more (..., H, W), got shape "
                         f"{tuple(x.shape)}")
    for name, size in (("height", height), ("width", width)):
        if not isinstance(size, numbers.Integral) or isinstance(size, bool):
            raise TypeError(f"{op}: {name} must be an int, got {size!r}")
    top, left = crop_offsets(x.shape, height, width, op)
    return x[..., top : top + height, left : left + width]


def concat_forward(skip, x):
    """y = [crop(skip) ; x] along channels, crop(skip) centred to x's H x W."""
    check_concat("concat", skip, x)
    xp = get_array_module(skip, x)
    offsets = crop_offsets(skip.shape, x.shape[2], x.shape[3], "concat")
    y = xp.concatenate([center_crop(skip, x.shape[2], x.shape[3]), x], axis=1)
    return y, saved_for_backward(skip.shape, offsets, (y.shape, y.dtype, backend_name(y)))


def concat_backward(dy, cache):
    """dskip = zeros(skip) with dy[:, :C_skip] in the cropped window; dx = dy[:, C_skip:]."""
    skip_shape, (top, left), output = check_cache("concat_backward", cache)
    check_upstream("concat_backward", dy, *output)
    xp = get_array_module(dy)
    c_skip, (h, w) = skip_shape[1], dy.shape[2:]
    dskip = xp.zeros(skip_shape, dtype=dy.dtype)
    dskip[:, :, top : top + h, left : left + w] = dy[:, :c_skip]
    return dskip, dy[:, c_skip:]
