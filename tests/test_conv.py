"""conv2d and conv_transpose2d: finite differences, PyTorch, dtypes, im2col/col2im.

Every test runs on both engines (through scratchseg.ops); the CPU engine's own
paths (bands of rows, row shifts) are forced with scratchseg.fast.tuning.tuned.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, check_one_gradient, to_torch
from hypothesis import given
from hypothesis import strategies as st

import scratchseg
from scratchseg.fast.conv import conv2d_paths
from scratchseg.fast.tuning import tuned
from scratchseg.functional import col2im, im2col
from scratchseg.ops import (
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
)

pytestmark = pytest.mark.usefixtures("each_engine")

GRADIENTS = {"dx": 0, "dw": 1, "db": 2}


def _pair_or_int(draw, a, b):
    """Pass (a, b) as an int when they agree (half the time), else as a tuple."""
    if a == b and draw(st.booleans()):
        return a
    return (a, b)


@st.composite
def conv2d_cases(draw):
    """Small conv2d problems: kernel 1-4, stride 1-3, padding 0-2, non-square pairs."""
    n, c_in, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h_min, w_min = max(1, kh - 2 * ph), max(1, kw - 2 * pw)
    h, w = draw(st.integers(h_min, h_min + 4)), draw(st.integers(w_min, w_min + 4))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.standard_normal((n, c_in, h, w)),
        w=rng.standard_normal((c_out, c_in, kh, kw)),
        b=rng.standard_normal(c_out),
        stride=_pair_or_int(draw, sh, sw),
        padding=_pair_or_int(draw, ph, pw),
    )


@st.composite
def conv_transpose2d_cases(draw):
    """Small transposed convolutions: kernel 1-4, stride 1-3, padding leaving an output >= 1."""
    n, c_in, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    # (H - 1) s - 2p + k >= 1  <=>  H >= 1 + ceil((2p + 1 - k) / s)
    h_min = max(1, 1 - (-(2 * ph + 1 - kh) // sh))
    w_min = max(1, 1 - (-(2 * pw + 1 - kw) // sw))
    h, w = draw(st.integers(h_min, h_min + 3)), draw(st.integers(w_min, w_min + 3))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.standard_normal((n, c_in, h, w)),
        w=rng.standard_normal((c_in, c_out, kh, kw)),
        b=rng.standard_normal(c_out),
        stride=_pair_or_int(draw, sh, sw),
        padding=_pair_or_int(draw, ph, pw),
    )


def _ops(transposed):
    if transposed:
        return conv_transpose2d_forward, conv_transpose2d_backward, TF.conv_transpose2d
    return conv2d_forward, conv2d_backward, TF.conv2d


def _forward(case, transposed, bias=True):
    forward, _, _ = _ops(transposed)

    def fn(x, w, b=None):
        return forward(x, w, b, stride=case["stride"], padding=case["padding"])

    return fn


def _gradcheck(case, transposed, gradient, bias=True):
    _, backward, _ = _ops(transposed)
    inputs = [case["x"], case["w"]] + ([case["b"]] if bias else [])
    check_one_gradient(_forward(case, transposed), backward, inputs, GRADIENTS[gradient])


# ---------------------------------------------------------------- finite differences

@pytest.mark.parametrize("gradient", ["dx", "dw", "db"])
@given(case=conv2d_cases())
def test_conv2d_gradients_match_finite_differences(case, gradient):
    _gradcheck(case, transposed=False, gradient=gradient)


@pytest.mark.parametrize("gradient", ["dx", "dw"])
@given(case=conv2d_cases())
def test_conv2d_without_bias_gradients_match_finite_differences(case, gradient):
    _gradcheck(case, transposed=False, gradient=gradient, bias=False)


@pytest.mark.parametrize("gradient", ["dx", "dw", "db"])
@given(case=conv_transpose2d_cases())
def test_conv_transpose2d_gradients_match_finite_differences(case, gradient):
    _gradcheck(case, transposed=True, gradient=gradient)


@pytest.mark.parametrize("gradient", ["dx", "dw"])
@given(case=conv_transpose2d_cases())
def test_conv_transpose2d_without_bias_gradients_match_finite_differences(case, gradient):
    _gradcheck(case, transposed=True, gradient=gradient, bias=False)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_bias_free_path_returns_db_none(transposed, rng):
    forward, backward, _ = _ops(transposed)
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3) if transposed else (2, 3, 3, 3))
    y, cache = forward(x, w, None, stride=1, padding=1)
    dx, dw, db = backward(np.ones_like(y), cache)
    assert db is None
    assert dx.shape == x.shape and dw.shape == w.shape


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@given(case=conv2d_cases())
def test_conv2d_without_input_grad_gives_the_same_dw_and_db(case, bias):
    """input_grad=False (a network's input) skips dx; dW and db are the full backward's."""
    b = case["b"] if bias else None
    y, cache = conv2d_forward(case["x"], case["w"], b, case["stride"], case["padding"])
    dy = np.random.default_rng(3).standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache, input_grad=False)
    _, dw_full, db_full = conv2d_backward(dy, cache)
    assert dx is None
    np.testing.assert_allclose(dw, dw_full, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(db, db_full, rtol=1e-12, atol=1e-12)
    else:
        assert db is None


# ---------------------------------------------------------------- against PyTorch

def _torch_reference(case, transposed, bias):
    _, _, torch_op = _ops(transposed)
    x = to_torch(case["x"], requires_grad=True)
    w = to_torch(case["w"], requires_grad=True)
    b = to_torch(case["b"], requires_grad=True) if bias else None
    y = torch_op(x, w, b, stride=case["stride"], padding=case["padding"])
    dy = np.random.default_rng(7).standard_normal(tuple(y.shape))
    y.backward(to_torch(dy))
    grads = (x.grad.numpy(), w.grad.numpy(), b.grad.numpy() if bias else None)
    return y.detach().numpy(), dy, grads


def _compare_with_torch(case, transposed, bias):
    forward, backward, _ = _ops(transposed)
    y_ref, dy, grads_ref = _torch_reference(case, transposed, bias)
    y, cache = forward(case["x"], case["w"], case["b"] if bias else None,
                       stride=case["stride"], padding=case["padding"])
    assert_close(y, y_ref, err_msg="forward")
    grads = backward(dy, cache)
    for name, grad, ref in zip(("dx", "dw", "db"), grads, grads_ref):
        if ref is None:
            assert grad is None
        else:
            assert_close(grad, ref, err_msg=name)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@given(case=conv2d_cases())
def test_conv2d_matches_torch(case, bias):
    _compare_with_torch(case, transposed=False, bias=bias)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@given(case=conv_transpose2d_cases())
def test_conv_transpose2d_matches_torch(case, bias):
    _compare_with_torch(case, transposed=True, bias=bias)


def _with_one_row_bands(case, transposed):
    """The CPU engine in bands of one output row each must match PyTorch exactly like one
    big GEMM."""
    with scratchseg.engine("fast"), tuned(band_bytes=1, single_band_bytes=0):
        _compare_with_torch(case, transposed=transposed, bias=True)


@given(case=conv2d_cases())
def test_conv2d_in_row_bands_matches_torch(case):
    _with_one_row_bands(case, transposed=False)


@given(case=conv_transpose2d_cases())
def test_conv_transpose2d_in_row_bands_matches_torch(case):
    _with_one_row_bands(case, transposed=True)


@st.composite
def stride_one_conv2d_cases(draw):
    """Stride-1 conv2d problems on maps of up to 20 rows (several bands of one row each)."""
    case = draw(conv2d_cases())
    kh = case["w"].shape[2]
    ph = case["padding"][0] if isinstance(case["padding"], tuple) else case["padding"]
    h = draw(st.integers(max(1, kh - 2 * ph), 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    n, c, _, w = case["x"].shape
    return dict(case, x=rng.standard_normal((n, c, h, w)), stride=1)


def _with_row_shifts(check):
    """Run ``check`` on the CPU engine with every stride-1 convolution of at least half as
    many input as output channels on the large-map paths whatever its size: row shifts in
    bands of one padded row (each adding to the rows that earlier bands assigned) forward,
    and backward where C <= O (where C > O the backward takes the flipped kernel)."""
    with scratchseg.engine("fast"), tuned(row_shift_min_rows=1, row_shift_band_columns=1):
        check()


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@given(case=stride_one_conv2d_cases())
def test_conv2d_by_row_shifts_matches_torch(case, bias):
    _with_row_shifts(lambda: _compare_with_torch(case, transposed=False, bias=bias))


@pytest.mark.parametrize("gradient", ["dx", "dw", "db"])
@given(case=stride_one_conv2d_cases())
def test_conv2d_by_row_shifts_gradients_match_finite_differences(case, gradient):
    _with_row_shifts(lambda: _gradcheck(case, transposed=False, gradient=gradient))


@pytest.mark.parametrize("rows, c_in, paths", [
    (63, 3, ("im2col", "col2im")),  # a small map
    (64, 3, ("row shifts", "row shifts")),  # a U-Net level of 64+ rows
    (64, 1, ("im2col", "col2im")),  # a 1-channel image
    (64, 8, ("row shifts", "flipped kernel")),  # a decoder conv (C > O)
    (64, 2, ("row shifts", "row shifts")),  # C = O / 2, the least that row shifts take
])
def test_each_layer_shape_takes_its_path(rows, c_in, paths, rng):
    """The CPU engine's thresholds route each shape to the path measured fastest for it,
    and every path agrees with PyTorch there."""
    x, w = rng.standard_normal((2, c_in, rows, 20)), rng.standard_normal((4, c_in, 3, 3))
    assert conv2d_paths(x.shape, w.shape, (1, 1), (1, 1)) == paths
    _compare_with_torch(dict(x=x, w=w, b=rng.standard_normal(4), stride=1, padding=1),
                        transposed=False, bias=True)


def test_row_shifts_keep_float32(rng):
    """A 64-row float32 layer (row shifts forward and backward, several bands) returns float32
    arrays equal to the float64 computation, rounded."""
    x = rng.standard_normal((1, 32, 64, 400))  # 400 columns per row: 10-row bands
    w = rng.standard_normal((32, 32, 3, 3)) * 0.1
    b = rng.standard_normal(32)
    dy = rng.standard_normal((1, 32, 64, 400))
    y64, cache64 = conv2d_forward(x, w, b, padding=1)
    grads64 = conv2d_backward(dy, cache64)
    y, cache = conv2d_forward(*(a.astype(np.float32) for a in (x, w, b)), padding=1)
    grads = conv2d_backward(dy.astype(np.float32), cache)
    for name, got, want in zip(("y", "dx", "dw", "db"), (y, *grads), (y64, *grads64)):
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3, err_msg=name)


@pytest.mark.parametrize("padding", [0, 1])
def test_up_convolution_with_stride_equal_to_kernel_matches_torch(padding, rng):
    """2x2 stride-2 windows tile the output: col2im assigns instead of adding."""
    case = dict(x=rng.standard_normal((2, 3, 5, 4)), w=rng.standard_normal((3, 2, 2, 2)),
                b=rng.standard_normal(2), stride=2, padding=padding)
    _compare_with_torch(case, transposed=True, bias=True)


def test_conv2d_output_size_is_pytorchs_floor(rng):
    x = rng.standard_normal((1, 1, 10, 9))
    w = rng.standard_normal((2, 1, 3, 2))
    y, _ = conv2d_forward(x, w, stride=(3, 2), padding=(1, 0))
    assert y.shape == (1, 2, (10 + 2 - 3) // 3 + 1, (9 - 2) // 2 + 1)


def test_conv_transpose2d_output_size(rng):
    x = rng.standard_normal((1, 3, 4, 5))
    w = rng.standard_normal((3, 2, 2, 3))
    y, _ = conv_transpose2d_forward(x, w, stride=2)
    assert y.shape == (1, 2, (4 - 1) * 2 + 2, (5 - 1) * 2 + 3)
    y, _ = conv_transpose2d_forward(x, w, stride=(2, 3), padding=(1, 1))
    assert y.shape == (1, 2, (4 - 1) * 2 - 2 + 2, (5 - 1) * 3 - 2 + 3)


def test_weights_load_into_torch_modules_without_transposes(rng):
    """The weight layouts are PyTorch's: a torch module with our arrays gives our output."""
    x = rng.standard_normal((2, 3, 6, 6))
    w, wt, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((3, 4, 2, 2)), np.zeros(4)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    conv.load_state_dict({"weight": to_torch(w), "bias": to_torch(b)})
    up = torch.nn.ConvTranspose2d(3, 4, 2, stride=2).double()
    up.load_state_dict({"weight": to_torch(wt), "bias": to_torch(b)})
    with torch.no_grad():
        assert_close(conv2d_forward(x, w, b, padding=1)[0], conv(to_torch(x)).numpy())
        assert_close(conv_transpose2d_forward(x, wt, b, stride=2)[0], up(to_torch(x)).numpy())


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_dtype_is_kept(dtype, transposed, bias, rng):
    forward, backward, _ = _ops(transposed)
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    w = rng.standard_normal((3, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype) if bias else None
    y, cache = forward(x, w, b, stride=2, padding=1)
    assert y.dtype == dtype
    dx, dw, db = backward(np.ones_like(y), cache)
    assert dx.dtype == dtype and dw.dtype == dtype
    assert db is None if not bias else db.dtype == dtype
    if dtype == np.float32:  # the float32 result is the float64 one, rounded
        y64, cache64 = forward(x.astype(np.float64), w.astype(np.float64),
                               None if b is None else b.astype(np.float64), stride=2, padding=1)
        np.testing.assert_allclose(y, y64, rtol=1e-4, atol=1e-5)
        grads64 = backward(np.ones_like(y64), cache64)
        for grad, grad64 in zip((dx, dw, db), grads64):
            if grad is not None:
                np.testing.assert_allclose(grad, grad64, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- im2col / col2im

@given(case=conv2d_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    """<im2col(x), c> == <x, col2im(c)> for every shape, stride and overlap."""
    x, w = case["x"], case["w"]
    kernel = w.shape[2:]
    stride = case["stride"] if isinstance(case["stride"], tuple) else (case["stride"],) * 2
    pad = case["padding"] if isinstance(case["padding"], tuple) else (case["padding"],) * 2
    out = tuple((x.shape[2 + a] + 2 * pad[a] - kernel[a]) // stride[a] + 1 for a in (0, 1))
    if min(out) < 1:
        return
    cols = im2col(x, kernel, stride, pad, out)
    padded = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    assert np.array_equal(cols, im2col(padded, kernel, stride, (0, 0), out))
    c = np.random.default_rng(3).standard_normal(cols.shape)
    back = col2im(c, x.shape, kernel, stride, pad, out)
    assert back.shape == x.shape
    assert np.isclose((cols * c).sum(), (x * back).sum(), rtol=1e-12, atol=1e-12)

