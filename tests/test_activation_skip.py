"""relu, center_crop and the crop-and-copy concat."""

import re

import numpy as np
import pytest
import torch
from conftest import assert_close, check_one_gradient, distinct_values, to_torch
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.gradcheck import check_gradients
from scratchseg.ops import (
    center_crop,
    concat_backward,
    concat_forward,
    relu_backward,
    relu_forward,
)

pytestmark = pytest.mark.usefixtures("each_engine")

shapes_4d = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5))
any_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)

# ---------------------------------------------------------------- relu


@given(shape=any_shapes, seed=st.integers(0, 2**31))
def test_relu_gradient_matches_finite_differences(shape, seed):
    x = distinct_values(np.random.default_rng(seed), shape)  # |x| >= 0.05: away from the kink
    check_gradients(relu_forward, relu_backward, [x])


@given(shape=shapes_4d, seed=st.integers(0, 2**31))
def test_relu_matches_torch(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x[rng.random(shape) < 0.2] = 0.0  # exact zeros: both give gradient 0 there
    xt = to_torch(x, requires_grad=True)
    yt = torch.relu(xt)
    dy = rng.standard_normal(shape)
    yt.backward(to_torch(dy))
    y, cache = relu_forward(x)
    assert_close(y, yt.detach().numpy())
    assert_close(relu_backward(dy, cache), xt.grad.numpy())


def test_relu_gradient_is_zero_at_zero():
    x = np.array([-1.0, 0.0, 2.0])
    _, cache = relu_forward(x)
    assert np.array_equal(relu_backward(np.ones(3), cache), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_dtype(dtype, rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    y, cache = relu_forward(x)
    assert y.dtype == dtype
    assert relu_backward(np.ones_like(y), cache).dtype == dtype


# ---------------------------------------------------------------- center_crop


@pytest.mark.parametrize("size,crop,offset", [((8, 8), (4, 4), (2, 2)), ((9, 8), (4, 5), (2, 1)),
                                              ((5, 5), (5, 5), (0, 0)), ((7, 6), (1, 1), (3, 2))])
def test_center_crop_offset_is_floor_half_the_margin(size, crop, offset, rng):
    x = rng.standard_normal((1, 2, *size))
    y = center_crop(x, *crop)
    top, left = offset
    assert np.array_equal(y, x[:, :, top : top + crop[0], left : left + crop[1]])


# ---------------------------------------------------------------- concat


@st.composite
def concat_cases(draw):
    """skip larger than x by margins 0-3 (even and odd) in height and width."""
    n = draw(st.integers(1, 2))
    c_skip, c_x = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    mh, mw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    return rng.standard_normal((n, c_skip, h + mh, w + mw)), rng.standard_normal((n, c_x, h, w))


@pytest.mark.parametrize("gradient", ["dskip", "dx"])
@given(case=concat_cases())
def test_concat_gradients_match_finite_differences(case, gradient):
    check_one_gradient(concat_forward, concat_backward, list(case), ["dskip", "dx"].index(gradient))


@given(case=concat_cases())
def test_concat_matches_torch_cat_of_the_cropped_skip(case):
    skip, x = case
    h, w = x.shape[2:]
    top, left = (skip.shape[2] - h) // 2, (skip.shape[3] - w) // 2
    skip_t, x_t = to_torch(skip, requires_grad=True), to_torch(x, requires_grad=True)
    y_t = torch.cat([skip_t[:, :, top : top + h, left : left + w], x_t], dim=1)
    dy = np.random.default_rng(0).standard_normal(tuple(y_t.shape))
    y_t.backward(to_torch(dy))
    y, cache = concat_forward(skip, x)
    assert_close(y, y_t.detach().numpy())
    dskip, dx = concat_backward(dy, cache)
    assert dskip.shape == skip.shape and dx.shape == x.shape
    assert_close(dskip, skip_t.grad.numpy())
    assert_close(dx, x_t.grad.numpy())


def test_concat_gradient_is_zero_outside_the_crop(rng):
    skip, x = rng.standard_normal((1, 2, 7, 6)), rng.standard_normal((1, 1, 4, 4))
    y, cache = concat_forward(skip, x)
    assert y.shape == (1, 3, 4, 4)
    dskip, _ = concat_backward(np.ones_like(y), cache)
    mask = np.zeros(skip.shape, dtype=bool)
    mask[:, :, 1:5, 1:5] = True  # offsets (7-4)//2 = 1 and (6-4)//2 = 1
    assert np.all(dskip[mask] == 1.0) and np.all(dskip[~mask] == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concat_keeps_dtype(dtype, rng):
    skip = rng.standard_normal((2, 2, 7, 7)).astype(dtype)
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    y, cache = concat_forward(skip, x)
    assert y.dtype == dtype and center_crop(skip, 4, 4).dtype == dtype
    dskip, dx = concat_backward(np.ones_like(y), cache)
    assert dskip.dtype == dtype and dx.dtype == dtype


@pytest.mark.parametrize("shape", [(6, 7), (2, 6, 7), (1, 2, 3, 6, 7)])
def test_center_crop_crops_the_last_two_axes_of_any_rank_from_2(shape, rng):
    x = rng.standard_normal(shape)
    assert np.array_equal(center_crop(x, 2, 3), x[..., 2:4, 2:5])


@pytest.mark.parametrize("shape", [(), (7,)])
def test_center_crop_refuses_a_rank_below_2(shape):
    with pytest.raises(ValueError, match=rf"^center_crop: x must have rank 2 or more "
                                         rf"\(\.\.\., H, W\), got shape {re.escape(str(shape))}"):
        center_crop(np.zeros(shape), 1, 1)
