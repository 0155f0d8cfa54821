"""Weight initialisation, drawn on the host from an explicit seed.

Drawing on the host with NumPy means one seed gives the same network on
NumPy and CuPy; the layer then moves the arrays to its device.
"""

import numpy


def as_generator(rng):
    """An int seed or a ``numpy.random.Generator`` -> a Generator."""
    if isinstance(rng, numpy.random.Generator):
        return rng
    if isinstance(rng, (int, numpy.integer)) and not isinstance(rng, bool):
        return numpy.random.default_rng(int(rng))
    raise TypeError(f"rng must be an int seed or a numpy.random.Generator, got {rng!r}")


def he_normal(shape, fan_in, rng, dtype="float32"):
    """w ~ N(0, 2 / fan_in), the paper's (and He et al.'s) initialisation for ReLU nets."""
    std = numpy.sqrt(2.0 / fan_in)
    return (as_generator(rng).standard_normal(shape) * std).astype(dtype)


def zeros(shape, dtype="float32"):
    return numpy.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    return numpy.ones(shape, dtype=dtype)
