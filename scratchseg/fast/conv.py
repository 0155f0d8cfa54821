"""The CPU engine's convolutions: conv2d and conv_transpose2d, tuned for NumPy on multi-core CPUs.

The same results as scratchseg/functional/conv.py (read that first: im2col, one
GEMM, col2im), computed so that memory traffic, not arithmetic, stops costing:

- bands: im2col builds the columns of a band of output rows at a time, in a
  reused scratch buffer, and the GEMM reads them back while they are in cache;
  each core takes a slice of the rows and runs its bands' GEMMs itself;
- row shifts: on large stride-1 maps the columns are built for a 1 x kW kernel
  only, and the kH kernel rows are summed by adding the GEMM's output to itself
  shifted by rows (``_conv_by_row_shifts``);
- a stride-1 backward computes dx as a convolution of dy with the flipped
  kernel (no col2im read-modify-write passes), and its columns also give dW;
- the bias is added while a band is in cache, and col2im of a tiling kernel
  (the 2x2 stride-2 up-convolution) assigns instead of adding.

Every size and threshold is in scratchseg/fast/tuning.py; the measurements
behind them are in docs/performance.md.
"""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.fast.threads import even_slices, in_parts
from scratchseg.fast.tuning import TUNING
from scratchseg.fast.workspace import scratch
from scratchseg.functional._checks import (
    check_cache,
    check_conv,
    check_upstream,
    conv2d_output_size,
    conv_transpose2d_output_size,
)
from scratchseg.grad_mode import saved_for_backward


def _window(start, stride, count):
    """The slice picking ``count`` positions ``start, start + stride, ...``."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _tap(offset, stride, pad, size_in, start, stop):
    """Kernel offset ``offset`` along one axis, output positions [start, stop): the
    (output range relative to start, input slice) of the taps that land inside the
    unpadded input, input row s*h + offset - pad in [0, size_in)."""
    first = max(start, -(-(pad - offset) // stride))
    last = min(stop, (size_in - 1 + pad - offset) // stride + 1)
    if last <= first:
        return slice(0, 0), slice(0, 0)
    return (slice(first - start, last - start),
            _window(stride * first + offset - pad, stride, last - first))


def im2col(x, kernel, stride, padding, out_size, out=None, rows=None):
    """(N, C, H, W) -> columns (C*kH*kW, N*H'*W'), zero padding built in.

    cols[(c, i, j), (n, h, w)] = x[n, c, s h + i - p, s w + j - p], 0 outside x:
    one strided slice copy per kernel offset (i, j), never a loop over pixels,
    and no padded copy of x. With the batch inside the column index every
    convolution is one 2-D GEMM. ``rows=(r0, r1)`` builds the columns of output
    rows r0..r1-1 only; ``out`` is a buffer of the columns' shape.
    """
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_size
    r0, r1 = rows or (0, oh)
    n, c, h, w = x.shape
    shape = (c * kh * kw, n * (r1 - r0) * ow)
    cols = (xp.empty(shape, dtype=x.dtype) if out is None else out)
    cols = cols.reshape(c, kh, kw, n, r1 - r0, ow)
    x_cn = x.transpose(1, 0, 2, 3)
    column_taps = [_tap(j, sw, pw, w, 0, ow) for j in range(kw)]
    row_taps = [_tap(i, sh, ph, h, r0, r1) for i in range(kh)]

    def copy_channels(part):
        for i, (dst_rows, src_rows) in enumerate(row_taps):
            for j, (dst_columns, src_columns) in enumerate(column_taps):
                tap = cols[part, i, j]
                # zero the strips of taps that fall on the padding (checked first: these
                # small assignments add up over thousands of calls per training step)
                if dst_rows.start > 0:
                    tap[:, :, :dst_rows.start] = 0
                if dst_rows.stop < r1 - r0:
                    tap[:, :, dst_rows.stop:] = 0
                if dst_columns.start > 0:
                    tap[:, :, :, :dst_columns.start] = 0
                if dst_columns.stop < ow:
                    tap[:, :, :, dst_columns.stop:] = 0
                tap[:, :, dst_rows, dst_columns] = x_cn[part, :, src_rows, src_columns]

    in_parts(xp, c, copy_channels, shape[0] * shape[1])
    return cols.reshape(shape)


def col2im(cols, shape, kernel, stride, padding, out_size, bias=None):
    """The adjoint of im2col: sum columns (C*kH*kW, N*H'*W') back onto an (N, C, H, W) array.

    x[n, c, s h + i - p, s w + j - p] += cols[(c, i, j), (n, h, w)] where that
    lands inside x: kH*kW strided slice additions (overlapping windows add up).
    When the stride equals the kernel (a 2x2 stride-2 up-convolution) the windows
    tile x and every element gets exactly one tap: plain assignments, no zeroing.
    ``bias`` (C,) is added to every element of channel c, within those same passes
    (the sum starts from it, or each tile's assignment adds it).
    """
    xp = get_array_module(cols)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_size
    n, c, h, w = shape
    cols = cols.reshape(c, kh, kw, n, oh, ow)
    tiled = (sh, sw) == (kh, kw) and (h, w) == (oh * sh - 2 * ph, ow * sw - 2 * pw)
    start_empty = tiled or bias is not None  # every element is written before it is added to
    x = (xp.empty if start_empty else xp.zeros)(shape, dtype=cols.dtype)
    x_cn = x.transpose(1, 0, 2, 3)
    taps = [(i, j, *_tap(i, sh, ph, h, 0, oh), *_tap(j, sw, pw, w, 0, ow))
            for i in range(kh) for j in range(kw)]

    def add_channels(part):
        if bias is not None and not tiled:
            x_cn[part] = bias[part, None, None, None]
        for i, j, rows, src_rows, columns, src_columns in taps:
            tap, target = cols[part, i, j, :, rows, columns], x_cn[part, :, src_rows, src_columns]
            if tiled and bias is not None:
                xp.add(tap, bias[part, None, None, None], out=target)
            elif tiled:
                target[...] = tap
            else:
                target += tap

    in_parts(xp, c, add_channels, cols.size)
    return x


def _to_channel_major(a):
    """(N, C, H, W) -> (C, N*H*W): the GEMM operand layout of im2col's columns."""
    return a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)


def _band_rows(out_rows, bytes_per_row):
    """Output rows per band, for bands whose columns take about TUNING.band_bytes.

    im2col writes one band and the GEMM reads it back while it is still in
    cache, instead of streaming a kH*kW times larger matrix through memory
    twice. Columns of up to TUNING.single_band_bytes (the deep, small layers,
    where the GEMM's arithmetic dominates) stay in one band.
    """
    if out_rows * bytes_per_row <= TUNING.single_band_bytes:
        return out_rows
    return max(1, TUNING.band_bytes // max(bytes_per_row, 1))


def _bands(start, stop, step):
    """Rows start..stop-1 as (r0, r1) bands of at most ``step`` rows, of even sizes."""
    return [(rows.start, rows.stop)
            for rows in even_slices(start, stop, -(-(stop - start) // step))]


def _bands_per_core(xp, out_rows, step, band_work, size, overhang=0):
    """Run ``band_work(rows, r0, r1)`` over bands of ``step`` rows and return the results.

    With more than one band, each core takes a slice ``rows`` of the output rows and
    builds, multiplies and sums the bands of its slice (``in_parts(..., blas=True)``):
    a band's columns and products stay in the cache of the core that made them, and
    no core waits on another between a band's copies and its GEMM. A layer whose
    output rows fit in one band (the deep layers, whose GEMMs are large enough for
    BLAS's own threads) is one band, overhang included. A core's bands cover
    rows.start .. rows.stop + overhang (the row shifts' extra input rows). ``size`` is
    the output's element count, the work ``in_parts`` weighs.
    """
    split = step < out_rows

    def rows_part(rows):
        stop = rows.stop + overhang
        bands = _bands(rows.start, stop, step) if split else [(rows.start, stop)]
        return [band_work(rows, r0, r1) for r0, r1 in bands]

    results = in_parts(xp, out_rows, rows_part, size if split else 0, blas=True)
    return [result for part in results for result in part]


def _conv_gemm(x, w_mat, kernel, stride, padding, out_size, bias=None, weight_grad_of=None):
    """(N, O, H', W') = W (O, C kH kW) @ im2col(x) (+ bias[o]), one band of output rows at
    a time, the bias added while the band is in cache.

    With ``weight_grad_of`` (an array g of shape (N, G, H', W')) the same columns
    also give G_mat @ im2col(x)^T, (G, C kH kW), returned beside the output: one
    im2col serves both GEMMs of a backward pass.
    """
    xp = get_array_module(x)
    n, (oh, ow), rows_k = x.shape[0], out_size, w_mat.shape[1]
    y = xp.empty((n, w_mat.shape[0], oh, ow), dtype=x.dtype)
    y_by_channel = y.transpose(1, 0, 2, 3)

    def band_work(_, r0, r1):
        cols = im2col(x, kernel, stride, padding, out_size, rows=(r0, r1),
                      out=scratch(xp, (rows_k, n * (r1 - r0) * ow), x.dtype))
        band = y_by_channel[:, :, r0:r1]
        if n == 1:  # one image: the band's rows of y are a matrix the GEMM writes directly
            xp.matmul(w_mat, cols, out=band.reshape(band.shape[0], -1))
        else:
            band[...] = (w_mat @ cols).reshape(band.shape)
        if bias is not None:
            band += bias[:, None, None, None]
        if weight_grad_of is not None:
            # accumulated transposed, cols @ G^T: OpenBLAS runs this shape (many rows, few
            # columns) faster than G @ cols^T when G has few channels
            return cols @ _to_channel_major(weight_grad_of[:, :, r0:r1]).T
        return None

    step = _band_rows(oh, rows_k * n * ow * x.dtype.itemsize)
    grads_t = _bands_per_core(xp, oh, step, band_work, y.size)
    if weight_grad_of is None:
        return y
    return y, _sum(grads_t).T


def _sum(arrays):
    """arrays[0] + arrays[1] + ..., added into the first."""
    total = arrays[0]
    for array in arrays[1:]:
        total += array
    return total


def _conv_weight_grad(x, dy, kernel, stride, padding):
    """dW (O, C kH kW) = dY (O, N H' W') @ im2col(x)^T, summed over bands of output rows."""
    xp = get_array_module(x, dy)
    n, o, oh, ow = dy.shape
    rows_k = x.shape[1] * kernel[0] * kernel[1]
    dw = xp.zeros((o, rows_k), dtype=x.dtype)
    for r0, r1 in _bands(0, oh, _band_rows(oh, rows_k * n * ow * x.dtype.itemsize)):
        cols = im2col(x, kernel, stride, padding, (oh, ow), rows=(r0, r1),
                      out=scratch(xp, (rows_k, n * (r1 - r0) * ow), x.dtype))
        dw += _to_channel_major(dy[:, :, r0:r1]) @ cols.T
    return dw


def _bias_grad(dy):
    """db[o] = sum_{n,h,w} dy[n, o, h, w]: dY (N, O, H W) @ ones(H W), summed over n.

    A matrix-vector product, which BLAS runs at memory speed on every core (NumPy's
    sum over the axes runs on one).
    """
    xp = get_array_module(dy)
    n, o, h, w = dy.shape
    return (dy.reshape(n, o, h * w) @ xp.ones(h * w, dtype=dy.dtype)).sum(axis=0)


def _row_shifts_pay(stride, kernel, rows, in_channels, out_channels):
    """Whether a convolution runs faster by row shifts than by im2col: stride 1, a kernel
    with rows to shift, at least TUNING.row_shift_min_rows output rows, and at least half
    as many input channels as output channels (with few input channels, a 1-channel
    image, im2col's kH*kW copies are cheap, while the kH*O rows of output to add are not)."""
    return (stride == (1, 1) and kernel[0] > 1 and rows >= TUNING.row_shift_min_rows
            and 2 * in_channels >= out_channels)


def _conv_by_row_shifts(x, w_rows, kernel, padding, out_size, bias=None, weight_grad_of=None):
    """Stride-1 convolution, kH >= 2: y[o, h] = sum_i Z[(i, o), h + i] (+ bias[o]) with
    Z = W_rows (kH*O, C*kW) @ X1, W_rows[(i, o), (c, j)] = w[o, c, i, j], and X1 the
    im2col columns of x for a 1 x kW kernel over every padded row.

    im2col copies x kH*kW times and feeds the GEMM a matrix with only O rows, a shape
    OpenBLAS runs at half its square rate when O is 32 or 64. Here the columns copy x
    kW times, the GEMM has kH*O rows, and the kernel rows are summed by adding the
    GEMM's output to itself shifted by i rows (kH - 1 adds of y's size).

    Z is computed in bands of padded rows that do not overlap: a band's Z row p
    assigns y's row p (i = 0) and adds to rows p - i, which an earlier band of the
    same core assigned where they precede it. Each core computes kH - 1 padded rows
    beyond its own output rows, so Z has kH - 1 extra rows per core, not per band,
    and the bands can be small enough for the columns and Z to stay in the core's
    cache: TUNING.row_shift_band_columns GEMM columns.

    With ``weight_grad_of`` (g, shape (N, G, H', W')) the same columns also give
    G_rows (G*kH, C*kW) = G1 @ X1^T, G1 the im2col columns of the core's rows of g for
    a kH x 1 kernel padded by kH - 1 rows, taken at the band's padded rows:
    G_rows[(g, i), (c, j)] = sum g[n, g, h, w] x_pad[n, c, h + kH - 1 - i, w + j],
    returned beside y.
    """
    xp = get_array_module(x)
    n, c, h, _ = x.shape
    kh, kw = kernel
    o = w_rows.shape[0] // kh
    oh, ow = out_size
    padded_size = (h + 2 * padding[0], ow)
    y = xp.empty((n, o, oh, ow), dtype=x.dtype)
    y_by_channel = y.transpose(1, 0, 2, 3)

    def band_work(rows, p0, p1):
        cols = im2col(x, (1, kw), (1, 1), padding, padded_size, rows=(p0, p1),
                      out=scratch(xp, (c * kw, n * (p1 - p0) * ow), x.dtype))
        z = xp.matmul(w_rows, cols,
                      out=scratch(xp, (kh * o, n * (p1 - p0) * ow), x.dtype, "product"))
        z = z.reshape(kh, o, n, p1 - p0, ow)

        def add_shifted_rows(part):  # y[h] gets Z_i[h + i] for the core's rows h with h + i here
            for i in range(kh):
                first, last = max(p0 - i, rows.start), min(p1 - i, rows.stop)
                if last <= first:
                    continue
                target = y_by_channel[part, :, first:last]
                term = z[i, part, :, first + i - p0:last + i - p0]
                if i > 0:
                    target += term
                elif bias is not None:  # added while the band is in cache, not in a pass over y
                    xp.add(term, bias[part, None, None, None], out=target)
                else:
                    target[...] = term

        # a layer of one band adds a part of the channels per core; inside a core's slice
        # of a split layer this runs whole
        in_parts(xp, o, add_shifted_rows, o * n * (p1 - p0) * ow)
        if weight_grad_of is None:
            return None
        g_cols = im2col(weight_grad_of[:, :, rows], (kh, 1), (1, 1), (kh - 1, 0),
                        (rows.stop - rows.start + kh - 1, ow),
                        rows=(p0 - rows.start, p1 - rows.start), out=scratch(
                            xp, (weight_grad_of.shape[1] * kh, n * (p1 - p0) * ow),
                            x.dtype, "product"))
        return g_cols @ cols.T

    step = max(1, TUNING.row_shift_band_columns // (n * ow))
    grads = _bands_per_core(xp, oh, step, band_work, y.size, overhang=kh - 1)
    return y if weight_grad_of is None else (y, _sum(grads))


def conv2d_paths(x_shape, w_shape, stride, padding):
    """The paths conv2d takes for these shapes (stride and padding as pairs):
    (forward, backward), the forward "row shifts" or "im2col", the backward
    "row shifts", "flipped kernel" (dx as a convolution of dy, C > O) or "col2im"."""
    (_, c, h, _), (o, _, kh, kw) = x_shape, w_shape
    out_rows = (h + 2 * padding[0] - kh) // stride[0] + 1
    forward = "row shifts" if _row_shifts_pay(stride, (kh, kw), out_rows, c, o) else "im2col"
    stride_one = stride == (1, 1) and padding[0] <= kh - 1 and padding[1] <= kw - 1
    if stride_one and c <= o and _row_shifts_pay(stride, (kh, kw), h, c, o):
        return forward, "row shifts"
    return forward, "flipped kernel" if stride_one and c > o else "col2im"


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """y[n, o] = sum_{c,i,j} w[o, c, i, j] x_pad[n, c, s h + i, s w + j] + b[o].

    As a GEMM: Y = W (O, C kH kW) @ im2col(x) (C kH kW, N H' W'), one cache-sized band of
    output rows at a time. The cache keeps x, not the kH*kW times larger columns; the
    backward rebuilds them.
    """
    stride, padding = check_conv("conv2d", x, w, b, stride, padding, "out_in")
    out_size = conv2d_output_size("conv2d", x, w, stride, padding)
    o, _, kh, kw = w.shape
    xp = get_array_module(x)
    if conv2d_paths(x.shape, w.shape, stride, padding)[0] == "row shifts":
        w_rows = xp.ascontiguousarray(w.transpose(2, 0, 1, 3)).reshape(kh * o, -1)
        y = _conv_by_row_shifts(x, w_rows, (kh, kw), padding, out_size, bias=b)
    else:
        y = _conv_gemm(x, w.reshape(o, -1), (kh, kw), stride, padding, out_size, bias=b)
    return y, saved_for_backward(x, w, b is not None, stride, padding, out_size)


def conv2d_backward(dy, cache, input_grad=True):
    """dW = dY @ im2col(x)^T, db = sum_{n,h,w} dy, dx = col2im(W^T @ dY) (dY: (O, N H' W')).

    With stride 1 (p <= k - 1) dx is the same sum computed as a convolution of dy with
    the kernel flipped in space and transposed in channels, padded by k - 1 - p: no
    col2im read-modify-write passes over dx, and the columns of dy that it builds also
    give dW. Where row shifts pay for the layer and C <= O it runs by row shifts
    (``_conv_by_row_shifts``; dW then needs x shifted by rows, kH*C rows of copies);
    with C > O (the decoder's convolutions, C = 2 O, and the final 1x1) it is one GEMM
    over im2col columns of dy. Elsewhere (the encoder's small maps, a 1-channel input,
    strides) col2im: its k*k passes are over small arrays, and no weight gets flipped.

    ``input_grad=False`` returns dx = None and skips its GEMM, as PyTorch skips
    an input that does not require grad (a network's first layer in training).
    """
    x, w, has_bias, stride, padding, out_size = check_cache("conv2d_backward", cache)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    check_upstream("conv2d_backward", dy, (n, o, *out_size), x.dtype, backend_name(x))
    xp = get_array_module(x)
    db = _bias_grad(dy) if has_bias else None
    if not input_grad:  # dW alone: the columns of x, C kH kW rows, not those of dy
        return None, _conv_weight_grad(x, dy, (kh, kw), stride, padding).reshape(w.shape), db
    flipped_padding = (kh - 1 - padding[0], kw - 1 - padding[1])
    path = conv2d_paths(x.shape, w.shape, stride, padding)[1]
    if path == "row shifts":
        # flipped rows: w_rows[(i, c), (o, j)] = w[o, c, kh-1-i, kw-1-j]; the weight
        # gradient comes back as g[(c, i), (o, j)] = dW[o, c, i, kw-1-j]
        w_rows = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 1, 0, 3))
        dx, g = _conv_by_row_shifts(dy, w_rows.reshape(kh * c, -1), (kh, kw),
                                    flipped_padding, (h, wd), weight_grad_of=x)
        dw = xp.ascontiguousarray(g.reshape(c, kh, o, kw)[:, :, :, ::-1].transpose(2, 0, 1, 3))
        return dx, dw, db
    if path == "flipped kernel":
        flipped = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        dx, dw_flipped = _conv_gemm(dy, flipped.reshape(c, -1), (kh, kw), (1, 1),
                                    flipped_padding, (h, wd), weight_grad_of=x)
        # X @ im2col(dy)^T is dW with its kernel flipped and its channels swapped
        dw = xp.ascontiguousarray(
            dw_flipped.reshape(c, o, kh, kw)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        return dx, dw, db
    dw = _conv_weight_grad(x, dy, (kh, kw), stride, padding).reshape(w.shape)
    dcols = xp.matmul(w.reshape(o, -1).T, _to_channel_major(dy),
                      out=scratch(xp, (c * kh * kw, n * out_size[0] * out_size[1]), dy.dtype))
    return col2im(dcols, x.shape, (kh, kw), stride, padding, out_size), dw, db


def conv_transpose2d_forward(x, w, b=None, stride=2, padding=0):
    """The adjoint of conv2d in its input: y = col2im(W^T @ x) cropped by p, + b.

    y_full[n, o, s h + i, s w + j] += sum_c x[n, c, h, w] w[c, o, i, j];
    H' = (H - 1) s - 2p + kH.
    """
    stride, padding = check_conv("conv_transpose2d", x, w, b, stride, padding, "in_out")
    out_size = conv_transpose2d_output_size("conv_transpose2d", x, w, stride, padding)
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    xp = get_array_module(x)
    cols = xp.matmul(w.reshape(c, -1).T, _to_channel_major(x),
                     out=scratch(xp, (o * kh * kw, n * h * wd), x.dtype))
    y = col2im(cols, (n, o, *out_size), (kh, kw), stride, padding, (h, wd), bias=b)
    return y, saved_for_backward(x, w, b is not None, stride, padding, out_size)


def conv_transpose2d_backward(dy, cache):
    """dx = W (C, O kH kW) @ im2col(dy), dW = X @ im2col(dy)^T (X: (C, N H W)): conv2d's
    forward and weight gradient with the roles of x and dy swapped."""
    x, w, has_bias, stride, padding, out_size = check_cache("conv_transpose2d_backward", cache)
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    check_upstream("conv_transpose2d_backward", dy, (n, o, *out_size), x.dtype,
                   backend_name(x))
    dx, dw = _conv_gemm(dy, w.reshape(c, -1), (kh, kw), stride, padding, (h, wd),
                        weight_grad_of=x)
    dw = dw.reshape(w.shape)
    db = _bias_grad(dy) if has_bias else None
    return dx, dw, db
