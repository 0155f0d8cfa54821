"""Sigmoid (binary) cross-entropy on logits: the objectness loss of a region proposal network."""

import numbers

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_upstream,
)
from scratchseg.functional.loss import REDUCTIONS, NonFiniteError
from scratchseg.grad_mode import saved_for_backward

OP = "sigmoid_cross_entropy"


def _check_sigmoid_loss(logits, labels, ignore_index, reduction):
    check_float_array(logits, "logits", OP)
    if not hasattr(labels, "dtype") or labels.dtype.kind not in "iu":
        raise TypeError(f"{OP}: labels must be an integer array of 0, 1 and ignore_index, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(f"{OP}: labels must have the logits' shape {tuple(logits.shape)}, "
                         f"got {tuple(labels.shape)}")
    if ignore_index is not None and (not isinstance(ignore_index, numbers.Integral)
                                     or isinstance(ignore_index, bool) or ignore_index in (0, 1)):
        raise ValueError(f"{OP}: ignore_index must be None or an int other than 0 and 1, got "
                         f"{ignore_index!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{OP}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    try:
        xp = get_array_module(logits, labels)
    except TypeError as error:
        raise TypeError(f"{OP}: {error}") from None
    if not bool(xp.isfinite(logits).all()):
        raise NonFiniteError(f"{OP}: logits contain NaN or infinity")
    bad = (labels != 0) & (labels != 1)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        found = xp.unique(labels[bad])[:5].tolist()
        raise ValueError(f"{OP}: labels must be 0, 1 or ignore_index ({ignore_index}), got "
                         f"{', '.join(map(str, found))}")


def sigmoid_cross_entropy_forward(logits, labels, *, ignore_index=-1, reduction="mean"):
    """loss = sum_i l_i over kept i (labels_i != ignore_index), / their count for "mean".

    l_i = -y_i log s(z_i) - (1 - y_i) log(1 - s(z_i)), s the sigmoid, computed
    stably as max(z, 0) - z y + log(1 + exp(-|z|)) (no overflow for any z).
    logits any shape, labels integers of that shape in {0, 1, ignore_index}.
    "mean" over 0 kept elements is 0 (and so is the gradient), never NaN. The
    loss is a 0-d array of the logits' dtype; the cache is the logits, the labels,
    ignore_index and the divisor (the kept count for "mean", else 1).
    """
    _check_sigmoid_loss(logits, labels, ignore_index, reduction)
    xp = get_array_module(logits)
    y = (labels == 1).astype(logits.dtype)
    per_element = (xp.maximum(logits, 0) - logits * y
                   + xp.log1p(xp.exp(-xp.abs(logits))))
    kept = labels != ignore_index if ignore_index is not None else None
    if kept is not None:
        per_element = xp.where(kept, per_element, logits.dtype.type(0))
    count = int(kept.sum()) if kept is not None else logits.size
    norm = max(count, 1) if reduction == "mean" else 1
    loss = xp.asarray(per_element.sum() / norm, dtype=logits.dtype)
    return loss, saved_for_backward(logits, labels, ignore_index, norm)


def sigmoid_cross_entropy_backward(dloss, cache):
    """dz_i = dloss * (s(z_i) - y_i) / norm on kept elements, 0 on ignored ones.

    s(z) = 1 / (1 + exp(-z)), evaluated as e / (1 + e) with e = exp(-|z|) for z < 0.
    dloss: a Python or NumPy scalar, or a 0-d array like the loss (its dtype and backend).
    """
    logits, labels, ignore_index, norm = check_cache("sigmoid_cross_entropy_backward", cache)
    if not isinstance(dloss, numbers.Real):
        check_upstream("sigmoid_cross_entropy_backward", dloss, (), logits.dtype,
                       backend_name(logits))
    xp = get_array_module(logits)
    e = xp.exp(-xp.abs(logits))
    sigmoid = xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))
    grad = (sigmoid - (labels == 1)) * (xp.asarray(dloss, dtype=logits.dtype) / norm)
    if ignore_index is not None:
        grad = xp.where(labels != ignore_index, grad, logits.dtype.type(0))
    return grad
