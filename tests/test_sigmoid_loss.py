"""sigmoid_cross_entropy: finite differences, PyTorch's BCE with logits, ignored anchors,
large logits, bad inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, check_one_gradient, to_torch
from hypothesis import given
from hypothesis import strategies as st

import scratchseg
from scratchseg import fast, functional
from scratchseg.ops import sigmoid_cross_entropy_backward, sigmoid_cross_entropy_forward

pytestmark = pytest.mark.usefixtures("each_engine")


@st.composite
def sigmoid_cases(draw):
    """Logits of rank 1 to 3, labels 0, 1 or ignore_index (-1, 255 or None)."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    ignore_index = draw(st.sampled_from([-1, 255, None]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    labels = rng.integers(0, 2, shape)
    if ignore_index is not None:
        labels[rng.random(shape) < 0.3] = ignore_index
    return dict(logits=rng.standard_normal(shape) * 3, labels=labels,
                ignore_index=ignore_index, reduction=draw(st.sampled_from(["mean", "sum"])))


def _forward(case):
    return lambda z: sigmoid_cross_entropy_forward(z, case["labels"],
                                                   ignore_index=case["ignore_index"],
                                                   reduction=case["reduction"])


def _backward(dloss, cache):
    return (sigmoid_cross_entropy_backward(dloss, cache),)


def _kept(case):
    if case["ignore_index"] is None:
        return np.ones(case["labels"].shape, dtype=bool)
    return case["labels"] != case["ignore_index"]


@given(case=sigmoid_cases())
def test_gradient_matches_finite_differences(case):
    check_one_gradient(_forward(case), _backward, [case["logits"]], 0, atol=1e-8, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_is_checked_with_ignored_anchors(reduction, rng):
    case = dict(logits=rng.standard_normal((3, 5)), labels=rng.integers(0, 2, (3, 5)),
                ignore_index=-1, reduction=reduction)
    case["labels"][0] = -1
    report = check_one_gradient(_forward(case), _backward, [case["logits"]], 0, atol=1e-8,
                                rtol=1e-5)
    assert report.max_abs_gradient[0] > 1e-3  # times a random upstream scalar


@given(case=sigmoid_cases(), dloss=st.sampled_from([1.0, 2.5, -0.75]))
def test_matches_torch_on_the_kept_elements(case, dloss):
    kept = _kept(case)
    if not kept.any():
        return  # torch's mean of nothing is NaN; covered below
    logits_t = to_torch(case["logits"], requires_grad=True)
    loss_t = TF.binary_cross_entropy_with_logits(logits_t[to_torch(kept)],
                                                 to_torch(case["labels"][kept] == 1).double(),
                                                 reduction=case["reduction"])
    loss_t.backward(torch.tensor(dloss, dtype=torch.float64))
    loss, cache = _forward(case)(case["logits"])
    assert loss.shape == ()
    assert_close(loss, loss_t.item(), rtol=1e-12)
    dlogits = sigmoid_cross_entropy_backward(dloss, cache)
    assert_close(dlogits, logits_t.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert not dlogits[~kept].any()


def test_large_logits_stay_finite_and_exact():
    logits = np.array([1000.0, -1000.0, 1000.0, -1000.0, 40.0, -40.0])
    labels = np.array([1, 0, 0, 1, 1, 0])
    loss, cache = sigmoid_cross_entropy_forward(logits, labels, reduction="sum")
    assert loss == 2000.0 + 2 * np.log1p(np.exp(-40.0))
    grad = sigmoid_cross_entropy_backward(1.0, cache)
    assert np.isfinite(grad).all()
    assert grad[:4].tolist() == [0.0, 0.0, 1.0, -1.0]
    logits_t = to_torch(logits, requires_grad=True)
    TF.binary_cross_entropy_with_logits(logits_t, to_torch(labels).double(),
                                        reduction="sum").backward()
    assert_close(grad, logits_t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_every_anchor_ignored_gives_zero_not_nan(reduction, rng):
    logits = rng.standard_normal((2, 3))
    loss, cache = sigmoid_cross_entropy_forward(logits, np.full((2, 3), -1), reduction=reduction)
    assert loss == 0.0
    grad = sigmoid_cross_entropy_backward(1.0, cache)
    assert grad.shape == (2, 3) and not grad.any()
    loss, cache = sigmoid_cross_entropy_forward(np.zeros(0), np.zeros(0, dtype=np.int64))
    assert loss == 0.0 and sigmoid_cross_entropy_backward(1.0, cache).shape == (0,)


def test_mean_divides_by_the_kept_count(rng):
    logits, labels = rng.standard_normal(6), np.array([1, 0, -1, -1, 1, 1])
    total, _ = sigmoid_cross_entropy_forward(logits, labels, reduction="sum")
    mean, _ = sigmoid_cross_entropy_forward(logits, labels)
    assert_close(mean, total / 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    logits = rng.standard_normal((4, 5)).astype(dtype)
    labels = rng.integers(0, 2, (4, 5)).astype(np.uint8)
    labels[0] = 255
    loss, cache = sigmoid_cross_entropy_forward(logits, labels, ignore_index=255)
    assert loss.dtype == dtype and loss.shape == ()
    assert sigmoid_cross_entropy_backward(1.0, cache).dtype == dtype


def test_dloss_may_be_a_0d_array_like_the_loss(rng):
    logits, labels = rng.standard_normal(5), np.array([0, 1, -1, 1, 0])
    loss, cache = sigmoid_cross_entropy_forward(logits, labels)
    assert_close(sigmoid_cross_entropy_backward(np.asarray(2.0), cache),
                 2 * sigmoid_cross_entropy_backward(1.0, cache))
    with pytest.raises(TypeError, match=r"^sigmoid_cross_entropy_backward: dy must have the "
                                        r"output's dtype float64, got float32"):
        sigmoid_cross_entropy_backward(np.asarray(2.0, dtype=np.float32), cache)


def test_no_grad_keeps_no_cache(rng):
    with scratchseg.no_grad():
        _, cache = sigmoid_cross_entropy_forward(rng.standard_normal(3), np.array([0, 1, 1]))
    assert cache is None
    with pytest.raises(RuntimeError, match=r"^sigmoid_cross_entropy_backward: no cache"):
        sigmoid_cross_entropy_backward(1.0, cache)


def test_the_cpu_engine_runs_the_reference():
    assert fast.sigmoid_cross_entropy_forward is functional.sigmoid_cross_entropy_forward
    assert fast.sigmoid_cross_entropy_backward is functional.sigmoid_cross_entropy_backward


# ---------------------------------------------------------------- bad inputs


BAD_INPUTS = {
    "label 2": ("labels", lambda a: np.where(a == 0, 2, a), ValueError,
                r"labels must be 0, 1 or ignore_index \(-1\), got 2"),
    "labels -2 and 7": ("labels", lambda a: np.concatenate([a[:, :2], [[-2, 7]] * 3], 1),
                        ValueError, r"labels must be 0, 1 or ignore_index \(-1\), got -2, 7"),
    "labels' shape": ("labels", lambda a: a[:2], ValueError,
                      r"labels must have the logits' shape \(3, 4\), got \(2, 4\)"),
    "float labels": ("labels", lambda a: a.astype(np.float64), TypeError,
                     r"labels must be an integer array of 0, 1 and ignore_index, got float64"),
    "integer logits": ("logits", lambda a: a.astype(np.int64), TypeError,
                       r"logits must be float32 or float64"),
    "NaN logits": ("logits", lambda a: np.where(a > 1, np.nan, a), ValueError,
                   r"logits contain NaN or infinity"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_name_the_op_and_the_argument(case, rng):
    name, spoil, error, message = BAD_INPUTS[case]
    inputs = dict(logits=rng.standard_normal((3, 4)) * 2, labels=rng.integers(-1, 2, (3, 4)))
    inputs[name] = spoil(inputs[name])
    with pytest.raises(error, match=rf"^sigmoid_cross_entropy: {message}"):
        sigmoid_cross_entropy_forward(inputs["logits"], inputs["labels"])


@pytest.mark.parametrize("options, message", [
    (dict(reduction="none"), r"reduction must be one of \('mean', 'sum'\), got 'none'"),
    (dict(ignore_index=1), r"ignore_index must be None or an int other than 0 and 1, got 1"),
    (dict(ignore_index=-0.5), r"ignore_index must be None or an int"),
])
def test_bad_options(options, message, rng):
    with pytest.raises(ValueError, match=rf"^sigmoid_cross_entropy: {message}"):
        sigmoid_cross_entropy_forward(rng.standard_normal(4), np.array([0, 1, 1, 0]), **options)


def test_labels_outside_are_refused_without_ignore_index():
    with pytest.raises(ValueError, match=r"^sigmoid_cross_entropy: labels must be 0, 1 or "
                                         r"ignore_index \(None\), got -1"):
        sigmoid_cross_entropy_forward(np.zeros(3), np.array([0, 1, -1]), ignore_index=None)
