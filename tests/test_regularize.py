"""dropout and batch_norm2d: finite differences, PyTorch, running statistics, dtypes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, check_one_gradient, to_torch
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.gradcheck import check_gradients
from scratchseg.ops import (
    batch_norm2d_backward,
    batch_norm2d_forward,
    dropout_backward,
    dropout_forward,
)

pytestmark = pytest.mark.usefixtures("each_engine")

# ---------------------------------------------------------------- dropout


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
       p=st.floats(0.0, 0.9), seed=st.integers(0, 2**31))
def test_dropout_gradient_matches_finite_differences(shape, p, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    # a fresh generator with one seed per call: every perturbed forward draws the same mask
    check_gradients(lambda a: dropout_forward(a, p, np.random.default_rng(seed)),
                    dropout_backward, [x])


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_dropout_statistics_match_torch(p):
    size = 200_000
    x = np.ones(size)
    y, _ = dropout_forward(x, p, np.random.default_rng(0))
    torch.manual_seed(0)
    y_t = TF.dropout(to_torch(x), p, training=True).numpy()
    tolerance = 6 * np.sqrt(p * (1 - p) / size)
    for out in (y, y_t):
        assert abs(np.mean(out == 0) - p) < tolerance
        assert abs(out.mean() - 1.0) < tolerance / (1 - p)  # inverted dropout keeps the mean
    # the same two values: 0 and the scale 1 / (1 - p)
    assert np.allclose(np.unique(y), np.unique(y_t), rtol=1e-12)
    assert np.allclose(np.unique(y), [0.0, 1.0 / (1.0 - p)], rtol=1e-12)


def test_dropout_backward_is_dy_times_mask_times_scale(rng):
    p = 0.4
    x = rng.uniform(0.5, 1.5, (3, 4, 5, 5))  # nonzero, so y == 0 exactly where dropped
    y, cache = dropout_forward(x, p, np.random.default_rng(5))
    mask = y != 0
    assert 0 < mask.mean() < 1
    assert_close(y, x * mask / (1 - p))
    dy = rng.standard_normal(x.shape)
    assert_close(dropout_backward(dy, cache), dy * mask / (1 - p))


def test_dropout_eval_and_p_zero_are_the_identity(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    dy = rng.standard_normal(x.shape)
    for p, training in ((0.5, False), (0.0, True)):
        y, cache = dropout_forward(x, p, np.random.default_rng(0), training=training)
        assert np.array_equal(y, x)
        assert np.array_equal(dropout_backward(dy, cache), dy)


def test_dropout_mask_is_fixed_by_the_generator(rng):
    x = rng.standard_normal((4, 4, 6, 6))
    a, _ = dropout_forward(x, 0.5, np.random.default_rng(3))
    b, _ = dropout_forward(x, 0.5, np.random.default_rng(3))
    generator = np.random.default_rng(3)
    c, _ = dropout_forward(x, 0.5, generator)
    d, _ = dropout_forward(x, 0.5, generator)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(c, d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_keeps_dtype(dtype, rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    y, cache = dropout_forward(x, 0.3, np.random.default_rng(0))
    assert y.dtype == dtype
    assert dropout_backward(np.ones_like(y), cache).dtype == dtype


# ---------------------------------------------------------------- batch_norm2d


@st.composite
def batch_norm_cases(draw):
    n, c = draw(st.integers(1, 3), label="n"), draw(st.integers(1, 3), label="c")
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if n * h * w < 3:
        h += 2
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    return dict(
        x=rng.standard_normal((n, c, h, w)) * rng.uniform(0.5, 3) + rng.uniform(-2, 2),
        gamma=rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c),
        beta=rng.standard_normal(c),
        running_mean=rng.standard_normal(c),
        running_var=rng.uniform(0.5, 2.0, c),
        momentum=draw(st.sampled_from([0.1, 0.3, 1.0])),
    )


def _bn_forward(case, training):
    def forward(x, gamma, beta):
        # fresh copies of the running statistics: the forward updates them in place
        return batch_norm2d_forward(x, gamma, beta, case["running_mean"].copy(),
                                    case["running_var"].copy(), training=training,
                                    momentum=case["momentum"])

    return forward


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("gradient", ["dx", "dgamma", "dbeta"])
@given(case=batch_norm_cases())
def test_batch_norm2d_gradients_match_finite_differences(case, gradient, training):
    inputs = [case["x"], case["gamma"], case["beta"]]
    check_one_gradient(_bn_forward(case, training), batch_norm2d_backward, inputs,
                       ["dx", "dgamma", "dbeta"].index(gradient))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@given(case=batch_norm_cases())
def test_batch_norm2d_matches_torch_including_running_statistics(case, training):
    momentum, eps = case["momentum"], 1e-5
    mean_t, var_t = to_torch(case["running_mean"]), to_torch(case["running_var"])
    mean, var = case["running_mean"].copy(), case["running_var"].copy()
    x2 = np.random.default_rng(1).standard_normal(case["x"].shape) + 0.5
    for step, x in enumerate((case["x"], x2)):  # two steps: the update compounds
        x_t = to_torch(x, requires_grad=True)
        g_t = to_torch(case["gamma"], requires_grad=True)
        b_t = to_torch(case["beta"], requires_grad=True)
        y_t = TF.batch_norm(x_t, mean_t, var_t, g_t, b_t, training=training,
                            momentum=momentum, eps=eps)
        dy = np.random.default_rng(step).standard_normal(x.shape)
        y_t.backward(to_torch(dy))
        y, cache = batch_norm2d_forward(x, case["gamma"], case["beta"], mean, var,
                                        training=training, momentum=momentum, eps=eps)
        assert_close(y, y_t.detach().numpy(), err_msg="y")
        dx, dgamma, dbeta = batch_norm2d_backward(dy, cache)
        assert_close(dx, x_t.grad.numpy(), err_msg="dx")
        assert_close(dgamma, g_t.grad.numpy(), err_msg="dgamma")
        assert_close(dbeta, b_t.grad.numpy(), err_msg="dbeta")
        assert_close(mean, mean_t.numpy(), err_msg="running_mean")
        assert_close(var, var_t.numpy(), err_msg="running_var")
    if not training:
        assert np.array_equal(mean, case["running_mean"])
        assert np.array_equal(var, case["running_var"])


def test_running_variance_is_unbiased(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    mean, var = np.zeros(3), np.ones(3)
    batch_norm2d_forward(x, np.ones(3), np.zeros(3), mean, var, momentum=1.0)
    assert_close(mean, x.mean(axis=(0, 2, 3)))
    assert_close(var, x.var(axis=(0, 2, 3), ddof=1))


def test_eval_normalises_with_the_running_statistics(rng):
    x = rng.standard_normal((2, 2, 3, 3))
    mean, var = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    y, _ = batch_norm2d_forward(x, np.ones(2), np.zeros(2), mean, var, training=False, eps=0.0)
    assert_close(y, (x - mean[:, None, None]) / np.sqrt(var)[:, None, None])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm2d_keeps_dtype(dtype, training, rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    gamma, beta = np.ones(3, dtype), np.zeros(3, dtype)
    mean, var = np.zeros(3, dtype), np.ones(3, dtype)
    y, cache = batch_norm2d_forward(x, gamma, beta, mean, var, training=training)
    assert y.dtype == dtype and mean.dtype == dtype and var.dtype == dtype
    for grad in batch_norm2d_backward(np.ones_like(y), cache):
        assert grad.dtype == dtype


def test_dropout_needs_a_generator_on_the_input_device():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="^dropout: training needs rng, a numpy.random.Generator"):
        dropout_forward(x, 0.5, None)
    y, cache = dropout_forward(x, 0.5, None, training=False)  # eval draws nothing
    assert y is x and np.array_equal(dropout_backward(np.ones_like(x), cache), x)

    class CupyDraws:
        __module__ = "cupy._core.core"  # what the backend's module-name test sees

        def __ge__(self, p):
            return self

    class CupyGenerator:
        def random(self, shape, dtype):
            return CupyDraws()

    with pytest.raises(TypeError, match="^dropout: rng draws cupy arrays but x is a numpy "
                                        "array; pass a numpy.random.Generator"):
        dropout_forward(x, 0.5, CupyGenerator())
