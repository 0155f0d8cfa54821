"""Batch normalisation over (N, H, W) per channel, with running statistics."""

from scratchseg.backend import backend_name, get_array_module
from scratchseg.functional._checks import (
    check_cache,
    check_float_array,
    check_same_dtype,
    check_upstream,
)
from scratchseg.grad_mode import saved_for_backward


def _batch_moments(x, reduce):
    """Per-channel count, mean and biased variance over (N, H, W).

    With ``reduce`` (a function summing an array over processes), the sums
    run over the global batch of every process: synchronised batch norm.
    """
    xp = get_array_module(x)
    axes = (0, 2, 3)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if reduce is not None:
        totals = reduce(xp.concatenate([x.sum(axis=axes), xp.asarray([count], dtype=x.dtype)]))
        count = int(round(float(totals[-1])))
    if count < 2:
        raise ValueError(f"batch_norm2d: training needs more than one value per channel, "
                         f"got x of shape {tuple(x.shape)}")
    if reduce is None:
        return count, x.mean(axis=axes), x.var(axis=axes)
    mean = totals[:-1] / count
    var = reduce(((x - mean[:, None, None]) ** 2).sum(axis=axes)) / count
    return count, mean, var


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training=True,
                         momentum=0.1, eps=1e-5, reduce=None):
    """y = gamma * x_hat + beta, x_hat = (x - mu) / sqrt(var + eps), per channel.

    Training: mu, var are the batch's mean and biased variance over (N, H, W)
    (over every process's batch when ``reduce`` sums across processes); the
    running statistics are updated in place as PyTorch does,
    r <- (1 - momentum) r + momentum * stat, with the unbiased variance.
    Eval: mu, var are the running statistics. The cache is x_hat and 1/sigma.
    """
    op = "batch_norm2d"
    check_float_array(x, "x", op, ndim=4)
    check_same_dtype(op, x=x, gamma=gamma, beta=beta, running_mean=running_mean,
                     running_var=running_var)
    channels = x.shape[1]
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if a.shape != (channels,):
            raise ValueError(f"{op}: {name} must have shape ({channels},) for x with "
                             f"{channels} channels, got {tuple(a.shape)}")
    xp = get_array_module(x)
    count = None
    if training:
        count, mean, var = _batch_moments(x, reduce)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * count / (count - 1)) * var
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]
    y = gamma[:, None, None] * x_hat + beta[:, None, None]
    return y, saved_for_backward(x_hat, inv_std, gamma, count, reduce)


def batch_norm2d_backward(dy, cache):
    """Returns dx, dgamma, dbeta.

    dgamma = sum dy * x_hat, dbeta = sum dy (over N, H, W). Training, with
    g = gamma * dy and M values per channel (of every process, when synchronised):
    dx = (1/sigma) (g - mean(g) - x_hat * mean(g * x_hat)); eval: dx = g / sigma.
    The returned dgamma and dbeta are this process's sums.
    """
    x_hat, inv_std, gamma, count, reduce = check_cache("batch_norm2d_backward", cache)
    check_upstream("batch_norm2d_backward", dy, x_hat.shape, x_hat.dtype, backend_name(x_hat))
    xp = get_array_module(dy)
    axes = (0, 2, 3)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    scale = (gamma * inv_std)[:, None, None]
    if count is None:
        return dy * scale, dgamma, dbeta
    sum_dy, sum_dy_xhat = dbeta, dgamma
    if reduce is not None:
        sum_dy, sum_dy_xhat = reduce(xp.stack([dbeta, dgamma]))
    dx = scale * (dy - (sum_dy / count)[:, None, None]
                  - x_hat * (sum_dy_xhat / count)[:, None, None])
    return dx, dgamma, dbeta
