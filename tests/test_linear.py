"""linear: finite differences, PyTorch's F.linear, the Linear layer, dtypes, bad inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, check_one_gradient, to_torch
from hypothesis import given
from hypothesis import strategies as st

import scratchseg
from scratchseg import fast, functional
from scratchseg.nn import Linear
from scratchseg.ops import linear_backward, linear_forward

pytestmark = pytest.mark.usefixtures("each_engine")


@st.composite
def linear_cases(draw, min_batch=1):
    n = draw(st.integers(min_batch, 4))
    fan_in, fan_out = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    b = rng.standard_normal(fan_out) if draw(st.booleans()) else None
    return rng.standard_normal((n, fan_in)), rng.standard_normal((fan_out, fan_in)), b


@given(case=linear_cases())
def test_every_gradient_matches_finite_differences(case):
    x, w, b = case
    inputs = [x, w] if b is None else [x, w, b]
    for index in range(len(inputs)):
        check_one_gradient(linear_forward, linear_backward, inputs, index)


def test_gradients_are_checked_on_non_trivial_values(rng):
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)
    for index in range(3):
        report = check_one_gradient(linear_forward, linear_backward, [x, w, b], index)
        assert report.max_abs_gradient[0] > 0.1


@given(case=linear_cases(min_batch=0), dy_seed=st.integers(0, 2**31))
def test_matches_torch_forward_and_backward(case, dy_seed):
    x, w, b = case
    xt, wt = to_torch(x, requires_grad=True), to_torch(w, requires_grad=True)
    bt = None if b is None else to_torch(b, requires_grad=True)
    yt = TF.linear(xt, wt, bt)
    dy = np.random.default_rng(dy_seed).standard_normal(tuple(yt.shape))
    yt.backward(to_torch(dy))
    y, cache = linear_forward(x, w, b)
    assert_close(y, yt.detach().numpy(), rtol=1e-12)
    dx, dw, db = linear_backward(dy, cache)
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert_close(dw, wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    if b is None:
        assert db is None
    else:
        assert_close(db, bt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_weights_use_pytorch_layout(rng):
    """w is (out_features, in_features): torch.nn.Linear's weight works without a transpose."""
    layer = torch.nn.Linear(4, 3).double()
    x = rng.standard_normal((5, 4))
    y, _ = linear_forward(x, layer.weight.detach().numpy(), layer.bias.detach().numpy())
    assert_close(y, layer(to_torch(x)).detach().numpy(), rtol=1e-12)


def test_empty_batch(rng):
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    y, cache = linear_forward(np.zeros((0, 4)), w, b)
    assert y.shape == (0, 3)
    dx, dw, db = linear_backward(y, cache)
    assert dx.shape == (0, 4) and not dw.any() and dw.shape == w.shape and not db.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x = rng.standard_normal((3, 4)).astype(dtype)
    w, b = rng.standard_normal((2, 4)).astype(dtype), rng.standard_normal(2).astype(dtype)
    y, cache = linear_forward(x, w, b)
    assert y.dtype == dtype
    assert all(g.dtype == dtype for g in linear_backward(np.ones_like(y), cache))


def test_no_grad_keeps_no_cache(rng):
    with scratchseg.no_grad():
        _, cache = linear_forward(rng.standard_normal((2, 3)), rng.standard_normal((1, 3)))
    assert cache is None
    with pytest.raises(RuntimeError, match=r"^linear_backward: no cache"):
        linear_backward(np.ones((2, 1)), cache)


def test_the_cpu_engine_runs_the_reference():
    assert fast.linear_forward is functional.linear_forward
    assert fast.linear_backward is functional.linear_backward


# ---------------------------------------------------------------- the layer


def test_layer_init_forward_and_accumulating_grads(rng):
    layer = Linear(50, 40, rng=3, dtype="float64")
    assert layer.params["weight"].shape == (40, 50) and not layer.params["bias"].any()
    assert abs(layer.params["weight"].std() - np.sqrt(2 / 50)) < 0.02  # He normal
    assert "bias" not in Linear(3, 2, bias=False).params
    x, dy = rng.standard_normal((4, 50)), rng.standard_normal((4, 40))
    y = layer.forward(x)
    assert y.dtype == np.float64
    _, cache = linear_forward(x, layer.params["weight"], layer.params["bias"])
    dx, dw, db = linear_backward(dy, cache)
    assert_close(layer.backward(dy), dx)
    layer.forward(x)
    layer.backward(dy)  # a second backward adds to the gradients, as PyTorch's do
    assert_close(layer.grads["weight"], 2 * dw)
    assert_close(layer.grads["bias"], 2 * db)
    assert Linear(3, 2).params["weight"].dtype == np.float32


# ---------------------------------------------------------------- bad inputs


def _good(rng):
    return dict(x=rng.standard_normal((2, 4)), w=rng.standard_normal((3, 4)),
                b=rng.standard_normal(3))


BAD_INPUTS = {
    "x's rank": ("x", lambda a: a[None], ValueError,
                 r"x must have rank 2 \(N, in_features\), got shape \(1, 2, 4\)"),
    "w's rank": ("w", lambda a: a[None], ValueError,
                 r"w must have rank 2 \(out_features, in_features\), got shape \(1, 3, 4\)"),
    "b's rank": ("b", lambda a: a[None], ValueError, r"b must have rank 1"),
    "features": ("w", lambda a: a[:, :3], ValueError,
                 r"x has 4 features but w of shape \(3, 3\) .* expects 3"),
    "b's length": ("b", lambda a: a[:2], ValueError, r"b must have shape \(3,\) to match w"),
    "integer x": ("x", lambda a: a.astype(np.int64), TypeError, r"x must be float32 or float64"),
    "float32 w": ("w", lambda a: a.astype(np.float32), TypeError,
                  r"inputs must share one dtype"),
    "a list": ("x", lambda a: a.tolist(), TypeError, r"x must be a NumPy or CuPy array"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_name_the_op_and_the_argument(case, rng):
    name, spoil, error, message = BAD_INPUTS[case]
    inputs = _good(rng)
    inputs[name] = spoil(inputs[name])
    with pytest.raises(error, match=rf"^linear: {message}"):
        linear_forward(inputs["x"], inputs["w"], inputs["b"])


def test_a_wrong_upstream_gradient_is_refused(rng):
    y, cache = linear_forward(**_good(rng))
    with pytest.raises(ValueError, match=r"^linear_backward: dy must have the output's shape"):
        linear_backward(np.ones((2, 4)), cache)
    with pytest.raises(TypeError, match=r"^linear_backward: dy must have the output's dtype"):
        linear_backward(y.astype(np.float32), cache)
