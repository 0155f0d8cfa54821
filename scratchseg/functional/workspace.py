"""A reusable scratch buffer for the im2col columns, one per array module and dtype.

A convolution's columns are kH*kW times larger than its input: 75-150 MiB for
a 3x3 layer on a 256x256 U-Net level. Allocating them afresh on every call
costs page faults that take as long as the GEMM itself, so the columns live
in one buffer that grows to the largest request and is then reused. The
array it returns is valid only until the next ``scratch`` call: an op must be
done with it before it returns.
"""

_buffers = {}


def scratch(xp, shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` viewing the shared buffer."""
    size = 1
    for extent in shape:
        size *= extent
    key = (xp.__name__, str(dtype))
    buffer = _buffers.get(key)
    if buffer is None or buffer.size < size:
        _buffers.pop(key, None)  # let the old buffer go before the larger one is made
        buffer = _buffers[key] = xp.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def release():
    """Free every scratch buffer (they are made again on the next convolution)."""
    _buffers.clear()
