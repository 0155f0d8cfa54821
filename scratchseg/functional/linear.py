"""A fully connected layer: y = x W^T + b, with PyTorch's (out_features, in_features) weights."""

from scratchseg.backend import backend_name
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_same_dtype,
    check_upstream,
)
from scratchseg.grad_mode import saved_for_backward

OP = "linear"


def _check_linear(x, w, b):
    for name, array, rank, layout in (("x", x, 2, "(N, in_features)"),
                                      ("w", w, 2, "(out_features, in_features)"),
                                      ("b", b, 1, "(out_features,)")):
        if array is None:
            continue
        check_float_array(array, name, OP)
        if array.ndim != rank:
            raise ValueError(f"{OP}: {name} must have rank {rank} {layout}, got shape "
                             f"{tuple(array.shape)}")
    check_same_dtype(OP, x=x, w=w, b=b)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{OP}: x has {x.shape[1]} features but w of shape {tuple(w.shape)} "
                         f"(out_features, in_features) expects {w.shape[1]}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{OP}: b must have shape ({w.shape[0]},) to match w, got "
                         f"{tuple(b.shape)}")


def linear_forward(x, w, b=None):
    """y[n, o] = sum_i x[n, i] w[o, i] + b[o], i.e. y = x @ w.T + b (one GEMM).

    x (N, in_features), w (out_features, in_features) as torch.nn.Linear's
    weight, b (out_features,) or None. The cache is x, w and whether b was given.
    """
    _check_linear(x, w, b)
    y = x @ w.T
    if b is not None:
        y += b
    return y, saved_for_backward(x, w, b is not None)


def linear_backward(dy, cache):
    """dx = dy @ w, dw = dy^T @ x, db = sum_n dy[n] (None when the forward had no b).

    dy (N, out_features) is the upstream gradient of y.
    """
    x, w, has_bias = check_cache("linear_backward", cache)
    check_upstream("linear_backward", dy, (x.shape[0], w.shape[0]), x.dtype, backend_name(x))
    dx = dy @ w
    dw = dy.T @ x
    db = dy.sum(axis=0) if has_bias else None
    return dx, dw, db
