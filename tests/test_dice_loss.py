"""dice_loss: finite differences, PyTorch, perfect predictions, empty batches, bad inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, check_one_gradient, to_torch
from hypothesis import given
from hypothesis import strategies as st

import scratchseg
from scratchseg import fast, functional
from scratchseg.ops import dice_loss_backward, dice_loss_forward

pytestmark = pytest.mark.usefixtures("each_engine")


@st.composite
def dice_cases(draw, weight=None):
    """(N, K, H, W) logits, labels, and a weight (some zeros) or None, and eps."""
    n, k = draw(st.integers(1, 3)), draw(st.integers(2, 4))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    use_weight = draw(st.booleans()) if weight is None else weight
    weights = None
    if use_weight:
        weights = rng.uniform(0.1, 3.0, (n, h, w))
        weights[rng.random((n, h, w)) < 0.3] = 0.0  # ignored pixels
    return dict(logits=rng.standard_normal((n, k, h, w)) * 2,
                labels=rng.integers(0, k, (n, h, w)),
                weight=weights,
                eps=draw(st.sampled_from([1.0, 1e-3, 0.5])))


def _forward(case):
    def forward(logits):
        return dice_loss_forward(logits, case["labels"], weight=case["weight"], eps=case["eps"])

    return forward


def _torch_dice(logits_t, labels, weight, eps):
    """The same soft Dice, written independently on torch's softmax, one_hot and autograd."""
    probs = torch.softmax(logits_t, dim=1)
    k = logits_t.shape[1]
    onehot = TF.one_hot(to_torch(labels.astype(np.int64)), k).permute(0, 3, 1, 2).double()
    v = torch.ones_like(onehot[:, :1]) if weight is None else to_torch(weight)[:, None]
    intersection = (v * probs * onehot).sum(dim=(0, 2, 3))
    total = (v * probs).sum(dim=(0, 2, 3)) + (v * onehot).sum(dim=(0, 2, 3))
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


# ---------------------------------------------------------------- gradients and PyTorch


@given(case=dice_cases())
def test_gradient_matches_finite_differences(case):
    """The gradients are small (each ratio is divided by K and by S_k + eps): tolerances
    far below check_gradients' defaults, so a 1% error fails."""
    check_one_gradient(_forward(case), lambda dy, c: (dice_loss_backward(dy, c),),
                       [case["logits"]], 0, atol=1e-8, rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted with zeros"])
def test_gradient_matches_finite_differences_fixed(weighted, rng):
    case = dict(logits=rng.standard_normal((2, 3, 4, 5)), labels=rng.integers(0, 3, (2, 4, 5)),
                weight=None, eps=1.0)
    if weighted:
        case["weight"] = rng.uniform(0.5, 2.0, (2, 4, 5))
        case["weight"][0, :2] = 0.0
    report = check_one_gradient(_forward(case), lambda dy, c: (dice_loss_backward(dy, c),),
                                [case["logits"]], 0, atol=1e-8, rtol=1e-5)
    assert report.max_abs_gradient[0] > 1e-4  # the check compared a real gradient


@given(case=dice_cases(), dloss=st.sampled_from([1.0, 2.5, -0.75]))
def test_matches_torch_forward_and_backward(case, dloss):
    logits_t = to_torch(case["logits"], requires_grad=True)
    loss_t = _torch_dice(logits_t, case["labels"], case["weight"], case["eps"])
    loss_t.backward(torch.tensor(dloss, dtype=torch.float64))
    loss, cache = _forward(case)(case["logits"])
    assert_close(loss, loss_t.item(), rtol=1e-12, err_msg="loss")
    assert_close(dice_loss_backward(dloss, cache), logits_t.grad.numpy(), rtol=1e-12,
                 err_msg="dlogits")


def test_zero_weight_pixels_are_ignored(rng):
    """A zero-weighted pixel adds nothing to the loss and gets no gradient."""
    logits = rng.standard_normal((2, 3, 4, 4))
    labels = rng.integers(0, 3, (2, 4, 4))
    weight = np.ones((2, 4, 4))
    weight[1] = 0.0
    loss, cache = dice_loss_forward(logits, labels, weight=weight)
    assert not dice_loss_backward(1.0, cache)[1].any()
    expected, _ = dice_loss_forward(logits[:1], labels[:1])
    assert_close(loss, expected)
    unweighted, _ = dice_loss_forward(logits, labels, weight=np.ones((2, 4, 4)))
    assert_close(unweighted, dice_loss_forward(logits, labels)[0])


# ---------------------------------------------------------------- values at the edges


def test_perfect_prediction_gives_a_loss_near_zero(rng):
    labels = rng.integers(0, 3, (2, 5, 5))
    labels[0, 0, :3] = [0, 1, 2]  # every class present
    logits = 60.0 * (labels[:, None] == np.arange(3)[None, :, None, None])
    loss, cache = dice_loss_forward(logits, labels)
    assert 0.0 <= loss < 1e-12
    assert np.abs(dice_loss_backward(1.0, cache)).max() < 1e-12
    wrong, _ = dice_loss_forward(-logits, labels)
    assert wrong > 0.9  # and a confident wrong prediction is near 1


@pytest.mark.parametrize("offset", [1e3, -1e4, 3e5])
def test_softmax_is_stable_for_large_logits(offset, rng):
    logits = rng.standard_normal((2, 3, 3, 3)) * 10
    labels = rng.integers(0, 3, (2, 3, 3))
    loss, cache = dice_loss_forward(logits + offset, labels)
    grad = dice_loss_backward(1.0, cache)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    expected, expected_cache = dice_loss_forward(logits, labels)
    assert_close(loss, expected, rtol=1e-9)
    assert_close(grad, dice_loss_backward(1.0, expected_cache), rtol=1e-6)


@pytest.mark.parametrize("case", ["empty batch", "every weight zero"])
def test_nothing_to_compare_gives_loss_zero_not_nan(case, rng):
    """Where S_k = 0 every ratio is eps / eps = 1: loss 0, a zero gradient, no NaN."""
    n = 0 if case == "empty batch" else 2
    logits = rng.standard_normal((n, 3, 4, 4))
    labels = rng.integers(0, 3, (n, 4, 4))
    weight = np.zeros((n, 4, 4)) if case == "every weight zero" else None
    loss, cache = dice_loss_forward(logits, labels, weight=weight)
    assert loss == 0.0
    grad = dice_loss_backward(1.0, cache)
    assert grad.shape == logits.shape and not grad.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    logits = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    labels = rng.integers(0, 3, (2, 4, 4)).astype(np.uint8)
    weight = rng.uniform(0.5, 2, (2, 4, 4)).astype(dtype)
    loss, cache = dice_loss_forward(logits, labels, weight=weight, eps=np.float64(1.0))
    assert np.asarray(loss).dtype == dtype
    assert dice_loss_backward(1.0, cache).dtype == dtype
    loss64, _ = dice_loss_forward(logits.astype(np.float64), labels,
                                  weight=weight.astype(np.float64))
    assert np.isclose(loss, loss64, rtol=1e-5)


def test_dloss_may_be_a_0d_array_like_the_loss(rng):
    logits = rng.standard_normal((1, 2, 3, 3))
    labels = rng.integers(0, 2, (1, 3, 3))
    loss, cache = dice_loss_forward(logits, labels)
    assert_close(dice_loss_backward(np.asarray(2.0), cache), 2 * dice_loss_backward(1.0, cache))
    with pytest.raises(ValueError, match=r"^dice_loss_backward: dy must have the output's shape"):
        dice_loss_backward(np.ones(1), cache)


def test_no_grad_keeps_no_cache(rng):
    logits = rng.standard_normal((1, 2, 3, 3))
    with scratchseg.no_grad():
        _, cache = dice_loss_forward(logits, rng.integers(0, 2, (1, 3, 3)))
    assert cache is None
    with pytest.raises(RuntimeError, match=r"^dice_loss_backward: no cache"):
        dice_loss_backward(1.0, cache)


def test_the_cpu_engine_runs_the_reference():
    assert fast.dice_loss_forward is functional.dice_loss_forward
    assert fast.dice_loss_backward is functional.dice_loss_backward


# ---------------------------------------------------------------- bad inputs


def _good(rng):
    return dict(logits=rng.standard_normal((2, 3, 4, 4)), labels=rng.integers(0, 3, (2, 4, 4)),
                weight=rng.uniform(0.5, 2.0, (2, 4, 4)))


BAD_INPUTS = {
    "label too large": ("labels", lambda a: np.where(a == 0, 3, a), ValueError,
                        r"labels must lie in \[0, 3\).*got values in"),
    "negative label": ("labels", lambda a: np.where(a == 0, -1, a), ValueError,
                       r"labels must lie in \[0, 3\)"),
    "labels' shape": ("labels", lambda a: a[:, :3], ValueError,
                      r"labels must have shape \(2, 4, 4\).*got \(2, 3, 4\)"),
    "float labels": ("labels", lambda a: a.astype(np.float64), TypeError,
                     r"labels must be an integer array"),
    "logits' rank": ("logits", lambda a: a[:, :, 0], ValueError,
                     r"logits must have rank 4 \(N, C, H, W\), got shape \(2, 3, 4\)"),
    "integer logits": ("logits", lambda a: a.astype(np.int64), TypeError,
                       r"logits must be float32 or float64"),
    "NaN logits": ("logits", lambda a: np.where(a > 1, np.nan, a), ValueError,
                   r"logits contain NaN or infinity"),
    "weight's shape": ("weight", lambda a: a[:1], ValueError,
                       r"weight must have the labels' shape \(2, 4, 4\), got \(1, 4, 4\)"),
    "weight's rank": ("weight", lambda a: a[:, None], ValueError, r"weight must have rank 3"),
    "negative weight": ("weight", lambda a: np.where(a > 1, -0.5, a), ValueError,
                        r"weight must be >= 0, got a minimum of -0.5"),
    "NaN weight": ("weight", lambda a: np.where(a > 1, np.nan, a), ValueError,
                   r"weight must be finite"),
    "float32 weight": ("weight", lambda a: a.astype(np.float32), TypeError,
                       r"inputs must share one dtype"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_name_the_op_and_the_argument(case, rng):
    name, spoil, error, message = BAD_INPUTS[case]
    inputs = _good(rng)
    inputs[name] = spoil(inputs[name])
    with pytest.raises(error, match=rf"^dice_loss: {message}"):
        dice_loss_forward(inputs["logits"], inputs["labels"], weight=inputs["weight"])


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf"), "1", None, True])
def test_eps_must_be_positive_and_finite(eps, rng):
    inputs = _good(rng)
    with pytest.raises(ValueError, match=r"^dice_loss: eps must be a finite number > 0"):
        dice_loss_forward(inputs["logits"], inputs["labels"], eps=eps)
