"""Bad input gets a clear ValueError or TypeError that names the op."""

import numpy as np
import pytest

from scratchseg import backend
from scratchseg import ops as F
from scratchseg.functional._checks import check_upstream
from scratchseg.nn import UNet, layers

pytestmark = pytest.mark.usefixtures("each_engine")

f64 = np.float64


def a(*shape, dtype=f64):
    return np.ones(shape, dtype=dtype)


def bn(x, c=None, training=True, **overrides):
    c = x.shape[1] if c is None and x.ndim > 1 else (c or 1)
    args = dict(gamma=a(c, dtype=x.dtype), beta=a(c, dtype=x.dtype),
                running_mean=a(c, dtype=x.dtype), running_var=a(c, dtype=x.dtype))
    args.update(overrides)
    return F.batch_norm2d_forward(x, args["gamma"], args["beta"], args["running_mean"],
                                  args["running_var"], training=training)


def ce(logits, labels, **kwargs):
    return F.softmax_cross_entropy_forward(logits, labels, **kwargs)


LABELS = np.zeros((2, 3, 3), dtype=np.int64)
UNET = UNet(base_channels=2, depth=2)

CASES = {
    # wrong rank
    "conv2d rank": (ValueError, "conv2d", lambda: F.conv2d_forward(a(3, 5, 5), a(2, 3, 3, 3))),
    "conv2d weight rank": (ValueError, "conv2d", lambda: F.conv2d_forward(a(1, 3, 5, 5),
                                                                          a(3, 3, 3))),
    "conv_transpose2d rank": (ValueError, "conv_transpose2d",
                              lambda: F.conv_transpose2d_forward(a(1, 3, 5), a(3, 2, 2, 2))),
    "max_pool2d rank": (ValueError, "max_pool2d", lambda: F.max_pool2d_forward(a(3, 4, 4))),
    "concat rank": (ValueError, "concat", lambda: F.concat_forward(a(1, 2, 6), a(1, 2, 4, 4))),
    "batch_norm2d rank": (ValueError, "batch_norm2d", lambda: bn(a(2, 3, 4), c=3)),
    "loss logits rank": (ValueError, "softmax_cross_entropy", lambda: ce(a(4), np.zeros(4, int))),
    "loss labels shape": (ValueError, "softmax_cross_entropy",
                          lambda: ce(a(2, 3, 3, 3), np.zeros((2, 3), np.int64))),
    # channels not matching the weights
    "conv2d channels": (ValueError, "conv2d.*3 channels",
                        lambda: F.conv2d_forward(a(1, 3, 5, 5), a(2, 4, 3, 3))),
    "conv_transpose2d channels": (ValueError, "conv_transpose2d.*3 channels",
                                  lambda: F.conv_transpose2d_forward(a(1, 3, 5, 5),
                                                                     a(2, 3, 2, 2))),
    "batch_norm2d gamma length": (ValueError, "batch_norm2d.*gamma",
                                  lambda: bn(a(2, 3, 4, 4), gamma=a(4))),
    "batch_norm2d running_var length": (ValueError, "batch_norm2d.*running_var",
                                        lambda: bn(a(2, 3, 4, 4), running_var=a(2))),
    # bias of the wrong length
    "conv2d bias": (ValueError, "conv2d.*b must have shape",
                    lambda: F.conv2d_forward(a(1, 3, 5, 5), a(2, 3, 3, 3), a(3))),
    "conv_transpose2d bias": (ValueError, "conv_transpose2d.*b must have shape",
                              lambda: F.conv_transpose2d_forward(a(1, 3, 5, 5), a(3, 2, 2, 2),
                                                                 a(3))),
    "conv2d bias rank": (ValueError, "conv2d", lambda: F.conv2d_forward(a(1, 3, 5, 5),
                                                                        a(2, 3, 3, 3), a(2, 1))),
    # kernel larger than the (padded) input
    "conv2d kernel too large": (ValueError, "conv2d.*larger",
                                lambda: F.conv2d_forward(a(1, 1, 4, 6), a(1, 1, 7, 3),
                                                         padding=1)),
    "max_pool2d kernel too large": (ValueError, "max_pool2d.*larger",
                                    lambda: F.max_pool2d_forward(a(1, 1, 2, 5), 3)),
    "conv_transpose2d no output": (ValueError, "conv_transpose2d",
                                   lambda: F.conv_transpose2d_forward(a(1, 1, 1, 1),
                                                                      a(1, 1, 2, 2), padding=1)),
    # labels
    "labels too large": (ValueError, r"softmax_cross_entropy.*\[0, 3\)",
                         lambda: ce(a(2, 3, 3, 3), np.full((2, 3, 3), 3))),
    "labels negative": (ValueError, "softmax_cross_entropy",
                        lambda: ce(a(2, 3, 3, 3), np.full((2, 3, 3), -1))),
    "labels out of range besides ignore_index": (
        ValueError, "softmax_cross_entropy",
        lambda: ce(a(2, 3), np.array([255, 7]), ignore_index=255)),
    "labels float": (TypeError, "softmax_cross_entropy.*labels",
                     lambda: ce(a(2, 3, 3, 3), LABELS.astype(f64))),
    # non-finite logits
    "logits nan": (ValueError, "softmax_cross_entropy.*(NaN|finite)",
                   lambda: ce(np.array([[0.0, np.nan]]), np.array([0]))),
    "logits inf": (ValueError, "softmax_cross_entropy.*(inf|finite)",
                   lambda: ce(np.array([[0.0, np.inf]]), np.array([0]))),
    "logits -inf": (ValueError, "softmax_cross_entropy.*(inf|finite)",
                    lambda: ce(np.array([[-np.inf, 0.0]]), np.array([0]))),
    # class_weight, weight_map, reduction
    "class_weight length": (ValueError, "softmax_cross_entropy.*class_weight",
                            lambda: ce(a(2, 3, 3, 3), LABELS, class_weight=a(2))),
    "weight_map shape": (ValueError, "softmax_cross_entropy.*weight_map",
                         lambda: ce(a(2, 3, 3, 3), LABELS, weight_map=a(2, 3, 4))),
    "weight_map broadcastable": (ValueError, "softmax_cross_entropy.*weight_map",
                                 lambda: ce(a(2, 3, 3, 3), LABELS, weight_map=a(1, 3, 3))),
    "reduction": (ValueError, "softmax_cross_entropy.*reduction",
                  lambda: ce(a(2, 3), np.zeros(2, int), reduction="none")),
    # mixed dtypes
    "conv2d dtypes": (TypeError, "conv2d.*dtype",
                      lambda: F.conv2d_forward(a(1, 3, 5, 5, dtype=np.float32), a(2, 3, 3, 3))),
    "conv2d bias dtype": (TypeError, "conv2d.*dtype",
                          lambda: F.conv2d_forward(a(1, 3, 5, 5), a(2, 3, 3, 3),
                                                   a(2, dtype=np.float32))),
    "conv_transpose2d dtypes": (TypeError, "conv_transpose2d.*dtype",
                                lambda: F.conv_transpose2d_forward(
                                    a(1, 3, 5, 5), a(3, 2, 2, 2, dtype=np.float32))),
    "concat dtypes": (TypeError, "concat.*dtype",
                      lambda: F.concat_forward(a(1, 2, 6, 6, dtype=np.float32), a(1, 2, 4, 4))),
    "batch_norm2d dtypes": (TypeError, "batch_norm2d.*dtype",
                            lambda: bn(a(2, 3, 4, 4, dtype=np.float32), gamma=a(3))),
    "loss class_weight dtype": (TypeError, "softmax_cross_entropy.*dtype",
                                lambda: ce(a(2, 3, 3, 3), LABELS,
                                           class_weight=a(3, dtype=np.float32))),
    # not float arrays at all
    "conv2d integer x": (TypeError, "conv2d.*float",
                         lambda: F.conv2d_forward(a(1, 3, 5, 5, dtype=np.int64), a(2, 3, 3, 3))),
    "conv2d list x": (TypeError, "conv2d", lambda: F.conv2d_forward([[[[1.0]]]], a(1, 1, 1, 1))),
    "conv2d list bias": (TypeError, "conv2d",
                         lambda: F.conv2d_forward(a(1, 1, 3, 3), a(1, 1, 1, 1), [0.0])),
    "relu integer": (TypeError, "relu", lambda: F.relu_forward(np.arange(4))),
    "dropout integer": (TypeError, "dropout",
                        lambda: F.dropout_forward(np.arange(4), 0.5, np.random.default_rng())),
    "max_pool2d integer": (TypeError, "max_pool2d",
                           lambda: F.max_pool2d_forward(a(1, 1, 4, 4, dtype=np.int32))),
    # bad stride / padding / kernel_size types and values
    "conv2d float stride": (TypeError, "conv2d.*stride",
                            lambda: F.conv2d_forward(a(1, 1, 5, 5), a(1, 1, 3, 3), stride=1.5)),
    "conv2d string stride": (TypeError, "conv2d.*stride",
                             lambda: F.conv2d_forward(a(1, 1, 5, 5), a(1, 1, 3, 3), stride="2")),
    "conv2d triple stride": (TypeError, "conv2d.*stride",
                             lambda: F.conv2d_forward(a(1, 1, 5, 5), a(1, 1, 3, 3),
                                                      stride=(1, 1, 1))),
    "conv2d bool padding": (TypeError, "conv2d.*padding",
                            lambda: F.conv2d_forward(a(1, 1, 5, 5), a(1, 1, 3, 3), padding=True)),
    "conv2d None padding": (TypeError, "conv2d.*padding",
                            lambda: F.conv2d_forward(a(1, 1, 5, 5), a(1, 1, 3, 3), padding=None)),
    "conv2d zero stride": (ValueError, "conv2d.*stride",
                           lambda: F.conv2d_forward(a(1, 1, 5, 5), a(1, 1, 3, 3), stride=0)),
    "conv2d negative padding": (ValueError, "conv2d.*padding",
                                lambda: F.conv2d_forward(a(1, 1, 5, 5), a(1, 1, 3, 3),
                                                         padding=(0, -1))),
    "conv_transpose2d float padding": (TypeError, "conv_transpose2d.*padding",
                                       lambda: F.conv_transpose2d_forward(
                                           a(1, 1, 3, 3), a(1, 1, 2, 2), padding=0.5)),
    "max_pool2d float kernel": (TypeError, "max_pool2d.*kernel_size",
                                lambda: F.max_pool2d_forward(a(1, 1, 4, 4), 2.0)),
    "max_pool2d zero stride": (ValueError, "max_pool2d.*stride",
                               lambda: F.max_pool2d_forward(a(1, 1, 4, 4), 2, 0)),
    # dropout probability
    "dropout p = 1": (ValueError, "dropout.*p",
                      lambda: F.dropout_forward(a(4), 1.0, np.random.default_rng())),
    "dropout p < 0": (ValueError, "dropout.*p",
                      lambda: F.dropout_forward(a(4), -0.1, np.random.default_rng())),
    "dropout p > 1": (ValueError, "dropout.*p",
                      lambda: F.dropout_forward(a(4), 1.5, np.random.default_rng())),
    "Dropout layer p": (ValueError, "Dropout.*p", lambda: layers.Dropout(1.0)),
    # batch norm needs two values per channel to train
    "batch_norm2d single value": (ValueError, "batch_norm2d", lambda: bn(a(1, 3, 1, 1))),
    # crop and concat
    "concat skip smaller": (ValueError, "concat", lambda: F.concat_forward(a(1, 2, 3, 3),
                                                                           a(1, 2, 4, 4))),
    "concat batch": (ValueError, "concat.*batch", lambda: F.concat_forward(a(2, 2, 6, 6),
                                                                           a(1, 2, 4, 4))),
    "center_crop": (ValueError, "center_crop", lambda: F.center_crop(a(1, 1, 4, 4), 5, 2)),
    "center_crop rank 1": (ValueError, r"center_crop: x must have rank 2 or more.*\(5,\)",
                           lambda: F.center_crop(a(5), 2, 2)),
    "center_crop rank 0": (ValueError, r"center_crop: x must have rank 2 or more.*\(\)",
                           lambda: F.center_crop(np.float64(1.0), 1, 1)),
    "center_crop list": (TypeError, "center_crop: x must be a NumPy or CuPy array.*list",
                         lambda: F.center_crop([[1.0, 2.0]], 1, 1)),
    "center_crop float size": (TypeError, "center_crop: height must be an int, got 2.0",
                               lambda: F.center_crop(a(1, 1, 4, 4), 2.0, 2)),
    # dropout needs a generator to train
    "dropout rng None": (TypeError, "dropout: training needs rng.*Generator.*got NoneType",
                         lambda: F.dropout_forward(a(2, 3), 0.5, None)),
    "dropout rng seed": (TypeError, "dropout: training needs rng.*got int",
                         lambda: F.dropout_forward(a(2, 3), 0.5, 0)),
    # U-Net sizes are pixel counts
    "UNet output_size float": (TypeError, r"UNet.output_size: input_size must be an int.*572\.0",
                               lambda: UNET.output_size(572.0)),
    "UNet output_size bool": (TypeError, "UNet.output_size: input_size must be an int",
                              lambda: UNET.output_size(True)),
    "UNet valid_input_size float": (TypeError,
                                    r"UNet.valid_input_size: min_size must be an int.*20\.5",
                                    lambda: UNET.valid_input_size(20.5)),
    "UNet forward list": (TypeError, "UNet: input must be a NumPy or CuPy array",
                          lambda: UNET.forward([[[[0.0]]]])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_a_clear_error(case):
    error, pattern, call = CASES[case]
    with pytest.raises(error, match=pattern):
        call()


# ---------------------------------------------------------------- upstream gradients

X = a(1, 2, 4, 4)
BACKWARDS = {  # op: (forward () -> (y, cache), backward)
    "conv2d": (lambda: F.conv2d_forward(X, a(3, 2, 3, 3), a(3)), F.conv2d_backward),
    "conv2d stride 2": (lambda: F.conv2d_forward(X, a(3, 2, 3, 3), stride=2),
                        F.conv2d_backward),
    "conv_transpose2d": (lambda: F.conv_transpose2d_forward(X, a(2, 3, 2, 2), a(3)),
                         F.conv_transpose2d_backward),
    "max_pool2d": (lambda: F.max_pool2d_forward(X), F.max_pool2d_backward),
    "relu": (lambda: F.relu_forward(X), F.relu_backward),
    "concat": (lambda: F.concat_forward(a(1, 3, 6, 6), X), F.concat_backward),
    "dropout": (lambda: F.dropout_forward(X, 0.5, np.random.default_rng(0)),
                F.dropout_backward),
    "dropout eval": (lambda: F.dropout_forward(X, 0.5, None, training=False),
                     F.dropout_backward),
    "batch_norm2d": (lambda: bn(X), F.batch_norm2d_backward),
    "batch_norm2d eval": (lambda: bn(X, training=False), F.batch_norm2d_backward),
}


def _wrong_upstreams(y):
    """(error, message pattern, dy) for a dy of another shape, dtype, backend or type."""
    shape, wider = tuple(y.shape), (*y.shape[:-1], y.shape[-1] + 1)
    return [
        (ValueError, rf"dy must have the output's shape \({shape[0]}, .*got \({wider[0]}, ",
         np.ones(wider)),
        (ValueError, "dy must have the output's shape", np.ones(shape[1:])),
        (TypeError, "dy must have the output's dtype float64, got float32",
         np.ones(shape, np.float32)),
        (TypeError, "dy must be a numpy array like the forward's output, got a cupy array",
         FakeCupyArray(shape)),
        (TypeError, "dy must be a numpy array like the forward's output, got list",
         np.ones(shape).tolist()),
    ]


@pytest.mark.parametrize("case", list(BACKWARDS))
def test_every_backward_checks_its_upstream_gradient(case):
    forward, backward = BACKWARDS[case]
    op = case.split()[0]
    y, cache = forward()
    for error, pattern, dy in _wrong_upstreams(y):
        with pytest.raises(error, match=rf"^{op}_backward: {pattern}"):
            backward(dy, forward()[1])
    backward(np.ones_like(y), cache)  # the right dy still goes through


def test_loss_backward_checks_an_array_dloss():
    logits = a(2, 3, 4)
    _, cache = ce(logits, np.zeros((2, 4), np.int64))
    op = "softmax_cross_entropy_backward"
    for error, pattern, dloss in [
        (ValueError, r"shape \(\), got \(1,\)", np.ones(1)),
        (ValueError, r"shape \(\), got \(2, 3, 4\)", np.ones_like(logits)),
        (TypeError, "dtype float64, got float32", np.array(1.0, np.float32)),
        (TypeError, "numpy array .* got a cupy array", FakeCupyArray(())),
        (TypeError, "numpy array .* got str", "1.0"),
    ]:
        with pytest.raises(error, match=f"^{op}: dy.*{pattern}"):
            F.softmax_cross_entropy_backward(dloss, cache)
    expected = F.softmax_cross_entropy_backward(2.0, cache)
    for dloss in (2, np.float32(2.0), np.array(2.0)):  # numbers, and a loss-like 0-d array
        np.testing.assert_array_equal(F.softmax_cross_entropy_backward(dloss, cache), expected)


class MetadataOnly:
    """A NumPy-looking dy with a shape and a dtype but no data to read."""

    __module__ = "numpy"

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __array__(self, *args, **kwargs):
        raise AssertionError("the upstream check read the data")


def test_the_upstream_check_reads_metadata_only():
    check_upstream("op_backward", MetadataOnly((2, 3), f64), (2, 3), np.dtype(f64), "numpy")
    with pytest.raises(TypeError, match="op_backward: dy must be a cupy array"):
        check_upstream("op_backward", MetadataOnly((2, 3), f64), (2, 3), np.dtype(f64), "cupy")


# ---------------------------------------------------------------- mixed NumPy / CuPy


class FakeCupyArray:
    """Looks like a CuPy array to the backend's module-name test; no GPU needed."""

    __module__ = "cupy._core.core"

    def __init__(self, shape, dtype=f64):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)


def test_get_array_module_rejects_mixed_numpy_and_cupy():
    assert type(FakeCupyArray((1,))).__module__.startswith("cupy")
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        backend.get_array_module(a(3), FakeCupyArray((3,)))
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        backend.get_array_module(FakeCupyArray((3,)), None, a(3))


@pytest.mark.parametrize("op,call", [
    ("conv2d", lambda fake: F.conv2d_forward(a(1, 3, 5, 5), fake((2, 3, 3, 3)))),
    ("conv2d", lambda fake: F.conv2d_forward(a(1, 3, 5, 5), a(2, 3, 3, 3), fake((2,)))),
    ("conv_transpose2d", lambda fake: F.conv_transpose2d_forward(fake((1, 3, 5, 5)),
                                                                 a(3, 2, 2, 2))),
    ("concat", lambda fake: F.concat_forward(a(1, 2, 6, 6), fake((1, 2, 4, 4)))),
    ("batch_norm2d", lambda fake: bn(a(2, 3, 4, 4), running_mean=fake((3,)))),
    ("softmax_cross_entropy", lambda fake: ce(a(2, 3), np.zeros(2, int), class_weight=fake((3,)))),
    ("softmax_cross_entropy", lambda fake: ce(a(2, 3), fake((2,), np.int64))),
], ids=["conv2d-w", "conv2d-b", "conv_transpose2d-x", "concat", "batch_norm2d",
        "loss-class_weight", "loss-labels"])
def test_ops_reject_mixed_numpy_and_cupy_inputs(op, call):
    with pytest.raises(TypeError, match=f"{op}.*mixed NumPy and CuPy"):
        call(FakeCupyArray)


# ---------------------------------------------------------------- backends


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.to_device(a(3), "torch")
    with pytest.raises(ValueError, match="backend"):
        backend.check_backend("gpu")
    with pytest.raises(ValueError):
        layers.Conv2d(1, 1, 1).to("cuda")


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy can run here: nothing to refuse")
def test_to_device_cupy_refused_when_cupy_cannot_run():
    with pytest.raises(ValueError, match="CuPy"):
        backend.to_device(a(3), "cupy")
    with pytest.raises(ValueError, match="CuPy"):
        layers.Conv2d(1, 1, 1, backend="cupy")


def test_to_device_cupy_refused_when_cupy_is_not_installed(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", lambda: None)
    with pytest.raises(ValueError, match="pip install"):
        backend.to_device(a(3), "cupy")
    with pytest.raises(ValueError, match="pip install"):
        backend.synchronize("cupy")


def test_unet_sizes_take_numpy_ints():
    """An edge read off an array's shape or a NumPy computation is an int too."""
    assert UNET.output_size(np.int64(44)) == UNET.output_size(44) == 4
    assert UNET.valid_input_size(np.int32(41)) == UNET.valid_input_size(41) == 44
