"""Max-pooling over k x k windows (floor mode, as PyTorch's default)."""

from scratchseg.backend import get_array_module
from scratchseg.functional._checks import check_float_array, check_positive, pair
from scratchseg.functional.conv import _window


def max_pool2d_forward(x, kernel_size=2, stride=None):
    """y[n, c, h, w] = max_{i,j} x[n, c, s h + i, s w + j], H' = (H - k) // s + 1.

    The k*k window offsets are visited in row-major order and an offset only
    takes over on a strictly larger value, so ``argmax`` records each window's
    first maximum. The cache holds that offset (one byte per output) and x's
    shape: nothing of the size of x.
    """
    op = "max_pool2d"
    check_float_array(x, "x", op, ndim=4)
    kh, kw = pair(kernel_size, "kernel_size", op)
    sh, sw = pair(kernel_size if stride is None else stride, "stride", op)
    for v, name in ((kh, "kernel_size"), (kw, "kernel_size"), (sh, "stride"), (sw, "stride")):
        check_positive(v, name, op)
    n, c, h, w = x.shape
    if kh > h or kw > w:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the input {h}x{w}")
    xp = get_array_module(x)
    out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = x[:, :, _window(0, sh, out_h), _window(0, sw, out_w)].copy()
    argmax = xp.zeros(y.shape, dtype=xp.uint8 if kh * kw < 256 else xp.int32)
    for offset in range(1, kh * kw):
        i, j = divmod(offset, kw)
        candidate = x[:, :, _window(i, sh, out_h), _window(j, sw, out_w)]
        larger = candidate > y
        xp.copyto(y, candidate, where=larger)
        xp.copyto(argmax, offset, where=larger, casting="unsafe")
    cache = (argmax, x.shape, (kh, kw), (sh, sw))
    return y, cache


def max_pool2d_backward(dy, cache):
    """dx[n, c, s h + i, s w + j] += dy[n, c, h, w] where (i, j) is the window's first max.

    Each window routes its whole gradient to exactly one input element, even
    when several elements tie (all zero after a ReLU, say).
    """
    argmax, x_shape, (kh, kw), (sh, sw) = cache
    xp = get_array_module(dy)
    if tuple(dy.shape) != tuple(argmax.shape):
        raise ValueError(f"max_pool2d_backward: dy must have the output's shape "
                         f"{tuple(argmax.shape)}, got {tuple(dy.shape)}")
    out_h, out_w = argmax.shape[2:]
    dx = xp.zeros(x_shape, dtype=dy.dtype)
    overlapping = sh < kh or sw < kw
    for offset in range(kh * kw):
        i, j = divmod(offset, kw)
        target = dx[:, :, _window(i, sh, out_h), _window(j, sw, out_w)]
        if overlapping:  # windows share elements: their gradients add up
            target += xp.where(argmax == offset, dy, 0)
        else:  # each element belongs to one window: write in place, no temporary
            xp.multiply(dy, argmax == offset, out=target)
    return dx
