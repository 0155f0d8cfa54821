"""2-D convolution and transposed convolution as GEMMs over im2col columns.

Shapes (PyTorch's layouts, so weights move between the frameworks unchanged):
conv2d            x (N, C, H, W), w (O, C, kH, kW) -> y (N, O, H', W'),
                  H' = (H + 2p - kH) // s + 1
conv_transpose2d  x (N, C, H, W), w (C, O, kH, kW) -> y (N, O, H', W'),
                  H' = (H - 1) s - 2p + kH

im2col lays the kH*kW shifted, strided views of the padded input out as
columns, so a convolution is one batched matrix product. col2im is its
adjoint: kH*kW strided slice additions. The transposed convolution is the
adjoint of the convolution, so its forward is conv2d's input-gradient and
its backward is conv2d's forward.
"""

from scratchseg.backend import get_array_module
from scratchseg.functional._checks import (
    check_float_array,
    check_positive,
    check_same_dtype,
    pair,
)
from scratchseg.functional.workspace import scratch


def _window(start, stride, count):
    """The slice picking ``count`` positions ``start, start + stride, ...``."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _tap(offset, stride, pad, size_in, size_out):
    """Kernel offset ``offset`` along one axis: (output range, input slice) of the taps
    that land inside the unpadded input, row s*h + offset - pad in [0, size_in)."""
    first = max(0, -(-(pad - offset) // stride))
    last = min(size_out, (size_in - 1 + pad - offset) // stride + 1)
    if last <= first:
        return slice(0, 0), slice(0, 0)
    return slice(first, last), _window(stride * first + offset - pad, stride, last - first)


def im2col(x, kernel, stride, padding, out_size, out=None):
    """(N, C, H, W) -> columns (C*kH*kW, N*H'*W'), zero padding built in.

    cols[(c, i, j), (n, h, w)] = x[n, c, s h + i - p, s w + j - p], 0 outside x:
    one strided slice copy per kernel offset (i, j), never a loop over pixels,
    and no padded copy of x. With the batch inside the column index every
    convolution is one 2-D GEMM. ``out``: a buffer of the columns' shape.
    """
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_size
    n, c, h, w = x.shape
    shape = (c * kh * kw, n * oh * ow)
    cols = (xp.empty(shape, dtype=x.dtype) if out is None else out).reshape(c, kh, kw, n, oh, ow)
    x_cn = x.transpose(1, 0, 2, 3)
    for i in range(kh):
        rows, src_rows = _tap(i, sh, ph, h, oh)
        for j in range(kw):
            columns, src_columns = _tap(j, sw, pw, w, ow)
            tap = cols[:, i, j]
            tap[:, :, :rows.start] = 0  # the strips of taps that fall on the padding
            tap[:, :, rows.stop:] = 0
            tap[:, :, :, :columns.start] = 0
            tap[:, :, :, columns.stop:] = 0
            tap[:, :, rows, columns] = x_cn[:, :, src_rows, src_columns]
    return cols.reshape(shape)


def col2im(cols, shape, kernel, stride, padding, out_size):
    """The adjoint of im2col: sum columns (C*kH*kW, N*H'*W') back onto an (N, C, H, W) array.

    x[n, c, s h + i - p, s w + j - p] += cols[(c, i, j), (n, h, w)] where that
    lands inside x: kH*kW strided slice additions (overlapping windows add up).
    """
    xp = get_array_module(cols)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_size
    n, c, h, w = shape
    cols = cols.reshape(c, kh, kw, n, oh, ow)
    x = xp.zeros(shape, dtype=cols.dtype)
    x_cn = x.transpose(1, 0, 2, 3)
    for i in range(kh):
        rows, src_rows = _tap(i, sh, ph, h, oh)
        for j in range(kw):
            columns, src_columns = _tap(j, sw, pw, w, ow)
            x_cn[:, :, src_rows, src_columns] += cols[:, i, j, :, rows, columns]
    return x


def _to_channel_major(a):
    """(N, C, H, W) -> (C, N*H*W): the GEMM operand layout of im2col's columns."""
    return a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)


def _from_channel_major(a, n, size):
    """(C, N*H*W) -> contiguous (N, C, H, W)."""
    xp = get_array_module(a)
    return xp.ascontiguousarray(a.reshape(a.shape[0], n, *size).transpose(1, 0, 2, 3))


def _columns(xp, rows, n, out_size, dtype):
    return scratch(xp, (rows, n * out_size[0] * out_size[1]), dtype)


def _check_conv(op, x, w, b, stride, padding, weight_layout):
    check_float_array(x, "x", op, ndim=4)
    check_float_array(w, "w", op, ndim=4)
    check_same_dtype(op, x=x, w=w, b=b)
    if x.shape[1] != w.shape[0 if weight_layout == "in_out" else 1]:
        layout = "(C_in, C_out, kH, kW)" if weight_layout == "in_out" else "(C_out, C_in, kH, kW)"
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels but w of shape {tuple(w.shape)} "
            f"{layout} expects {w.shape[0 if weight_layout == 'in_out' else 1]}"
        )
    out_channels = w.shape[1 if weight_layout == "in_out" else 0]
    if b is not None:
        check_float_array(b, "b", op, ndim=1)
        if b.shape != (out_channels,):
            raise ValueError(
                f"{op}: b must have shape ({out_channels},) to match w, got {tuple(b.shape)}"
            )
    stride, padding = pair(stride, "stride", op), pair(padding, "padding", op)
    for s in stride:
        check_positive(s, "stride", op)
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding}")
    return stride, padding


def _check_grad_shape(op, dy, expected):
    if tuple(dy.shape) != tuple(expected):
        raise ValueError(f"{op}: dy must have the output's shape {tuple(expected)}, got "
                         f"{tuple(dy.shape)}")


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """y[n, o] = sum_{c,i,j} w[o, c, i, j] x_pad[n, c, s h + i, s w + j] + b[o].

    As a GEMM: Y = W (O, C kH kW) @ im2col(x_pad) (C kH kW, N H' W'). The cache keeps x,
    not the kH*kW times larger columns; the backward rebuilds them.
    """
    op = "conv2d"
    stride, padding = _check_conv(op, x, w, b, stride, padding, "out_in")
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    out_size = ((h + 2 * padding[0] - kh) // stride[0] + 1,
                (wd + 2 * padding[1] - kw) // stride[1] + 1)
    if kh > h + 2 * padding[0] or kw > wd + 2 * padding[1]:
        raise ValueError(
            f"{op}: kernel {kh}x{kw} is larger than the padded input "
            f"{h + 2 * padding[0]}x{wd + 2 * padding[1]}"
        )
    xp = get_array_module(x)
    cols = im2col(x, (kh, kw), stride, padding, out_size,
                  out=_columns(xp, x.shape[1] * kh * kw, n, out_size, x.dtype))
    y = w.reshape(o, -1) @ cols
    if b is not None:
        y += b[:, None]
    cache = (x, w, b is not None, stride, padding, out_size)
    return _from_channel_major(y, n, out_size), cache


def conv2d_backward(dy, cache):
    """dx = col2im(W^T @ dY), dW = dY @ cols^T, db = sum_{n,h,w} dy (dY: (O, N H' W'))."""
    x, w, has_bias, stride, padding, out_size = cache
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    _check_grad_shape("conv2d_backward", dy, (n, o, *out_size))
    xp = get_array_module(dy, x)
    dy_mat = _to_channel_major(dy)
    cols = im2col(x, (kh, kw), stride, padding, out_size,
                  out=_columns(xp, c * kh * kw, n, out_size, x.dtype))
    dw = (dy_mat @ cols.T).reshape(w.shape)
    dcols = xp.matmul(w.reshape(o, -1).T, dy_mat, out=cols)  # the columns are done with
    dx = col2im(dcols, x.shape, (kh, kw), stride, padding, out_size)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


def conv_transpose2d_forward(x, w, b=None, stride=2, padding=0):
    """The adjoint of conv2d in its input: y = col2im(W^T @ x) cropped by p, + b.

    y_full[n, o, s h + i, s w + j] += sum_c x[n, c, h, w] w[c, o, i, j];
    H' = (H - 1) s - 2p + kH.
    """
    op = "conv_transpose2d"
    stride, padding = _check_conv(op, x, w, b, stride, padding, "in_out")
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    full = ((h - 1) * stride[0] + kh, (wd - 1) * stride[1] + kw)
    out_size = (full[0] - 2 * padding[0], full[1] - 2 * padding[1])
    if min(out_size) < 1:
        raise ValueError(
            f"{op}: padding {padding} leaves no output for input {h}x{wd}, "
            f"kernel {kh}x{kw}, stride {stride}"
        )
    xp = get_array_module(x)
    cols = xp.matmul(w.reshape(c, -1).T, _to_channel_major(x),
                     out=_columns(xp, o * kh * kw, n, (h, wd), x.dtype))
    y = col2im(cols, (n, o, *out_size), (kh, kw), stride, padding, (h, wd))
    if b is not None:
        y += b[:, None, None]
    return y, (x, w, b is not None, stride, padding, out_size)


def conv_transpose2d_backward(dy, cache):
    """dx = W (C, O kH kW) @ im2col(dy_pad), dW = X @ im2col(dy_pad)^T (X: (C, N H W))."""
    x, w, has_bias, stride, padding, out_size = cache
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    _check_grad_shape("conv_transpose2d_backward", dy, (n, o, *out_size))
    xp = get_array_module(dy, x)
    cols = im2col(dy, (kh, kw), stride, padding, (h, wd),
                  out=_columns(xp, o * kh * kw, n, (h, wd), dy.dtype))
    dw = (_to_channel_major(x) @ cols.T).reshape(w.shape)
    dx = _from_channel_major(w.reshape(c, -1) @ cols, n, (h, wd))
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db
