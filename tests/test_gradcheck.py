"""The gradient checker catches planted mistakes, passes correct backwards and reports."""

import re

import numpy as np
import pytest

from scratchseg.functional import (
    conv2d_backward,
    conv2d_forward,
    relu_backward,
    relu_forward,
)
from scratchseg.gradcheck import GradientCheckError, GradientReport, check_gradients
from scratchseg.nn import layers

WRONG = (1, 2, 0, 1)  # the planted element of dw


@pytest.fixture
def conv_inputs(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    return [x, w, b]


def conv_forward(x, w, b):
    return conv2d_forward(x, w, b, stride=1, padding=1)


def one_wrong_dw(dy, cache):
    dx, dw, db = conv2d_backward(dy, cache)
    dw = dw.copy()
    dw[WRONG] += 0.05
    return dx, dw, db


def db_two_percent_off(dy, cache):
    dx, dw, db = conv2d_backward(dy, cache)
    return dx, dw, db * 1.02


def relu_without_mask(dy, cache):
    return dy


def _number(label, message):
    match = re.search(label + r" (-?[0-9.]+(?:e[-+]?[0-9]+)?)", message)
    assert match, f"no {label} value in {message!r}"
    return float(match.group(1))


def test_gradient_check_error_is_an_assertion_error():
    assert issubclass(GradientCheckError, AssertionError)


def test_catches_one_wrong_element_of_dw(conv_inputs):
    with pytest.raises(GradientCheckError) as info:
        check_gradients(conv_forward, one_wrong_dw, conv_inputs, names=["x", "w", "b"])
    message = str(info.value)
    assert "'w'" in message
    assert f"element {WRONG}" in message
    # both values: the analytic one carries the planted +0.05 over the numerical one
    analytic, numerical = _number("analytic", message), _number("numerical", message)
    assert analytic - numerical == pytest.approx(0.05, abs=1e-5)
    assert abs(numerical) > 1e-3  # a real derivative, not a placeholder
    # the error carries the input's worst figures, for tables of failing checks
    assert info.value.abs_error == pytest.approx(0.05, abs=1e-5)
    assert info.value.rel_error == pytest.approx(0.05 / abs(numerical), rel=1e-3)


def test_names_default_to_input_positions(conv_inputs):
    with pytest.raises(GradientCheckError, match=r"'input1'.*element \(1, 2, 0, 1\)"):
        check_gradients(conv_forward, one_wrong_dw, conv_inputs)


@pytest.mark.parametrize("mode", ["full", "random"])
def test_catches_bias_gradient_two_percent_off(mode, conv_inputs):
    with pytest.raises(GradientCheckError, match="'b'") as info:
        check_gradients(conv_forward, db_two_percent_off, conv_inputs, mode=mode,
                        names=["x", "w", "b"])
    message = str(info.value)
    assert "analytic" in message and "numerical" in message
    assert _number("analytic", message) == pytest.approx(1.02 * _number("numerical", message),
                                                         rel=2e-3)
    if mode == "full":
        assert re.search(r"element \(\d+,\)", message)
    else:
        assert "random direction" in message


@pytest.mark.parametrize("mode", ["full", "random"])
def test_catches_relu_backward_without_its_mask(mode, rng):
    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(GradientCheckError, match="'x'") as info:
        check_gradients(relu_forward, relu_without_mask, [x], mode=mode, names=["x"])
    message = str(info.value)
    if mode == "full":  # the worst element is a negative input with gradient 0
        index = tuple(int(i) for i in re.search(r"element \(([\d, ]+)\)", message)
                      .group(1).split(","))
        assert x[index] < 0
        assert _number("numerical", message) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["full", "random"])
def test_correct_backwards_pass_with_a_report(mode, conv_inputs, rng):
    report = check_gradients(conv_forward, conv2d_backward, conv_inputs, mode=mode,
                             names=["x", "w", "b"])
    assert isinstance(report, GradientReport)
    assert report.names == ["x", "w", "b"]
    assert len(report.max_abs_error) == len(report.max_rel_error) == 3
    assert all(0 <= e < 1e-6 for e in report.max_abs_error)
    assert all(0 <= e < 1e-3 for e in report.max_rel_error)
    assert report.rows() == list(zip(report.names, report.max_abs_error, report.max_rel_error))
    x = np.abs(rng.standard_normal((2, 3))) + 0.1
    report = check_gradients(relu_forward, relu_backward, [x * rng.choice([-1, 1], x.shape)],
                             mode=mode)
    assert report.names == ["input0"]


def test_inputs_are_cast_to_float64_and_left_untouched(rng):
    seen = []

    def forward(x, w, b):
        seen.append((x.dtype, w.dtype, b.dtype))
        return conv_forward(x, w, b)

    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    originals = [a.copy() for a in (x, w, b)]
    check_gradients(forward, conv2d_backward, [x, w, b])
    assert seen and all(dtypes == (np.float64,) * 3 for dtypes in seen)
    for a, original in zip((x, w, b), originals):
        assert a.dtype == np.float32 and np.array_equal(a, original)


def test_bad_mode_and_bad_names_raise_value_error(conv_inputs):
    with pytest.raises(ValueError, match="mode"):
        check_gradients(conv_forward, conv2d_backward, conv_inputs, mode="fast")
    with pytest.raises(ValueError, match="names"):
        check_gradients(conv_forward, conv2d_backward, conv_inputs, names=["x"])


def test_malformed_backwards_are_reported(conv_inputs):
    def too_few(dy, cache):
        return conv2d_backward(dy, cache)[:2]

    def wrong_shape(dy, cache):
        dx, dw, db = conv2d_backward(dy, cache)
        return dx, dw[:, :, :1], db

    def none_for_bias(dy, cache):
        dx, dw, _ = conv2d_backward(dy, cache)
        return dx, dw, None

    for backward, pattern in ((too_few, "2 gradients for 3 inputs"), (wrong_shape, "shape"),
                              (none_for_bias, "None")):
        with pytest.raises(GradientCheckError, match=pattern):
            check_gradients(conv_forward, backward, conv_inputs)


def test_tolerances_are_honoured(conv_inputs):
    """A 2% error passes when rtol allows 5% and fails at the default 0.1%."""
    check_gradients(conv_forward, db_two_percent_off, conv_inputs, rtol=0.05)
    with pytest.raises(GradientCheckError):
        check_gradients(conv_forward, db_two_percent_off, conv_inputs)


def test_layer_with_a_planted_bug_is_caught(rng, monkeypatch):
    """Through layer_functions: a BatchNorm2d whose weight gradient is doubled."""
    from scratchseg.gradcheck import layer_functions

    layer = layers.BatchNorm2d(3)
    forward, backward, params, names = layer_functions(layer)
    original = layer.backward

    def doubled(dy):
        dx = original(dy)
        layer.grads["weight"] *= 2
        return dx

    monkeypatch.setattr(layer, "backward", doubled)
    x = rng.standard_normal((2, 3, 3, 3))
    with pytest.raises(GradientCheckError, match="'weight'"):
        check_gradients(forward, backward, [x, *params], names=["x", *names])
