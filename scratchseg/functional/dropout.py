"""Inverted dropout."""

from scratchseg.backend import backend_name
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_upstream,
)
from scratchseg.grad_mode import saved_for_backward


def dropout_forward(x, p, rng, training=True):
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p); y = x in eval.

    ``rng`` (needed in training) is a ``numpy.random.Generator`` for NumPy
    arrays or a ``cupy.random.Generator`` for CuPy arrays. The cache is the
    boolean mask (None for the identity), its scale and the output's
    shape, dtype and backend.
    """
    op = "dropout"
    check_float_array(x, "x", op)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{op}: p must be in [0, 1), got {p}")
    if training and not callable(getattr(rng, "random", None)):
        raise TypeError(f"{op}: training needs rng, a numpy.random.Generator (NumPy x) or "
                        f"cupy.random.Generator (CuPy x), got {type(rng).__name__}")
    output = (x.shape, x.dtype, backend_name(x))
    if not training or p == 0.0:
        return x, saved_for_backward(None, None, output)
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    if backend_name(keep) != output[2]:
        raise TypeError(f"{op}: rng draws {backend_name(keep)} arrays but x is a {output[2]} "
                        f"array; pass a {output[2]}.random.Generator")
    scale = x.dtype.type(1.0 / (1.0 - p))
    return x * keep * scale, saved_for_backward(keep, scale, output)


def dropout_backward(dy, cache):
    """dx = dy * m / (1 - p) with the forward's mask; dx = dy in eval."""
    keep, scale, output = check_cache("dropout_backward", cache)
    check_upstream("dropout_backward", dy, *output)
    if keep is None:
        return dy
    return dy * keep * scale
