"""max_pool2d: finite differences, PyTorch, tie routing to the first maximum, dtypes."""

import numpy as np
import pytest
import torch.nn.functional as TF
from conftest import assert_close, distinct_values, to_torch
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.gradcheck import check_gradients
from scratchseg.ops import max_pool2d_backward, max_pool2d_forward

pytestmark = pytest.mark.usefixtures("each_engine")


@st.composite
def pool_cases(draw, max_extra=4):
    """kernel 2-3 (square or not), stride 1-3 (overlapping windows when < kernel), or None."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(2, 3)), draw(st.integers(2, 3))
    kernel = kh if kh == kw and draw(st.booleans()) else (kh, kw)
    stride = draw(st.one_of(st.none(), st.integers(1, 3),
                            st.tuples(st.integers(1, 3), st.integers(1, 3))))
    h, w = draw(st.integers(kh, kh + max_extra)), draw(st.integers(kw, kw + max_extra))
    seed = draw(st.integers(0, 2**31))
    return dict(shape=(n, c, h, w), kernel=kernel, stride=stride, seed=seed)


def _pairs(case):
    k = case["kernel"]
    kh, kw = (k, k) if isinstance(k, int) else k
    s = case["stride"]
    if s is None:
        s = case["kernel"]
    sh, sw = (s, s) if isinstance(s, int) else s
    return (kh, kw), (sh, sw)


def _forward(case):
    return lambda x: max_pool2d_forward(x, case["kernel"], case["stride"])


def _first_max_reference(x, dy, kernel, stride):
    """dx by explicit loops: each window's dy goes to its first maximum in row-major order."""
    (kh, kw), (sh, sw) = kernel, stride
    dx = np.zeros_like(x)
    y = np.empty(dy.shape, dtype=x.dtype)
    for n in range(dy.shape[0]):
        for c in range(dy.shape[1]):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    window = x[n, c, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    a, b = divmod(int(np.argmax(window)), kw)  # argmax: first occurrence
                    y[n, c, i, j] = window[a, b]
                    dx[n, c, i * sh + a, j * sw + b] += dy[n, c, i, j]
    return y, dx


@given(case=pool_cases())
def test_max_pool2d_gradient_matches_finite_differences(case):
    x = distinct_values(np.random.default_rng(case["seed"]), case["shape"])
    check_gradients(_forward(case), max_pool2d_backward, [x])


@given(case=pool_cases())
def test_max_pool2d_matches_torch(case):
    x = distinct_values(np.random.default_rng(case["seed"]), case["shape"])
    (kh, kw), (sh, sw) = _pairs(case)
    xt = to_torch(x, requires_grad=True)
    yt = TF.max_pool2d(xt, (kh, kw), (sh, sw))
    dy = np.random.default_rng(1).standard_normal(tuple(yt.shape))
    yt.backward(to_torch(dy))
    y, cache = max_pool2d_forward(x, case["kernel"], case["stride"])
    assert_close(y, yt.detach().numpy())
    assert_close(max_pool2d_backward(dy, cache), xt.grad.numpy())


def _tied_input(seed, shape):
    """ReLU of small integers: many all-zero windows and many tied positive maxima."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.integers(-3, 3, shape), 0).astype(np.float64)


@given(case=pool_cases())
def test_ties_route_to_the_first_maximum_as_torch_does(case):
    x = _tied_input(case["seed"], case["shape"])
    kernel, stride = _pairs(case)
    xt = to_torch(x, requires_grad=True)
    yt = TF.max_pool2d(xt, kernel, stride)
    dy = np.random.default_rng(2).standard_normal(tuple(yt.shape))
    yt.backward(to_torch(dy))
    y, cache = max_pool2d_forward(x, case["kernel"], case["stride"])
    dx = max_pool2d_backward(dy, cache)
    y_ref, dx_ref = _first_max_reference(x, dy, kernel, stride)
    assert_close(y, y_ref)
    assert_close(dx, dx_ref)
    assert_close(dx, xt.grad.numpy())


@given(case=pool_cases(max_extra=3))
def test_each_window_sends_its_gradient_to_exactly_one_element(case):
    """Upstream gradient 1 at one output: the input gradient is one 1 at the first max."""
    x = _tied_input(case["seed"], case["shape"])
    kernel, stride = _pairs(case)
    y, cache = max_pool2d_forward(x, case["kernel"], case["stride"])
    for index in np.ndindex(*y.shape):
        dy = np.zeros_like(y)
        dy[index] = 1.0
        dx = max_pool2d_backward(dy, cache)
        assert np.count_nonzero(dx) == 1 and dx.sum() == 1.0
        n, c, i, j = index
        window = x[n, c, i * stride[0] : i * stride[0] + kernel[0],
                   j * stride[1] : j * stride[1] + kernel[1]]
        a, b = divmod(int(np.argmax(window)), kernel[1])
        assert dx[n, c, i * stride[0] + a, j * stride[1] + b] == 1.0


def test_all_zero_window_goes_to_its_top_left_element():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 3, 3] = -1.0  # negatives never win over the zeros
    y, cache = max_pool2d_forward(x, 2)
    dx = max_pool2d_backward(np.ones_like(y), cache)
    expected = np.zeros_like(x)
    expected[0, 0, ::2, ::2] = 1.0
    assert np.array_equal(dx, expected)


def test_overlapping_windows_accumulate():
    """Stride 1 < kernel 2: one maximum shared by four windows collects all four gradients."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    y, cache = max_pool2d_forward(x, 2, 1)
    assert np.array_equal(y, np.full((1, 1, 2, 2), 5.0))
    dy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dx = max_pool2d_backward(dy, cache)
    assert dx[0, 0, 1, 1] == 10.0 and np.count_nonzero(dx) == 1


def test_floor_mode_and_default_stride(rng):
    x = rng.standard_normal((1, 2, 7, 5))
    y, _ = max_pool2d_forward(x, 2)
    assert y.shape == (1, 2, 3, 2)
    y, _ = max_pool2d_forward(x, 3, 2)
    assert y.shape == (1, 2, 3, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    y, cache = max_pool2d_forward(x, 3, 2)
    assert y.dtype == dtype
    dx = max_pool2d_backward(np.ones_like(y), cache)
    assert dx.dtype == dtype and dx.shape == x.shape


def test_rows_and_columns_no_window_reaches_get_zero_gradient():
    """Floor mode: the last row and column of a 7x5 input are in no 2x2 window. dx is built
    in uninitialised memory, so poison the allocator's free memory first (NumPy reuses a
    freed buffer of the same size)."""
    x = distinct_values(np.random.default_rng(0), (1, 2, 7, 5))
    y, cache = max_pool2d_forward(x, 2)
    for _ in range(3):
        poison = np.full(x.shape, np.nan)
        del poison
        dx = max_pool2d_backward(np.ones_like(y), cache)
        assert np.isfinite(dx).all()
        assert not dx[:, :, 6:].any() and not dx[:, :, :, 4:].any()
        assert dx.sum() == y.size
