"""The rectified linear unit."""

from scratchseg.functional._checks import check_float_array


def relu_forward(x):
    """y = max(x, 0). The cache is the mask x > 0 (one byte per element)."""
    check_float_array(x, "x", "relu")
    mask = x > 0
    return x * mask, mask


def relu_backward(dy, cache):
    """dx = dy * [x > 0]; the gradient at x == 0 is 0, as in PyTorch."""
    mask = cache
    if dy.shape != mask.shape:
        raise ValueError(f"relu_backward: dy must have the output's shape {tuple(mask.shape)}, "
                         f"got {tuple(dy.shape)}")
    return dy * mask
