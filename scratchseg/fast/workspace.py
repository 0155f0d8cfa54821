"""Reusable scratch buffers for a convolution's columns and GEMM products.

A convolution's columns are several times larger than its input: 75-150 MiB
for a 3x3 layer on a 256x256 U-Net level when built whole. Allocating them
afresh on every call costs page faults that take as long as the GEMM itself,
so they live in buffers, one per name, array module, dtype and thread (the
parts of a convolution run on threads of their own: ``threads.in_parts``),
that grow to the largest request and are then reused. The array ``scratch``
returns is valid only until the next call with the same name on the same
thread: an op must be done with it before it returns.
"""

import threading

_buffers = {}


def scratch(xp, shape, dtype, name="columns"):
    """An uninitialised C-contiguous array of ``shape`` viewing the buffer called ``name``."""
    size = 1
    for extent in shape:
        size *= extent
    key = (name, xp.__name__, str(dtype), threading.get_ident())
    buffer = _buffers.get(key)
    if buffer is None or buffer.size < size:
        _buffers.pop(key, None)  # let the old buffer go before the larger one is made
        buffer = _buffers[key] = xp.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def release():
    """Free every scratch buffer (they are made again on the next convolution)."""
    _buffers.clear()
