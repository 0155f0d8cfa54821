"""Max-pooling over k x k windows (floor mode, as PyTorch's default)."""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import check_cache, check_pool, check_upstream
from scratchseg.grad_mode import saved_for_backward


def _window_views(x, kernel, stride, out_size):
    """For each window offset (i, j), row-major: the strided view x[:, :, s h + i, s w + j]."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    return [x[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]


def max_pool2d_forward(x, kernel_size=2, stride=None):
    """y[n, c, h, w] = max_{i,j} x[n, c, s h + i, s w + j], H' = (H - k) // s + 1.

    The maximum of the k*k strided views, one per window offset. The cache is x
    and y (the backward finds each window's maximum by comparing the two).
    """
    kernel, stride, out_size = check_pool("max_pool2d", x, kernel_size, stride)
    xp = get_array_module(x)
    views = _window_views(x, kernel, stride, out_size)
    y = views[0].copy()
    for view in views[1:]:
        xp.maximum(y, view, out=y)
    return y, saved_for_backward(x, y, kernel, stride)


def max_pool2d_backward(dy, cache):
    """dx[n, c, s h + i, s w + j] += dy[n, c, h, w] where (i, j) is the window's first max.

    Offsets are visited in row-major order; the first whose value equals the
    window's max claims the window's whole gradient, even when elements tie
    (all zero after a ReLU, say), as PyTorch does.
    """
    x, y, kernel, stride = check_cache("max_pool2d_backward", cache)
    check_upstream("max_pool2d_backward", dy, y.shape, y.dtype, backend_name(y))
    xp = get_array_module(dy)
    dx = xp.zeros(x.shape, dtype=dy.dtype)
    unclaimed = xp.ones(y.shape, dtype=bool)  # windows whose maximum is not found yet
    views = _window_views(x, kernel, stride, y.shape[2:])
    targets = _window_views(dx, kernel, stride, y.shape[2:])
    for view, target in zip(views, targets):
        first_max = (view == y) & unclaimed
        unclaimed &= ~first_max
        target += xp.where(first_max, dy, 0)
    return dx
