"""Smooth L1 (Huber-like) loss: the box-regression loss of Fast and Faster R-CNN."""

import math
import numbers

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_same_dtype,
    check_upstream,
)
from scratchseg.functional.loss import REDUCTIONS, NonFiniteError, _check_weights
from scratchseg.grad_mode import saved_for_backward

OP = "smooth_l1"


def _check_smooth_l1(x, target, beta, weight, reduction):
    check_float_array(x, "x", OP)
    for name, array in (("target", target), ("weight", weight)):
        if array is None:
            continue
        check_float_array(array, name, OP)
        if array.shape != x.shape:
            raise ValueError(f"{OP}: {name} must have x's shape {tuple(x.shape)}, got "
                             f"{tuple(array.shape)}")
    check_same_dtype(OP, x=x, target=target, weight=weight)
    if (not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not math.isfinite(beta)
            or beta < 0):
        raise ValueError(f"{OP}: beta must be a finite number >= 0, got {beta!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{OP}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    xp = get_array_module(x)
    for name, array in (("x", x), ("target", target)):
        if not bool(xp.isfinite(array).all()):
            raise NonFiniteError(f"{OP}: {name} contains NaN or infinity")
    if weight is not None:
        _check_weights(OP, "weight", weight, xp)


def smooth_l1_forward(x, target, *, beta=1.0, weight=None, reduction="sum"):
    """loss = sum_i w_i l_i ("sum") or that sum / x.size ("mean"), d = x - target,

    l_i = 0.5 d_i^2 / beta where |d_i| < beta, else |d_i| - 0.5 beta (PyTorch's
    smooth_l1_loss; beta = 0 is plain L1, |d_i|). weight (x's shape, finite,
    >= 0; None: every w_i = 1) scales each element. "mean" divides by the element
    count as PyTorch does, and an empty x gives loss 0, never NaN. The loss is a
    0-d array of x's dtype; the cache is d, the weight, beta and the divisor.
    """
    _check_smooth_l1(x, target, beta, weight, reduction)
    beta = float(beta)  # a Python float keeps x's dtype
    xp = get_array_module(x)
    d = x - target
    loss = xp.abs(d)
    if beta > 0:
        loss = xp.where(loss < beta, (0.5 / beta) * d * d, loss - 0.5 * beta)
    if weight is not None:
        loss = loss * weight
    norm = max(x.size, 1) if reduction == "mean" else 1
    total = xp.asarray(loss.sum() / norm, dtype=x.dtype)
    return total, saved_for_backward(d, weight, beta, norm)


def smooth_l1_backward(dloss, cache):
    """dx_i = dloss * w_i * g_i / norm, g_i = d_i / beta where |d_i| < beta, else sign(d_i).

    norm is x.size for "mean", 1 for "sum". target gets no gradient.
    dloss: a Python or NumPy scalar, or a 0-d array like the loss (its dtype and backend).
    """
    d, weight, beta, norm = check_cache("smooth_l1_backward", cache)
    if not isinstance(dloss, numbers.Real):
        check_upstream("smooth_l1_backward", dloss, (), d.dtype, backend_name(d))
    xp = get_array_module(d)
    grad = xp.sign(d)
    if beta > 0:
        grad = xp.where(xp.abs(d) < beta, d / beta, grad)
    if weight is not None:
        grad = grad * weight
    return grad * (xp.asarray(dloss, dtype=d.dtype) / norm)
