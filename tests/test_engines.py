"""The two engines agree: every op of scratchseg.fast against scratchseg.functional.

The shapes reach every path of the CPU engine: 256-px maps in bands of rows, a
64-px layer that is one band, the decoder's C > O convolutions, stride 2,
1-channel images, odd sizes and crops, each with the work split over two
threads and in one piece. float64 agrees to 1e-12 of the largest value, float32
to its rounding.
"""

import numpy as np
import pytest

from scratchseg import fast, functional
from scratchseg.fast.conv import conv2d_paths
from scratchseg.fast.tuning import tuned

TOLERANCE = {np.float64: 1e-12, np.float32: 2e-6}

# (name, x shape, w shape, stride, padding, the CPU engine's (forward, backward) paths)
CONVOLUTIONS = [
    ("256 px, bands of rows", (1, 4, 256, 256), (8, 4, 3, 3), 1, 1, ("row shifts",) * 2),
    ("64 px, one band", (1, 8, 64, 64), (8, 8, 3, 3), 1, 1, ("row shifts",) * 2),
    ("decoder, C > O", (1, 16, 64, 64), (8, 16, 3, 3), 1, 1, ("row shifts", "flipped kernel")),
    ("valid, odd sizes", (2, 5, 67, 33), (6, 5, 3, 3), 1, 0, ("row shifts",) * 2),
    ("1-channel image", (2, 1, 96, 96), (4, 1, 3, 3), 1, 1, ("im2col", "col2im")),
    ("im2col in bands", (2, 16, 128, 128), (64, 16, 3, 3), 1, 1, ("im2col", "col2im")),
    ("small map", (2, 8, 32, 32), (16, 8, 3, 3), 1, 1, ("im2col", "col2im")),
    ("stride 2", (2, 3, 17, 19), (4, 3, 3, 3), 2, 1, ("im2col", "col2im")),
    ("head, 1x1", (2, 8, 64, 64), (2, 8, 1, 1), 1, 0, ("im2col", "flipped kernel")),
]
UP_CONVOLUTIONS = [  # (name, x shape, w shape, stride, padding)
    ("2x2 stride 2, tiled", (2, 16, 32, 32), (16, 8, 2, 2), 2, 0),
    ("3x3 stride 2, overlapping", (1, 4, 9, 11), (4, 3, 3, 3), 2, 1),
]
POOLS = [((2, 4, 64, 64), 2, None), ((1, 3, 17, 19), 2, None), ((2, 3, 17, 19), 3, 2)]


@pytest.fixture(params=["one thread", "two threads"])
def threads(request):
    """The CPU engine's work in one piece, or split over two threads however small."""
    split = request.param == "two threads"
    with tuned(cores=2 if split else 1, blas_threads_sleep=split,
               min_part_elements=1 if split else 1 << 18):
        yield


def _agree(name, got, want, dtype):
    assert got.dtype == want.dtype == dtype, name
    assert got.shape == want.shape, name
    atol = TOLERANCE[dtype] * float(np.abs(want.astype(np.float64)).max(initial=0.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)


def _both(op, inputs, options, dy_seed=3):
    """(fast's outputs, reference's outputs): the forward's y, then every gradient."""
    results = []
    for engine in (fast, functional):
        y, cache = getattr(engine, f"{op}_forward")(*inputs, **options)
        dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(y.dtype)
        grads = getattr(engine, f"{op}_backward")(dy, cache)
        results.append((y, *(grads if isinstance(grads, tuple) else (grads,))))
    return results


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, x_shape, w_shape, stride, padding, paths", CONVOLUTIONS,
                         ids=[case[0] for case in CONVOLUTIONS])
def test_conv2d(name, x_shape, w_shape, stride, padding, paths, dtype, threads):
    assert conv2d_paths(x_shape, w_shape, (stride,) * 2, (padding,) * 2) == paths
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1]))
    got, want = _both("conv2d", (x, w, b), dict(stride=stride, padding=padding))
    for label, g, r in zip(("y", "dx", "dw", "db"), got, want):
        _agree(f"{name}: {label}", g, r, dtype)


@pytest.mark.parametrize("name, x_shape, w_shape, stride, padding", UP_CONVOLUTIONS,
                         ids=[case[0] for case in UP_CONVOLUTIONS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_transpose2d(name, x_shape, w_shape, stride, padding, dtype, threads):
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[1:2]))
    got, want = _both("conv_transpose2d", (x, w, b), dict(stride=stride, padding=padding))
    for label, g, r in zip(("y", "dx", "dw", "db"), got, want):
        _agree(f"{name}: {label}", g, r, dtype)


def test_conv2d_without_input_grad_and_bias(threads):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 4, 96, 96)), rng.standard_normal((8, 4, 3, 3))
    dy = rng.standard_normal((1, 8, 96, 96))
    got = fast.conv2d_backward(dy, fast.conv2d_forward(x, w, padding=1)[1], input_grad=False)
    want = functional.conv2d_backward(dy, functional.conv2d_forward(x, w, padding=1)[1],
                                      input_grad=False)
    assert got[0] is None and want[0] is None and got[2] is None and want[2] is None
    _agree("dw", got[1], want[1], np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, kernel, stride", POOLS)
def test_max_pool2d(shape, kernel, stride, dtype, threads):
    x = np.random.default_rng(4).permutation(np.prod(shape)).reshape(shape).astype(dtype)
    x[0, 0, :4, :4] = 0  # tied windows: the first maximum takes the gradient in both
    got, want = _both("max_pool2d", (x,), dict(kernel_size=kernel, stride=stride))
    for label, g, r in zip(("y", "dx"), got, want):
        assert np.array_equal(g, r), label  # selections and copies: bitwise


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu(dtype, threads):
    x = np.random.default_rng(5).standard_normal((1, 8, 256, 256)).astype(dtype)
    x[0, 0, 0, :8] = 0
    got, want = _both("relu", (x,), {})
    for label, g, r in zip(("y", "dx"), got, want):
        assert np.array_equal(g, r), label


@pytest.mark.parametrize("skip_shape", [(2, 8, 68, 70), (2, 8, 64, 64)],
                         ids=["cropped", "not cropped"])
def test_concat(skip_shape, threads):
    rng = np.random.default_rng(6)
    skip, x = rng.standard_normal(skip_shape), rng.standard_normal((2, 4, 64, 64))
    got, want = _both("concat", (skip, x), {})
    for label, g, r in zip(("y", "dskip", "dx"), got, want):
        assert np.array_equal(g, r), label


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_roi_max_pool(dtype):
    """Proposals of every size at once (the CPU engine runs them in groups by window size),
    on two images, with tied windows: bitwise the same y, cache and dx."""
    rng = np.random.default_rng(7)
    x = rng.permutation(2 * 6 * 20 * 24).reshape(2, 6, 20, 24).astype(dtype)
    x[1, :, :6, :6] = 0
    corners = rng.uniform(-8, 100, (60, 2))
    sizes = rng.choice([1.0, 6.0, 20.0, 60.0, 96.0], (60, 2)) * rng.uniform(0.5, 1.5, (60, 2))
    rois = np.concatenate([rng.integers(0, 2, (60, 1)), corners, corners + sizes], axis=1)
    got, want = _both("roi_max_pool", (x, rois.astype(dtype)),
                      dict(output_size=(5, 4), spatial_scale=0.25))
    for label, g, r in zip(("y", "dx"), got, want):
        assert np.array_equal(g, r), label


def test_the_ops_without_a_kernel_of_their_own_are_the_reference():
    for name in ("dropout", "batch_norm2d", "softmax_cross_entropy"):
        for half in ("forward", "backward"):
            op = f"{name}_{half}"
            assert getattr(fast, op) is getattr(functional, op), op


def test_every_reference_op_has_a_fast_counterpart():
    assert set(fast.__all__) == set(functional.__all__) - {"im2col", "col2im"}
