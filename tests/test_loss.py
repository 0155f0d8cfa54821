"""softmax_cross_entropy: finite differences, PyTorch, the weight-map semantics, dtypes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close, to_torch
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.gradcheck import check_gradients
from scratchseg.ops import softmax_cross_entropy_backward, softmax_cross_entropy_forward

pytestmark = pytest.mark.usefixtures("each_engine")


@st.composite
def loss_cases(draw, weight_map=None):
    """(N, K) or (N, K, H, W) logits with any mix of class_weight, weight_map, ignore_index."""
    n, k = draw(st.integers(1, 3)), draw(st.integers(2, 4))
    spatial = draw(st.sampled_from([(), (1, 1), (2, 3), (3, 2)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    logits = rng.standard_normal((n, k, *spatial)) * 2
    labels = rng.integers(0, k, (n, *spatial))
    ignore_index = draw(st.sampled_from([None, -100, -1, 255]))
    if ignore_index is not None:
        drop = rng.random(labels.shape) < 0.3
        drop.flat[0] = False  # at least one pixel counts
        labels[drop] = ignore_index
    use_map = draw(st.booleans()) if weight_map is None else weight_map
    return dict(
        logits=logits,
        labels=labels,
        class_weight=rng.uniform(0.2, 3.0, k) if draw(st.booleans()) else None,
        weight_map=rng.uniform(0.1, 5.0, labels.shape) if use_map else None,
        ignore_index=ignore_index,
        reduction=draw(st.sampled_from(["mean", "sum"])),
    )


def _forward(case):
    def forward(logits):
        return softmax_cross_entropy_forward(
            logits, case["labels"], class_weight=case["class_weight"],
            weight_map=case["weight_map"], ignore_index=case["ignore_index"],
            reduction=case["reduction"])

    return forward


def _torch_loss(case, logits_t):
    """DESIGN.md's semantics built from torch: reduction='none' (class-weighted) x the map."""
    labels_t = to_torch(case["labels"].astype(np.int64))
    weight_t = None if case["class_weight"] is None else to_torch(case["class_weight"])
    ignore = -100 if case["ignore_index"] is None else case["ignore_index"]
    if case["weight_map"] is None:
        return TF.cross_entropy(logits_t, labels_t, weight=weight_t, ignore_index=ignore,
                                reduction=case["reduction"])
    per_pixel = TF.cross_entropy(logits_t, labels_t, weight=weight_t, ignore_index=ignore,
                                 reduction="none")  # class_weight[y] * ce, 0 where ignored
    wmap = to_torch(case["weight_map"])
    total = (per_pixel * wmap).sum()
    if case["reduction"] == "sum":
        return total
    valid = case["labels"] != ignore
    safe_labels = np.where(valid, case["labels"], 0)
    class_w = 1.0 if case["class_weight"] is None else case["class_weight"][safe_labels]
    return total / float((class_w * case["weight_map"] * valid).sum())


@given(case=loss_cases())
def test_gradient_matches_finite_differences(case):
    check_gradients(_forward(case), softmax_cross_entropy_backward, [case["logits"]])


@given(case=loss_cases(weight_map=False), dloss=st.sampled_from([1.0, 2.5]))
def test_matches_torch_cross_entropy(case, dloss):
    logits_t = to_torch(case["logits"], requires_grad=True)
    loss_t = _torch_loss(case, logits_t)
    loss_t.backward(torch.tensor(dloss, dtype=torch.float64))
    loss, cache = _forward(case)(case["logits"])
    assert_close(loss, loss_t.item(), err_msg="loss")
    assert_close(softmax_cross_entropy_backward(dloss, cache), logits_t.grad.numpy(),
                 err_msg="dlogits")


@given(case=loss_cases(weight_map=True))
def test_weight_map_semantics_match_torch(case):
    """mean: sum(v ce) / sum(v), sum: sum(v ce), v = class_weight[y] * map, 0 where ignored."""
    logits_t = to_torch(case["logits"], requires_grad=True)
    loss_t = _torch_loss(case, logits_t)
    loss_t.backward()
    loss, cache = _forward(case)(case["logits"])
    assert_close(loss, loss_t.item(), err_msg="loss")
    assert_close(softmax_cross_entropy_backward(1.0, cache), logits_t.grad.numpy(),
                 err_msg="dlogits")


def test_weight_map_of_ones_is_no_weight_map(rng):
    logits = rng.standard_normal((2, 3, 4, 4))
    labels = rng.integers(0, 3, (2, 4, 4))
    cw = np.array([1.0, 2.0, 0.5])
    a, _ = softmax_cross_entropy_forward(logits, labels, cw)
    b, _ = softmax_cross_entropy_forward(logits, labels, cw, weight_map=np.ones((2, 4, 4)))
    assert_close(a, b)


def test_ignored_pixels_get_no_gradient(rng):
    logits = rng.standard_normal((1, 3, 2, 2))
    labels = np.array([[[0, 255], [2, 255]]], dtype=np.uint8)
    loss, cache = softmax_cross_entropy_forward(logits, labels, ignore_index=255)
    grad = softmax_cross_entropy_backward(1.0, cache)
    assert np.all(grad[0, :, 0, 1] == 0) and np.all(grad[0, :, 1, 1] == 0)
    expected, _ = softmax_cross_entropy_forward(logits[:, :, :, 0], labels[:, :, 0])
    assert_close(loss, expected)


@pytest.mark.parametrize("offset", [1e3, -1e4, 3e5])
def test_softmax_is_stable_for_large_logits(offset, rng):
    logits = rng.standard_normal((4, 5)) * 10 + offset
    labels = rng.integers(0, 5, 4)
    logits_t = to_torch(logits, requires_grad=True)
    loss_t = TF.cross_entropy(logits_t, to_torch(labels))
    loss_t.backward()
    loss, cache = softmax_cross_entropy_forward(logits, labels)
    grad = softmax_cross_entropy_backward(1.0, cache)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert_close(loss, loss_t.item(), rtol=1e-9)
    assert_close(grad, logits_t.grad.numpy(), rtol=1e-9)


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
def test_integer_label_dtypes(label_dtype, rng):
    logits = rng.standard_normal((2, 3, 2, 2))
    labels = rng.integers(0, 3, (2, 2, 2))
    reference, _ = softmax_cross_entropy_forward(logits, labels)
    loss, _ = softmax_cross_entropy_forward(logits, labels.astype(label_dtype))
    assert_close(loss, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "plain"])
def test_dtype_is_kept(dtype, reduction, weighted, rng):
    logits = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    labels = rng.integers(0, 3, (2, 4, 4))
    cw = np.array([0.5, 1.0, 2.0], dtype) if weighted else None
    wmap = rng.uniform(0.5, 2, (2, 4, 4)).astype(dtype) if weighted else None
    ignore = 1 if weighted else None
    loss, cache = softmax_cross_entropy_forward(logits, labels, cw, wmap, ignore_index=ignore,
                                                reduction=reduction)
    assert np.asarray(loss).dtype == dtype
    assert softmax_cross_entropy_backward(1.0, cache).dtype == dtype
    if dtype == np.float32:
        loss64, _ = softmax_cross_entropy_forward(
            logits.astype(np.float64), labels, None if cw is None else cw.astype(np.float64),
            None if wmap is None else wmap.astype(np.float64), ignore_index=ignore,
            reduction=reduction)
        assert np.isclose(loss, loss64, rtol=1e-5)


# ---------------------------------------------------------------- bad weights, nothing to average

BAD_WEIGHTS = {
    "weight_map NaN": ("weight_map", np.nan, "must be finite, got NaN or infinity"),
    "weight_map inf": ("weight_map", np.inf, "must be finite, got NaN or infinity"),
    "weight_map negative": ("weight_map", -0.5, "must be >= 0, got a minimum of -0.5"),
    "class_weight NaN": ("class_weight", np.nan, "must be finite, got NaN or infinity"),
    "class_weight -inf": ("class_weight", -np.inf, "must be finite, got NaN or infinity"),
    "class_weight negative": ("class_weight", -2.0, "must be >= 0, got a minimum of -2"),
}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_non_finite_or_negative_weights_are_refused(case, reduction, rng):
    """One bad weight anywhere, even on an ignored pixel, is an error, not a NaN loss."""
    name, value, message = BAD_WEIGHTS[case]
    logits = rng.standard_normal((2, 3, 4, 4))
    labels = rng.integers(0, 3, (2, 4, 4))
    labels[1, 3, 3] = 255
    weights = dict(class_weight=np.ones(3), weight_map=np.ones((2, 4, 4)))
    weights[name].flat[-1] = value
    with pytest.raises(ValueError, match=rf"^softmax_cross_entropy: {name} {message}"):
        softmax_cross_entropy_forward(logits, labels, ignore_index=255, reduction=reduction,
                                      **weights)


NOTHING_TO_AVERAGE = {
    "every pixel ignored": dict(labels=np.full((2, 3), 255), ignore_index=255),
    "zero weight map": dict(labels=np.zeros((2, 3), int), weight_map=np.zeros((2, 3))),
    "zero weight on the present classes": dict(labels=np.zeros((2, 3), int),
                                               class_weight=np.array([0.0, 1.0, 1.0])),
    "empty batch": dict(labels=np.zeros((0, 3), int)),
}


@pytest.mark.parametrize("case", list(NOTHING_TO_AVERAGE))
def test_mean_over_zero_total_weight_is_an_error_not_nan(case, rng):
    """DESIGN.md's mean is sum(v ce) / sum(v): with sum(v) = 0 there is nothing to average
    (PyTorch returns NaN); "sum" is still defined: 0, with a zero gradient."""
    kwargs = dict(NOTHING_TO_AVERAGE[case])
    labels = kwargs.pop("labels")
    logits = rng.standard_normal((labels.shape[0], 3, 3))
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: reduction 'mean' needs a "
                                         r"positive total weight sum\(v_i\).*got 0"):
        softmax_cross_entropy_forward(logits, labels, **kwargs)
    loss, cache = softmax_cross_entropy_forward(logits, labels, reduction="sum", **kwargs)
    assert loss == 0.0
    grad = softmax_cross_entropy_backward(1.0, cache)
    assert grad.shape == logits.shape and not grad.any()


def test_zero_weights_are_allowed_while_some_pixel_counts(rng):
    logits = rng.standard_normal((2, 3, 4))
    labels = rng.integers(0, 3, (2, 4))
    wmap = np.zeros((2, 4))
    wmap[0, 0] = 2.0
    loss, cache = softmax_cross_entropy_forward(logits, labels, weight_map=wmap)
    expected, _ = softmax_cross_entropy_forward(logits[:1, :, :1], labels[:1, :1])
    assert_close(loss, expected)
    assert not softmax_cross_entropy_backward(1.0, cache)[:, :, 1:].any()
