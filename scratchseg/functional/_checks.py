"""Input validation shared by the functional ops: one clear error per misuse."""

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
