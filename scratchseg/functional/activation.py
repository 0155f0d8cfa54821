"""The rectified linear unit."""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import check_cache, check_float_array, check_upstream
from scratchseg.grad_mode import saved_for_backward


def relu_forward(x):
    """y = max(x, 0). The cache is y: y > 0 exactly where x > 0, and the next layer
    keeps y as its input anyway, so the cache costs no memory of its own."""
    check_float_array(x, "x", "relu")
    xp = get_array_module(x)
    y = xp.maximum(x, 0)
    return y, saved_for_backward(y)


def relu_backward(dy, cache):
    """dx = dy * [y > 0]; the gradient at x == 0 is 0, as in PyTorch."""
    (y,) = check_cache("relu_backward", cache)
    check_upstream("relu_backward", dy, y.shape, y.dtype, backend_name(y))
    return dy * (y > 0)
