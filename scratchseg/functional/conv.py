"""2-D convolution and transposed convolution: im2col, one GEMM, col2im.

Shapes (PyTorch's layouts, so weights move between the frameworks unchanged):
conv2d            x (N, C, H, W), w (O, C, kH, kW) -> y (N, O, H', W'),
                  H' = (H + 2p - kH) // s + 1
conv_transpose2d  x (N, C, H, W), w (C, O, kH, kW) -> y (N, O, H', W'),
                  H' = (H - 1) s - 2p + kH

im2col lays the kH*kW shifted, strided views of the padded input out as the
rows of one matrix, so a convolution is one matrix product. col2im is its
adjoint: kH*kW strided slice additions. The transposed convolution is the
adjoint of the convolution in its input, so its forward is conv2d's input
gradient and its backward is conv2d's forward and weight gradient.
"""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import (
    check_cache,
    check_conv,
    check_upstream,
    conv2d_output_size,
    conv_transpose2d_output_size,
)
from scratchseg.grad_mode import saved_for_backward


def _taps(kernel, stride, out_size):
    """(i, j, rows, columns): for each kernel offset, the strided slices of the padded input
    that it reads, x_pad[s h + i, s w + j] for h < H', w < W'."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_size
    return [(i, j, slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))
            for i in range(kh) for j in range(kw)]


def im2col(x, kernel, stride, padding, out_size):
    """(N, C, H, W) -> columns (C kH kW, N H' W').

    cols[(c, i, j), (n, h, w)] = x_pad[n, c, s h + i, s w + j], x_pad being x with p
    zeros on each side: one strided slice copy per kernel offset (i, j).
    """
    xp = get_array_module(x)
    n, c = x.shape[:2]
    (kh, kw), (ph, pw) = kernel, padding
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = xp.empty((c, kh, kw, n, *out_size), dtype=x.dtype)
    for i, j, rows, columns in _taps(kernel, stride, out_size):
        cols[:, i, j] = x_pad[:, :, rows, columns].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, -1)


def col2im(cols, shape, kernel, stride, padding, out_size):
    """The adjoint of im2col: columns (C kH kW, N H' W') summed back onto (N, C, H, W).

    x_pad[n, c, s h + i, s w + j] += cols[(c, i, j), (n, h, w)], then the padding is
    cut off: overlapping windows add up.
    """
    xp = get_array_module(cols)
    n, c, h, w = shape
    (kh, kw), (ph, pw) = kernel, padding
    x_pad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, n, *out_size)
    for i, j, rows, columns in _taps(kernel, stride, out_size):
        x_pad[:, :, rows, columns] += cols[:, i, j].transpose(1, 0, 2, 3)
    return x_pad[:, :, ph:ph + h, pw:pw + w]


def _channel_major(a):
    """(N, C, H, W) -> (C, N H W): the layout of im2col's columns."""
    return a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)


def _batch_major(a, n, size):
    """(C, N H W) -> (N, C, H, W), contiguous: _channel_major's inverse."""
    xp = get_array_module(a)
    return xp.ascontiguousarray(a.reshape(a.shape[0], n, *size).transpose(1, 0, 2, 3))


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """y[n, o, h, w] = sum_{c,i,j} w[o, c, i, j] x_pad[n, c, s h + i, s w + j] + b[o].

    As a GEMM: Y (O, N H' W') = W (O, C kH kW) @ im2col(x). The cache keeps x, not
    the kH kW times larger columns; the backward builds them again.
    """
    stride, padding = check_conv("conv2d", x, w, b, stride, padding, "out_in")
    out_size = conv2d_output_size("conv2d", x, w, stride, padding)
    o, kernel = w.shape[0], w.shape[2:]
    cols = im2col(x, kernel, stride, padding, out_size)
    y = _batch_major(w.reshape(o, -1) @ cols, x.shape[0], out_size)
    if b is not None:
        y += b[:, None, None]
    return y, saved_for_backward(x, w, b is not None, stride, padding, out_size)


def conv2d_backward(dy, cache, input_grad=True):
    """With dY the (O, N H' W') matrix of dy:

    dW = dY @ im2col(x)^T,  db[o] = sum_{n,h,w} dy[n, o, h, w],  dx = col2im(W^T @ dY).

    ``input_grad=False`` returns dx = None and skips its GEMM, as PyTorch skips an
    input that needs no gradient (a network's first layer in training).
    """
    x, w, has_bias, stride, padding, out_size = check_cache("conv2d_backward", cache)
    o, kernel = w.shape[0], w.shape[2:]
    check_upstream("conv2d_backward", dy, (x.shape[0], o, *out_size), x.dtype, backend_name(x))
    dy_mat = _channel_major(dy)
    dw = (dy_mat @ im2col(x, kernel, stride, padding, out_size).T).reshape(w.shape)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = None
    if input_grad:
        dx = col2im(w.reshape(o, -1).T @ dy_mat, x.shape, kernel, stride, padding, out_size)
    return dx, dw, db


def conv_transpose2d_forward(x, w, b=None, stride=2, padding=0):
    """The adjoint of conv2d in its input: y = col2im(W^T @ X) + b, X the (C, N H W) x.

    y_pad[n, o, s h + i, s w + j] += sum_c x[n, c, h, w] w[c, o, i, j], and y is y_pad
    with p rows and columns cut off each side: H' = (H - 1) s - 2p + kH.
    """
    stride, padding = check_conv("conv_transpose2d", x, w, b, stride, padding, "in_out")
    out_size = conv_transpose2d_output_size("conv_transpose2d", x, w, stride, padding)
    (n, c, *in_size), (o, *kernel) = x.shape, w.shape[1:]
    cols = w.reshape(c, -1).T @ _channel_major(x)
    y = col2im(cols, (n, o, *out_size), kernel, stride, padding, in_size)
    if b is not None:
        y += b[:, None, None]
    return y, saved_for_backward(x, w, b is not None, stride, padding, out_size)


def conv_transpose2d_backward(dy, cache):
    """conv2d's forward and weight gradient with the roles of x and dy swapped:

    dx = W (C, O kH kW) @ im2col(dy),  dW = X (C, N H W) @ im2col(dy)^T,  db = sum dy.
    """
    x, w, has_bias, stride, padding, out_size = check_cache("conv_transpose2d_backward", cache)
    (n, c, *in_size), (o, *kernel) = x.shape, w.shape[1:]
    check_upstream("conv_transpose2d_backward", dy, (n, o, *out_size), x.dtype,
                   backend_name(x))
    dy_cols = im2col(dy, kernel, stride, padding, in_size)
    dx = _batch_major(w.reshape(c, -1) @ dy_cols, n, in_size)
    dw = (_channel_major(x) @ dy_cols.T).reshape(w.shape)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db
