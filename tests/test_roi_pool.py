"""roi_max_pool: finite differences, a PyTorch oracle of torchvision's rules, ties, bad inputs.

torchvision is not a dependency; the oracle below is written here from its CPU
kernel's rules (round half away from zero, roi size max(end - start + 1, 1),
bins [floor(i * bin), ceil((i + 1) * bin)) offset and clipped, empty bins 0) as a
per-roi, per-bin loop over torch slices, so autograd gives its gradient.
"""

import math

import numpy as np
import pytest
import torch
from conftest import assert_close, check_one_gradient, distinct_values, to_torch
from hypothesis import given
from hypothesis import strategies as st

import scratchseg
from scratchseg import fast, functional
from scratchseg.nn import RoIMaxPool
from scratchseg.ops import roi_max_pool_backward, roi_max_pool_forward

pytestmark = pytest.mark.usefixtures("each_engine")


def _cround(v):
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _bins(start, end, bins, limit):
    """[(lo, hi)] per bin along one axis, clipped to [0, limit]."""
    size = (max(end - start + 1, 1)) / bins
    return [(min(max(math.floor(i * size) + start, 0), limit),
             min(max(math.ceil((i + 1) * size) + start, 0), limit)) for i in range(bins)]


def _windows(rois, shape, out, scale):
    """For every roi and bin: (r, batch, i, j, (h0, h1), (w0, w1))."""
    _, _, height, width = shape
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (_cround(v * scale) for v in (x1, y1, x2, y2))
        for i, hs in enumerate(_bins(y1, y2, out[0], height)):
            for j, ws in enumerate(_bins(x1, x2, out[1], width)):
                yield r, int(b), i, j, hs, ws


def torch_roi_pool(xt, rois, out, scale):
    """The oracle: torch.max over each bin's slice; autograd gives the backward.

    An empty bin is 0 * (the image's channel sums): 0, and a zero gradient in the graph."""
    cells = []
    for _, b, _, _, (h0, h1), (w0, w1) in _windows(rois, xt.shape, out, scale):
        if h1 <= h0 or w1 <= w0:
            cells.append(0 * xt[b].sum(dim=(1, 2)))
        else:
            cells.append(xt[b, :, h0:h1, w0:w1].reshape(xt.shape[1], -1).max(dim=1).values)
    if not cells:
        return 0 * xt.sum() + xt.new_zeros((0, xt.shape[1], *out))
    return torch.stack(cells).reshape(len(rois), *out, xt.shape[1]).permute(0, 3, 1, 2)


def numpy_first_max(x, rois, dy, out, scale):
    """Explicit loops: y and dx, each bin's gradient at its first maximum in row-major order."""
    y = np.zeros((len(rois), x.shape[1], *out), dtype=x.dtype)
    dx = np.zeros_like(x)
    for r, b, i, j, (h0, h1), (w0, w1) in _windows(rois, x.shape, out, scale):
        if h1 <= h0 or w1 <= w0:
            continue
        for c in range(x.shape[1]):
            window = x[b, c, h0:h1, w0:w1]
            a, e = divmod(int(np.argmax(window)), w1 - w0)  # argmax: the first occurrence
            y[r, c, i, j] = window[a, e]
            dx[b, c, h0 + a, w0 + e] += dy[r, c, i, j]
    return y, dx


@st.composite
def roi_cases(draw, max_rois=4):
    """Boxes on half-pixel steps (so x * scale hits .5, where the rounding matters), partly
    outside the image, inverted or a single point; 1-2 images; scales 1, 1/2, 1/4."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25]))
    out = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    r = draw(st.integers(0, max_rois))
    corners = rng.integers(-4, 2 * max(h, w) / scale + 4, (r, 4)) * 0.5
    if r and draw(st.booleans()):
        corners[0, 2:] = corners[0, :2]  # x1 == x2, y1 == y2
    rois = np.concatenate([rng.integers(0, n, (r, 1)), corners], axis=1)
    return dict(shape=(n, c, h, w), rois=rois, out=out, scale=scale,
                seed=draw(st.integers(0, 2**31)))


def _out(case):
    o = case["out"]
    return (o, o) if isinstance(o, int) else o


def _forward(case):
    return lambda x: roi_max_pool_forward(x, case["rois"], case["out"], case["scale"])


# ---------------------------------------------------------------- gradients and PyTorch


@given(case=roi_cases())
def test_gradient_matches_finite_differences(case):
    x = distinct_values(np.random.default_rng(case["seed"]), case["shape"])
    check_one_gradient(_forward(case), lambda dy, c: (roi_max_pool_backward(dy, c),), [x], 0)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_gradient_is_checked_on_bins_of_different_sizes(scale, rng):
    x = distinct_values(rng, (2, 3, 8, 9))
    rois = np.array([[0, 0, 0, 8, 7], [1, 1.5, 2.5, 6.5, 7.4], [0, 3, 1, 4, 6],
                     [1, -3, -2, 2, 3]]) / scale
    rois[:, 0] = [0, 1, 0, 1]
    case = dict(rois=rois, out=(3, 2), scale=scale)
    report = check_one_gradient(_forward(case), lambda dy, c: (roi_max_pool_backward(dy, c),),
                                [x], 0)
    assert report.max_abs_gradient[0] > 0.5


@given(case=roi_cases())
def test_matches_a_pytorch_oracle_forward_and_backward(case):
    x = distinct_values(np.random.default_rng(case["seed"]), case["shape"])
    xt = to_torch(x, requires_grad=True)
    yt = torch_roi_pool(xt, case["rois"], _out(case), case["scale"])
    dy = np.random.default_rng(1).standard_normal(tuple(yt.shape))
    yt.backward(to_torch(dy))
    y, cache = _forward(case)(x)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=0)
    assert_close(roi_max_pool_backward(dy, cache), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def _tied(seed, shape):
    """ReLU of small integers: all-zero windows and tied positive maxima."""
    return np.maximum(np.random.default_rng(seed).integers(-3, 3, shape), 0).astype(np.float64)


@given(case=roi_cases())
def test_ties_route_to_the_first_maximum_in_row_major_order(case):
    x = _tied(case["seed"], case["shape"])
    y, cache = _forward(case)(x)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    y_ref, dx_ref = numpy_first_max(x, case["rois"], dy, _out(case), case["scale"])
    assert np.array_equal(y, y_ref)
    assert_close(roi_max_pool_backward(dy, cache), dx_ref, rtol=1e-12, atol=1e-12)


def test_an_all_zero_bin_sends_its_gradient_to_its_top_left_element():
    x = np.zeros((1, 1, 4, 6))
    x[0, 0, 3, 5] = -1.0
    rois = np.array([[0, 1, 0, 4, 3]], dtype=float)  # w 1..4 in two bins of 2, h 0..3 in one bin
    y, cache = roi_max_pool_forward(x, rois, (1, 2))
    dx = roi_max_pool_backward(np.array([[[[1.0, 2.0]]]]), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1], expected[0, 0, 0, 3] = 1.0, 2.0
    assert np.array_equal(y, np.zeros((1, 1, 1, 2))) and np.array_equal(dx, expected)


def test_matches_torchvision_when_installed(rng):
    try:
        import torchvision.ops
        roi_pool = torchvision.ops.roi_pool
    except (ImportError, AttributeError) as error:
        pytest.skip(f"torchvision.ops.roi_pool is not available ({error}); the oracle above "
                    "follows its rules")
    x = distinct_values(rng, (2, 3, 9, 8))
    rois = np.array([[0, 0.5, 2.5, 6.5, 7.5], [1, -2, -1, 3, 2], [1, 4, 4, 4, 4]])
    for out, scale in (((2, 3), 1.0), (3, 0.5), (2, 0.25)):
        xt = to_torch(x, requires_grad=True)
        yt = roi_pool(xt, to_torch(rois), out, scale)
        dy = rng.standard_normal(tuple(yt.shape))
        yt.backward(to_torch(dy))
        y, cache = roi_max_pool_forward(x, rois, out, scale)
        assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=0)
        assert_close(roi_max_pool_backward(dy, cache), xt.grad.numpy(), rtol=1e-12)


# ---------------------------------------------------------------- the rules, one by one


def test_coordinates_round_half_away_from_zero():
    """0.5 -> 1 and 2.5 -> 3 (C's round); numpy's round would give 0 and 2."""
    x = np.arange(8.0).reshape(1, 1, 1, 8)
    for x1, expected in ((0.5, 1.0), (2.5, 3.0), (1.5, 2.0), (2.49, 2.0)):
        y, _ = roi_max_pool_forward(x, np.array([[0, x1, 0, x1, 0]]), 1)
        assert y.item() == expected, x1


def test_spatial_scale_quarter_and_boxes_outside(rng):
    x = distinct_values(rng, (1, 2, 5, 6))
    rois = np.array([[0, 4, 2, 14, 10], [0, -20, -20, -8, -8], [0, 18, 10, 40, 40]], dtype=float)
    y, cache = roi_max_pool_forward(x, rois, (2, 2), 0.25)
    # box 0: w 1..4 (round(3.5) = 4), h 1..3 (round(2.5) = 3); box 1 is outside: all zero
    assert np.array_equal(y[0, :, 0, 0], x[0, :, 1:3, 1:3].max(axis=(1, 2)))
    assert not y[1].any()
    y_ref, _ = numpy_first_max(x, rois, np.zeros_like(y), (2, 2), 0.25)
    assert np.array_equal(y, y_ref)


def test_a_point_roi_is_one_pixel_repeated(rng):
    x = distinct_values(rng, (1, 2, 5, 5))
    y, cache = roi_max_pool_forward(x, np.array([[0, 3, 1, 3, 1]], dtype=float), (2, 3))
    assert np.array_equal(y, np.broadcast_to(x[0, :, 1, 3][None, :, None, None], y.shape))
    dx = roi_max_pool_backward(np.ones_like(y), cache)
    assert dx[0, :, 1, 3].tolist() == [6.0, 6.0] and dx.sum() == 12


def test_several_images_get_their_own_gradients(rng):
    x = distinct_values(rng, (3, 2, 4, 4))
    rois = np.array([[2, 0, 0, 3, 3], [0, 1, 1, 2, 2], [2, 0, 0, 1, 1]], dtype=float)
    y, cache = roi_max_pool_forward(x, rois, 1)
    assert_close(y[:, :, 0, 0], np.stack([x[2].max(axis=(1, 2)), x[0, :, 1:3, 1:3].max(
        axis=(1, 2)), x[2, :, :2, :2].max(axis=(1, 2))]))
    dx = roi_max_pool_backward(np.ones_like(y), cache)
    assert not dx[1].any() and dx[0].sum() == 2 and dx[2].sum() == 4


def test_no_rois_gives_an_empty_output_and_zero_gradient(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    y, cache = roi_max_pool_forward(x, np.zeros((0, 5)), (2, 3))
    assert y.shape == (0, 3, 2, 3)
    dx = roi_max_pool_backward(y, cache)
    assert dx.shape == x.shape and not dx.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x = distinct_values(rng, (2, 3, 6, 6)).astype(dtype)
    rois = np.array([[0, 0.5, 0.5, 4.5, 3.5], [1, 2, 1, 5, 5]], dtype=dtype)
    y, cache = roi_max_pool_forward(x, rois, 2, 0.5)
    dx = roi_max_pool_backward(np.ones_like(y), cache)
    assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
    y64, _ = roi_max_pool_forward(x.astype(np.float64), rois.astype(np.float64), 2, 0.5)
    assert np.array_equal(y, y64.astype(dtype))


def test_no_grad_keeps_no_cache(rng):
    with scratchseg.no_grad():
        _, cache = roi_max_pool_forward(rng.standard_normal((1, 1, 4, 4)),
                                        np.array([[0.0, 0, 0, 3, 3]]), 2)
    assert cache is None
    with pytest.raises(RuntimeError, match=r"^roi_max_pool_backward: no cache"):
        roi_max_pool_backward(np.ones((1, 1, 2, 2)), cache)


def test_the_cpu_engine_groups_the_rois_and_keeps_the_reference_backward():
    """Its forward runs the reference on groups of like-sized RoIs (tests/test_engines.py
    proves the results bitwise equal); the cache is the reference's, and so is the backward."""
    assert fast.roi_max_pool_forward is not functional.roi_max_pool_forward
    assert fast.roi_max_pool_backward is functional.roi_max_pool_backward


def test_the_layer(rng):
    x = distinct_values(rng, (2, 3, 8, 8))
    rois = np.array([[0, 0, 0, 12, 14], [1, 4, 2, 9, 9]], dtype=np.float64)
    layer = RoIMaxPool((2, 3), spatial_scale=0.5)
    y = layer.forward(x, rois)
    expected, cache = roi_max_pool_forward(x, rois, (2, 3), 0.5)
    assert np.array_equal(y, expected)
    dy = rng.standard_normal(y.shape)
    assert np.array_equal(layer.backward(dy), roi_max_pool_backward(dy, cache))
    assert layer.params == {} and layer.grads == {}


# ---------------------------------------------------------------- bad inputs


def _good():
    return dict(x=np.zeros((2, 3, 4, 4)), rois=np.array([[0, 0, 0, 3, 3], [1, 1, 1, 2, 2.0]]))


BAD_INPUTS = {
    "x's rank": ("x", lambda a: a[0], ValueError,
                 r"x must have rank 4 \(N, C, H, W\), got shape \(3, 4, 4\)"),
    "rois' columns": ("rois", lambda a: a[:, 1:], ValueError,
                      r"rois must have shape \(R, 5\), rows \[batch_index, x1, y1, x2, y2\], "
                      r"got shape \(2, 4\)"),
    "rois' rank": ("rois", lambda a: a[0], ValueError, r"rois must have shape \(R, 5\)"),
    "batch index too large": ("rois", lambda a: a + [[1, 0, 0, 0, 0]], ValueError,
                              r"each roi's batch_index \(column 0\) must be an integer in "
                              r"\[0, 2\) for x of shape \(2, 3, 4, 4\), got 2.0 in roi 1"),
    "negative batch index": ("rois", lambda a: a - [[1, 0, 0, 0, 0]], ValueError,
                             r"each roi's batch_index .* got -1.0 in roi 0"),
    "fractional batch index": ("rois", lambda a: a + [[0.5, 0, 0, 0, 0]], ValueError,
                               r"each roi's batch_index .* got 0.5 in roi 0"),
    "NaN box": ("rois", lambda a: np.where(a == 3, np.nan, a), ValueError,
                r"rois must be finite"),
    "float32 rois": ("rois", lambda a: a.astype(np.float32), TypeError,
                     r"inputs must share one dtype, got x=float64, rois=float32"),
    "integer rois": ("rois", lambda a: a.astype(np.int64), TypeError,
                     r"rois must be float32 or float64, got int64"),
    "integer x": ("x", lambda a: a.astype(np.int64), TypeError, r"x must be float32 or float64"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_name_the_op_and_the_argument(case):
    name, spoil, error, message = BAD_INPUTS[case]
    inputs = _good()
    inputs[name] = spoil(inputs[name])
    with pytest.raises(error, match=rf"^roi_max_pool: {message}"):
        roi_max_pool_forward(inputs["x"], inputs["rois"], 2)


@pytest.mark.parametrize("options, error, message", [
    (dict(output_size=0), ValueError, r"output_size must be >= 1, got 0"),
    (dict(output_size=(2, 2, 2)), TypeError, r"output_size must be an int or a pair of ints"),
    (dict(output_size=2, spatial_scale=0.0), ValueError, r"spatial_scale must be a finite"),
    (dict(output_size=2, spatial_scale=float("nan")), ValueError, r"spatial_scale must be"),
])
def test_bad_options(options, error, message):
    with pytest.raises(error, match=rf"^roi_max_pool: {message}"):
        roi_max_pool_forward(**_good(), **options)


def test_a_wrong_upstream_gradient_is_refused():
    y, cache = roi_max_pool_forward(**_good(), output_size=2)
    with pytest.raises(ValueError, match=r"^roi_max_pool_backward: dy must have the output's "
                                         r"shape \(2, 3, 2, 2\)"):
        roi_max_pool_backward(np.ones((2, 3, 2, 1)), cache)
    with pytest.raises(TypeError, match=r"^roi_max_pool_backward: dy must have the output's "
                                        r"dtype"):
        roi_max_pool_backward(y.astype(np.float32), cache)
