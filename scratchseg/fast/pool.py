"""The CPU engine's max-pooling: the reference's strided-view maxima, a slice of the channels
per core, and a backward that writes each element once where the windows tile x."""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.fast.conv import _window
from scratchseg.fast.threads import in_parts
from scratchseg.functional._checks import check_cache, check_pool, check_upstream
from scratchseg.grad_mode import saved_for_backward


def _offset_views(x, kernel, stride, out_size):
    """For each window offset (i, j), row-major: the strided view x[:, :, s h + i, s w + j]."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    return [x[:, :, _window(i, sh, oh), _window(j, sw, ow)] for i in range(kh) for j in range(kw)]


def max_pool2d_forward(x, kernel_size=2, stride=None):
    """y[n, c, h, w] = max_{i,j} x[n, c, s h + i, s w + j], H' = (H - k) // s + 1.

    k*k - 1 elementwise maxima of strided views. The cache is x and y: in a
    network both are alive anyway (the ReLU before keeps x, the layer after
    keeps y), so pooling adds no memory of its own.
    """
    kernel, stride, out_size = check_pool("max_pool2d", x, kernel_size, stride)
    n, c = x.shape[:2]
    xp = get_array_module(x)
    y = xp.empty((n, c, *out_size), dtype=x.dtype)

    def pool_channels(part):
        views = _offset_views(x[:, part], kernel, stride, out_size)
        y_part = y[:, part]
        y_part[...] = views[0]
        for view in views[1:]:
            xp.maximum(y_part, view, out=y_part)

    in_parts(xp, c, pool_channels, x.size)
    return y, saved_for_backward(x, y, kernel, stride)


def max_pool2d_backward(dy, cache):
    """dx[n, c, s h + i, s w + j] += dy[n, c, h, w] where (i, j) is the window's first max.

    Offsets are visited in row-major order; the first one whose value equals
    the window's max claims the window's whole gradient, even when several
    elements tie (all zero after a ReLU, say). The last offset needs no
    comparison: it holds the max of every window still unclaimed.
    """
    x, y, kernel, stride = check_cache("max_pool2d_backward", cache)
    check_upstream("max_pool2d_backward", dy, y.shape, y.dtype, backend_name(y))
    xp = get_array_module(dy)
    overlapping = stride[0] < kernel[0] or stride[1] < kernel[1]
    if stride == kernel:  # the windows tile x: every element below is written once
        dx = xp.empty(x.shape, dtype=dy.dtype)
        dx[:, :, y.shape[2] * stride[0]:] = 0  # rows and columns no window reaches
        dx[:, :, :, y.shape[3] * stride[1]:] = 0
    else:
        dx = xp.zeros(x.shape, dtype=dy.dtype)

    def route_channels(part):
        y_part, dy_part = y[:, part], dy[:, part]
        views = _offset_views(x[:, part], kernel, stride, y.shape[2:])
        targets = _offset_views(dx[:, part], kernel, stride, y.shape[2:])
        unclaimed = xp.ones(y_part.shape, dtype=bool)  # windows whose max is not found yet
        for k, (view, target) in enumerate(zip(views, targets)):
            if k == len(views) - 1:
                first_max = unclaimed
            else:
                first_max = view == y_part
                first_max &= unclaimed
                unclaimed ^= first_max
            if overlapping:  # windows share elements: their gradients add up
                target += xp.where(first_max, dy_part, 0)
            else:  # each element belongs to one window at most: write in place
                xp.multiply(dy_part, first_max, out=target)

    in_parts(xp, x.shape[1], route_channels, x.size)
    return dx
