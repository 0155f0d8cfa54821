"""smooth_l1: finite differences, PyTorch's smooth_l1_loss, beta = 0, weights, bad inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, check_one_gradient, to_torch
from hypothesis import given
from hypothesis import strategies as st

import scratchseg
from scratchseg import fast, functional
from scratchseg.ops import smooth_l1_backward, smooth_l1_forward

pytestmark = pytest.mark.usefixtures("each_engine")


@st.composite
def smooth_l1_cases(draw):
    """Differences at least 0.05 from the kinks |d| = beta (and d = 0 for beta = 0), on both
    sides of beta; some weights, some zero; both reductions; shapes of rank 1 to 3."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    beta = draw(st.sampled_from([1.0, 0.5, 1 / 9, 0.0, 2.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    target = rng.standard_normal(shape) * 2
    scale = max(beta, 0.2)
    magnitude = rng.choice([0.1, 0.4, 0.7, 1.3, 2.0, 3.5], shape) * scale
    x = target + magnitude * rng.choice([-1.0, 1.0], shape)
    weight = None
    if draw(st.booleans()):
        weight = rng.uniform(0.0, 3.0, shape)
        weight[rng.random(shape) < 0.3] = 0.0
    return dict(x=x, target=target, beta=beta, weight=weight,
                reduction=draw(st.sampled_from(["sum", "mean"])))


def _forward(case):
    return lambda x: smooth_l1_forward(x, case["target"], beta=case["beta"],
                                       weight=case["weight"], reduction=case["reduction"])


def _backward(dloss, cache):
    return (smooth_l1_backward(dloss, cache),)


def torch_smooth_l1(xt, case):
    per_element = TF.smooth_l1_loss(xt, to_torch(case["target"]), beta=case["beta"],
                                    reduction="none")
    if case["weight"] is not None:
        per_element = per_element * to_torch(case["weight"])
    return per_element.sum() if case["reduction"] == "sum" else per_element.mean()


@given(case=smooth_l1_cases())
def test_gradient_matches_finite_differences(case):
    check_one_gradient(_forward(case), _backward, [case["x"]], 0)


@pytest.mark.parametrize("beta, reduction", [(1.0, "sum"), (0.5, "mean"), (0.0, "sum")])
def test_gradient_is_checked_on_both_branches(beta, reduction, rng):
    """Differences inside and outside beta, weighted: the check sees both pieces."""
    d = np.array([-2.5, -0.8, -0.3, -0.05, 0.2, 0.45, 0.9, 3.0]) * max(beta, 0.5)
    case = dict(target=rng.standard_normal(8), beta=beta, weight=rng.uniform(0.5, 2.0, 8),
                reduction=reduction)
    report = check_one_gradient(_forward(case), _backward, [case["target"] + d], 0)
    assert report.max_abs_gradient[0] > 0.01  # times a random upstream scalar


@given(case=smooth_l1_cases(), dloss=st.sampled_from([1.0, 2.5, -0.75]))
def test_matches_torch_forward_and_backward(case, dloss):
    xt = to_torch(case["x"], requires_grad=True)
    loss_t = torch_smooth_l1(xt, case)
    loss_t.backward(torch.tensor(dloss, dtype=torch.float64))
    loss, cache = _forward(case)(case["x"])
    assert loss.shape == ()
    assert_close(loss, loss_t.item(), rtol=1e-12)
    assert_close(smooth_l1_backward(dloss, cache), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_the_two_pieces_and_plain_l1():
    x, target = np.array([0.5, -0.5, 2.0, -3.0]), np.zeros(4)
    loss, cache = smooth_l1_forward(x, target)
    assert loss == 0.125 + 0.125 + 1.5 + 2.5
    assert smooth_l1_backward(1.0, cache).tolist() == [0.5, -0.5, 1.0, -1.0]
    loss, cache = smooth_l1_forward(x, target, beta=0)
    assert loss == 6.0 and smooth_l1_backward(1.0, cache).tolist() == [1.0, -1.0, 1.0, -1.0]
    loss, cache = smooth_l1_forward(np.zeros(2), np.zeros(2), beta=0)
    assert loss == 0.0 and not smooth_l1_backward(1.0, cache).any()  # sign(0) = 0


def test_mean_divides_by_the_element_count_and_empty_gives_zero(rng):
    x, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    total, _ = smooth_l1_forward(x, target)
    mean, cache = smooth_l1_forward(x, target, reduction="mean")
    assert_close(mean, total / 12)
    loss, cache = smooth_l1_forward(np.zeros((0, 4)), np.zeros((0, 4)), reduction="mean")
    assert loss == 0.0 and not np.isnan(loss)
    assert smooth_l1_backward(1.0, cache).shape == (0, 4)


def test_zero_weights_ignore_elements(rng):
    x, target = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    weight = np.ones((4, 4))
    weight[2:] = 0.0
    loss, cache = smooth_l1_forward(x, target, weight=weight)
    assert_close(loss, smooth_l1_forward(x[:2], target[:2])[0])
    assert not smooth_l1_backward(1.0, cache)[2:].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x, target = (rng.standard_normal((4, 4)).astype(dtype) for _ in range(2))
    loss, cache = smooth_l1_forward(x, target, weight=np.ones((4, 4), dtype), reduction="mean")
    assert loss.dtype == dtype and loss.shape == ()
    assert smooth_l1_backward(np.float64(1.0), cache).dtype == dtype


def test_dloss_may_be_a_0d_array_like_the_loss(rng):
    x, target = rng.standard_normal(5), rng.standard_normal(5)
    loss, cache = smooth_l1_forward(x, target)
    assert_close(smooth_l1_backward(np.asarray(2.0), cache), 2 * smooth_l1_backward(1.0, cache))
    with pytest.raises(ValueError, match=r"^smooth_l1_backward: dy must have the output's shape"):
        smooth_l1_backward(np.ones(1), cache)


def test_no_grad_keeps_no_cache(rng):
    with scratchseg.no_grad():
        _, cache = smooth_l1_forward(rng.standard_normal(3), rng.standard_normal(3))
    assert cache is None
    with pytest.raises(RuntimeError, match=r"^smooth_l1_backward: no cache"):
        smooth_l1_backward(1.0, cache)


def test_the_cpu_engine_runs_the_reference():
    assert fast.smooth_l1_forward is functional.smooth_l1_forward
    assert fast.smooth_l1_backward is functional.smooth_l1_backward


# ---------------------------------------------------------------- bad inputs


def _good(rng):
    return dict(x=rng.standard_normal((3, 4)), target=rng.standard_normal((3, 4)),
                weight=rng.uniform(0.5, 2.0, (3, 4)))


BAD_INPUTS = {
    "target's shape": ("target", lambda a: a[:2], ValueError,
                       r"target must have x's shape \(3, 4\), got \(2, 4\)"),
    "weight's shape": ("weight", lambda a: a.T, ValueError,
                       r"weight must have x's shape \(3, 4\), got \(4, 3\)"),
    "negative weight": ("weight", lambda a: np.where(a > 1, -0.5, a), ValueError,
                        r"weight must be >= 0, got a minimum of -0.5"),
    "NaN weight": ("weight", lambda a: np.where(a > 1, np.nan, a), ValueError,
                   r"weight must be finite"),
    "NaN x": ("x", lambda a: np.where(a > 1, np.nan, a), ValueError,
              r"x contains NaN or infinity"),
    "infinite target": ("target", lambda a: np.where(a > 1, np.inf, a), ValueError,
                        r"target contains NaN or infinity"),
    "float32 target": ("target", lambda a: a.astype(np.float32), TypeError,
                       r"inputs must share one dtype"),
    "integer x": ("x", lambda a: a.astype(np.int64), TypeError, r"x must be float32 or float64"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_name_the_op_and_the_argument(case, rng):
    name, spoil, error, message = BAD_INPUTS[case]
    inputs = _good(rng)
    inputs[name] = spoil(inputs[name])
    with pytest.raises(error, match=rf"^smooth_l1: {message}"):
        smooth_l1_forward(inputs["x"], inputs["target"], weight=inputs["weight"])


@pytest.mark.parametrize("options, message", [
    (dict(reduction="none"), r"reduction must be one of \('mean', 'sum'\), got 'none'"),
    (dict(beta=-1.0), r"beta must be a finite number >= 0, got -1.0"),
    (dict(beta=float("inf")), r"beta must be a finite number >= 0"),
])
def test_bad_options(options, message, rng):
    inputs = _good(rng)
    with pytest.raises(ValueError, match=rf"^smooth_l1: {message}"):
        smooth_l1_forward(inputs["x"], inputs["target"], **options)
