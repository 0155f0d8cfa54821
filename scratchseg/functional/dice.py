"""Soft Dice loss over the class axis: one overlap ratio per class, over the whole batch."""

import math
import numbers

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_same_dtype,
    check_upstream,
)
from scratchseg.functional.loss import _check_loss_inputs, _check_weights
from scratchseg.grad_mode import saved_for_backward

OP = "dice_loss"


def _check_dice_inputs(logits, labels, weight, eps):
    """loss.py's logits and labels checks under this op's name, then weight and eps."""
    check_float_array(logits, "logits", OP, ndim=4)
    if logits.shape[1] < 1:
        raise ValueError(f"{OP}: logits must have at least one class (K >= 1), got shape "
                         f"{tuple(logits.shape)}")
    _check_loss_inputs(logits, labels, None, None, None, "mean", op=OP)
    if weight is not None:
        check_float_array(weight, "weight", OP, ndim=3)
        if weight.shape != labels.shape:
            raise ValueError(f"{OP}: weight must have the labels' shape "
                             f"{tuple(labels.shape)}, got {tuple(weight.shape)}")
        check_same_dtype(OP, logits=logits, weight=weight)
        _check_weights(OP, "weight", weight, get_array_module(logits))
    if (not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not math.isfinite(eps)
            or eps <= 0):
        raise ValueError(f"{OP}: eps must be a finite number > 0, got {eps!r}")


def dice_loss_forward(logits, labels, *, weight=None, eps=1.0):
    """loss = 1 - (1/K) sum_k (2 I_k + eps) / (S_k + eps), p = softmax(logits) over K.

    logits (N, K, H, W) float, labels (N, H, W) int in [0, K), y = onehot(labels);
    v = weight (N, H, W), finite and >= 0 (0 ignores a pixel; None: every v = 1).
    Over the whole batch, per class k: I_k = sum v p_k y_k (the soft overlap) and
    S_k = sum v p_k + sum v y_k. The softmax subtracts the max. eps > 0 keeps every
    ratio defined: where S_k = 0 (an empty batch N = 0, or every weight 0) the ratio
    is eps / eps = 1, so such a batch has loss 0 and a zero gradient, never NaN.
    The cache is p, the labels, the weight, the ratios r_k and S_k + eps.
    """
    _check_dice_inputs(logits, labels, weight, eps)
    eps = float(eps)  # a Python float keeps the logits' dtype (a NumPy float64 would not)
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    classes = xp.arange(logits.shape[1]).reshape(1, -1, 1, 1)
    target = (labels[:, None] == classes).astype(logits.dtype)
    weighted = probs
    if weight is not None:  # target = v y, weighted = v p
        target, weighted = target * weight[:, None], probs * weight[:, None]
    axes = (0, 2, 3)
    intersection = (probs * target).sum(axis=axes)
    denominator = weighted.sum(axis=axes) + target.sum(axis=axes) + eps
    ratio = (2 * intersection + eps) / denominator
    loss = 1 - ratio.mean()
    return loss, saved_for_backward(probs, labels, weight, ratio, denominator)


def dice_loss_backward(dloss, cache):
    """dz = p * (g - sum_k p_k g_k), the softmax Jacobian applied to g = dloss * dL/dp.

    dL/dp_k = -(v / K) (2 y_k - r_k) / (S_k + eps), r_k = (2 I_k + eps) / (S_k + eps):
    the quotient rule on each ratio, I_k and S_k being linear in p_k.
    dloss: a Python or NumPy scalar, or a 0-d array like the loss (its dtype and backend).
    """
    probs, labels, weight, ratio, denominator = check_cache("dice_loss_backward", cache)
    if not isinstance(dloss, numbers.Real):
        check_upstream("dice_loss_backward", dloss, (), probs.dtype, backend_name(probs))
    xp = get_array_module(probs)
    num_classes = probs.shape[1]
    classes = xp.arange(num_classes).reshape(1, -1, 1, 1)
    onehot = (labels[:, None] == classes).astype(probs.dtype)
    per_class = (-xp.asarray(dloss, dtype=probs.dtype) / num_classes) / denominator
    grad_probs = (2 * onehot - ratio.reshape(1, -1, 1, 1)) * per_class.reshape(1, -1, 1, 1)
    if weight is not None:
        grad_probs = grad_probs * weight[:, None]
    return probs * (grad_probs - (probs * grad_probs).sum(axis=1, keepdims=True))
