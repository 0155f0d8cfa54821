"""The CPU engine's ReLU: the reference's, a slice of the elements per core."""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.fast.threads import in_parts
from scratchseg.functional._checks import check_cache, check_float_array, check_upstream
from scratchseg.grad_mode import saved_for_backward


def relu_forward(x):
    """y = max(x, 0). The cache is y itself: y > 0 exactly where x > 0, and the next
    layer keeps y as its input anyway, so the cache costs no memory of its own."""
    check_float_array(x, "x", "relu")
    xp = get_array_module(x)
    y = xp.empty(x.shape, dtype=x.dtype)
    x_flat, y_flat = x.reshape(-1), y.reshape(-1)
    in_parts(xp, y.size, lambda part: xp.maximum(x_flat[part], 0, out=y_flat[part]), y.size)
    return y, saved_for_backward(y)


def relu_backward(dy, cache):
    """dx = dy * [y > 0]; the gradient at x == 0 is 0, as in PyTorch."""
    (y,) = check_cache("relu_backward", cache)
    check_upstream("relu_backward", dy, y.shape, y.dtype, backend_name(y))
    xp = get_array_module(dy)
    dx = xp.empty(y.shape, dtype=y.dtype)
    dy_flat, y_flat, dx_flat = dy.reshape(-1), y.reshape(-1), dx.reshape(-1)
    in_parts(xp, y.size,
             lambda part: xp.multiply(dy_flat[part], y_flat[part] > 0, out=dx_flat[part]), y.size)
    return dx
