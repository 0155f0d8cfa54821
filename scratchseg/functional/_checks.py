"""Input validation shared by both engines' ops: one clear error per misuse."""

from scratchseg.backend import backend_name, get_array_module


def pair(value, name, op):
    """Normalise an int or a pair of ints to a tuple (a, b)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return tuple(value)
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def check_float_array(a, name, op, ndim=None):
    """Require a floating-point array (of rank ``ndim`` when given)."""
    if not hasattr(a, "dtype") or not hasattr(a, "ndim"):
        raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(
            f"{op}: {name} must have rank {ndim} ({_RANK_NAMES.get(ndim, '')}), "
            f"got shape {tuple(a.shape)}"
        )


_RANK_NAMES = {1: "C", 2: "N, K", 3: "N, H, W", 4: "N, C, H, W"}


def check_same_dtype(op, **arrays):
    """Require every given (non-None) array to share one dtype and one device."""
    present = {k: v for k, v in arrays.items() if v is not None}
    for k, v in present.items():
        if not hasattr(v, "dtype"):
            raise TypeError(f"{op}: {k} must be a NumPy or CuPy array, got {type(v).__name__}")
    try:
        get_array_module(*present.values())
    except TypeError as error:
        raise TypeError(f"{op}: {error}") from None
    dtypes = {str(v.dtype) for v in present.values()}
    if len(dtypes) > 1:
        found = ", ".join(f"{k}={v.dtype}" for k, v in present.items())
        raise TypeError(f"{op}: inputs must share one dtype, got {found}")


def check_positive(value, name, op):
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}")


def check_upstream(op, dy, shape, dtype, backend):
    """Require the upstream gradient ``dy`` to be what the forward's output was: a
    ``backend`` ("numpy" or "cupy") array of ``shape`` and ``dtype``.

    Compares metadata only, never the data: no cost next to the backward itself.
    """
    if not hasattr(dy, "dtype") or not hasattr(dy, "shape"):
        raise TypeError(f"{op}: dy must be a {backend} array like the forward's output, got "
                        f"{type(dy).__name__}")
    if backend_name(dy) != backend:
        raise TypeError(f"{op}: dy must be a {backend} array like the forward's output, got "
                        f"a {backend_name(dy)} array; move it with "
                        "scratchseg.backend.to_device")
    if dy.dtype != dtype:
        raise TypeError(f"{op}: dy must have the output's dtype {dtype}, got {dy.dtype}")
    if tuple(dy.shape) != tuple(shape):
        raise ValueError(f"{op}: dy must have the output's shape {tuple(shape)}, got "
                         f"{tuple(dy.shape)}")


def check_cache(op, cache):
    """A backward needs its forward's cache; under ``scratchseg.no_grad()`` there is none."""
    if cache is None:
        raise RuntimeError(f"{op}: no cache to run on: its forward ran under "
                           "scratchseg.no_grad() (inference mode keeps nothing for a backward)")
    return cache


def check_conv(op, x, w, b, stride, padding, weight_layout):
    """Validate a convolution's inputs; return (stride, padding) as pairs.

    ``weight_layout`` is "out_in" for conv2d's (C_out, C_in, kH, kW) and "in_out" for
    conv_transpose2d's (C_in, C_out, kH, kW).
    """
    check_float_array(x, "x", op, ndim=4)
    check_float_array(w, "w", op, ndim=4)
    check_same_dtype(op, x=x, w=w, b=b)
    in_axis, out_axis = (0, 1) if weight_layout == "in_out" else (1, 0)
    if x.shape[1] != w.shape[in_axis]:
        layout = "(C_in, C_out, kH, kW)" if weight_layout == "in_out" else "(C_out, C_in, kH, kW)"
        raise ValueError(f"{op}: x has {x.shape[1]} channels but w of shape {tuple(w.shape)} "
                         f"{layout} expects {w.shape[in_axis]}")
    if b is not None:
        check_float_array(b, "b", op, ndim=1)
        if b.shape != (w.shape[out_axis],):
            raise ValueError(f"{op}: b must have shape ({w.shape[out_axis]},) to match w, got "
                             f"{tuple(b.shape)}")
    stride, padding = pair(stride, "stride", op), pair(padding, "padding", op)
    for s in stride:
        check_positive(s, "stride", op)
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding}")
    return stride, padding


def conv2d_output_size(op, x, w, stride, padding):
    """(H', W') = ((H + 2p - kH) // s + 1, ...), refused when the kernel outgrows the input."""
    (h, wd), (kh, kw) = x.shape[2:], w.shape[2:]
    if kh > h + 2 * padding[0] or kw > wd + 2 * padding[1]:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input "
                         f"{h + 2 * padding[0]}x{wd + 2 * padding[1]}")
    return ((h + 2 * padding[0] - kh) // stride[0] + 1,
            (wd + 2 * padding[1] - kw) // stride[1] + 1)


def conv_transpose2d_output_size(op, x, w, stride, padding):
    """(H', W') = ((H - 1) s - 2p + kH, ...), refused when the padding leaves nothing."""
    (h, wd), (kh, kw) = x.shape[2:], w.shape[2:]
    size = ((h - 1) * stride[0] + kh - 2 * padding[0], (wd - 1) * stride[1] + kw - 2 * padding[1])
    if min(size) < 1:
        raise ValueError(f"{op}: padding {padding} leaves no output for input {h}x{wd}, "
                         f"kernel {kh}x{kw}, stride {stride}")
    return size


def check_pool(op, x, kernel_size, stride):
    """Validate a pooling's inputs; return (kernel, stride, output size), each a pair.

    ``stride`` None means the kernel size; H' = (H - kH) // sH + 1 (floor mode).
    """
    check_float_array(x, "x", op, ndim=4)
    kernel = pair(kernel_size, "kernel_size", op)
    stride = pair(kernel_size if stride is None else stride, "stride", op)
    for value, name in ((kernel, "kernel_size"), (stride, "stride")):
        check_positive(min(value), name, op)
    h, w = x.shape[2:]
    if kernel[0] > h or kernel[1] > w:
        raise ValueError(f"{op}: kernel {kernel[0]}x{kernel[1]} is larger than the input {h}x{w}")
    return kernel, stride, ((h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)


def check_concat(op, skip, x):
    """Validate the skip concatenation's inputs: two (N, C, H, W) arrays of one batch size,
    dtype and device, ``skip`` at least as large as ``x`` in H and W."""
    check_float_array(skip, "skip", op, ndim=4)
    check_float_array(x, "x", op, ndim=4)
    check_same_dtype(op, skip=skip, x=x)
    if skip.shape[0] != x.shape[0]:
        raise ValueError(f"{op}: batch sizes differ: skip {skip.shape[0]}, x {x.shape[0]}")
