"""Softmax cross-entropy over the class axis, with class weights, weight maps and ignored pixels."""

import numbers

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_same_dtype,
    check_upstream,
)
from scratchseg.grad_mode import saved_for_backward

REDUCTIONS = ("mean", "sum")


class NonFiniteError(ValueError):
    """The logits hold NaN or infinity (a diverged network, usually)."""


def _check_loss_inputs(logits, labels, class_weight, weight_map, ignore_index, reduction,
                       op="softmax_cross_entropy"):
    check_float_array(logits, "logits", op)
    if logits.ndim < 2:
        raise ValueError(f"{op}: logits must be (N, K) or (N, K, H, W), got shape "
                         f"{tuple(logits.shape)}")
    if not hasattr(labels, "dtype") or labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be an integer array of class indices, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(f"{op}: labels must have shape {expected} for logits of shape "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    num_classes = logits.shape[1]
    if class_weight is not None:
        check_float_array(class_weight, "class_weight", op, ndim=1)
        if class_weight.shape != (num_classes,):
            raise ValueError(f"{op}: class_weight must have one entry per class "
                             f"({num_classes},), got {tuple(class_weight.shape)}")
    if weight_map is not None:
        check_float_array(weight_map, "weight_map", op)
        if weight_map.shape != labels.shape:
            raise ValueError(f"{op}: weight_map must have the labels' shape "
                             f"{tuple(labels.shape)}, got {tuple(weight_map.shape)}")
    check_same_dtype(op, logits=logits, class_weight=class_weight, weight_map=weight_map)
    try:
        get_array_module(logits, labels)
    except TypeError as error:
        raise TypeError(f"{op}: {error}") from None
    xp = get_array_module(logits)
    if not bool(xp.isfinite(logits).all()):
        raise NonFiniteError(f"{op}: logits contain NaN or infinity")
    for name, weights in (("class_weight", class_weight), ("weight_map", weight_map)):
        if weights is not None:
            _check_weights(op, name, weights, xp)
    valid = labels != ignore_index if ignore_index is not None else None
    checked = labels[valid] if valid is not None else labels
    if checked.size and (int(checked.min()) < 0 or int(checked.max()) >= num_classes):
        raise ValueError(f"{op}: labels must lie in [0, {num_classes}) (or equal ignore_index), "
                         f"got values in [{int(checked.min())}, {int(checked.max())}]")
    return valid


def _check_weights(op, name, weights, xp):
    """Require finite weights >= 0: a NaN would spread to every pixel's gradient through
    the mean's norm, and a negative weight turns descent on that pixel into ascent."""
    if not bool(xp.isfinite(weights).all()):
        raise ValueError(f"{op}: {name} must be finite, got NaN or infinity")
    if bool((weights < 0).any()):
        raise ValueError(f"{op}: {name} must be >= 0, got a minimum of {float(weights.min())}")


def softmax_cross_entropy_forward(logits, labels, class_weight=None, weight_map=None,
                                  ignore_index=None, reduction="mean"):
    """loss = sum_i v_i ce_i / sum_i v_i ("mean") or sum_i v_i ce_i ("sum").

    ce_i = -log softmax(z_i)[y_i] = logsumexp(z_i) - z_i[y_i], computed with
    the max subtracted; v_i = class_weight[y_i] * weight_map_i, 0 where
    y_i == ignore_index. The cache is softmax(z), the labels and v / norm.
    class_weight and weight_map must be finite and >= 0; "mean" needs sum_i v_i > 0.
    """
    valid = _check_loss_inputs(logits, labels, class_weight, weight_map, ignore_index,
                               reduction)
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    safe_labels = labels if valid is None else xp.where(valid, labels, 0)
    picked = xp.take_along_axis(shifted, safe_labels[:, None], axis=1)[:, 0]
    ce = xp.log(sum_exp[:, 0]) - picked
    weight = xp.ones(labels.shape, dtype=logits.dtype)
    if class_weight is not None:
        weight = class_weight[safe_labels]
    if weight_map is not None:
        weight = weight * weight_map
    if valid is not None:
        weight = weight * valid
    norm = weight.sum() if reduction == "mean" else logits.dtype.type(1)
    if reduction == "mean" and not float(norm) > 0:
        raise ValueError(
            "softmax_cross_entropy: reduction 'mean' needs a positive total weight "
            "sum(v_i) to divide by, got 0 (every pixel ignored, zero-weighted or an "
            "empty batch); use reduction='sum' and normalise across batches yourself")
    loss = (weight * ce).sum() / norm
    probs = exp / sum_exp
    return loss, saved_for_backward(probs, safe_labels, weight / norm)


def softmax_cross_entropy_backward(dloss, cache):
    """dz_i = dloss * (v_i / norm) * (softmax(z_i) - onehot(y_i)).

    dloss: a Python or NumPy scalar, or a 0-d array like the loss (its dtype and backend).
    """
    probs, labels, scaled_weight = check_cache("softmax_cross_entropy_backward", cache)
    if not isinstance(dloss, numbers.Real):
        check_upstream("softmax_cross_entropy_backward", dloss, (), probs.dtype,
                       backend_name(probs))
    xp = get_array_module(probs)
    classes = xp.arange(probs.shape[1]).reshape(1, -1, *([1] * (probs.ndim - 2)))
    onehot = labels[:, None] == classes
    scale = (scaled_weight * xp.asarray(dloss, dtype=probs.dtype))[:, None]
    return (probs - onehot) * scale
