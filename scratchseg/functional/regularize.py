"""Dropout and batch normalisation."""

from scratchseg.backend import get_array_module
from scratchseg.functional._checks import check_float_array, check_same_dtype


def dropout_forward(x, p, rng, training=True):
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p); y = x in eval.

    ``rng`` is a ``numpy.random.Generator`` for NumPy arrays or a
    ``cupy.random.Generator`` for CuPy arrays. The cache is the boolean mask.
    """
    check_float_array(x, "x", "dropout")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x, None
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    scale = x.dtype.type(1.0 / (1.0 - p))
    return x * keep * scale, (keep, scale)


def dropout_backward(dy, cache):
    """dx = dy * m / (1 - p) with the forward's mask; dx = dy in eval."""
    if cache is None:
        return dy
    keep, scale = cache
    return dy * keep * scale


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training=True,
                         momentum=0.1, eps=1e-5):
    """y = gamma * x_hat + beta, x_hat = (x - mu) / sqrt(var + eps), per channel.

    Training: mu, var are the batch's mean and biased variance over (N, H, W);
    the running statistics are updated in place as PyTorch does,
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
    if training:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        if count < 2:
            raise ValueError(f"{op}: training needs more than one value per channel, "
                             f"got x of shape {tuple(x.shape)}")
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * count / (count - 1)) * var
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]
    y = gamma[:, None, None] * x_hat + beta[:, None, None]
    return y, (x_hat, inv_std, gamma, training)


def batch_norm2d_backward(dy, cache):
    """Returns dx, dgamma, dbeta.

    dgamma = sum dy * x_hat, dbeta = sum dy (over N, H, W). Training, with
    g = gamma * dy and M values per channel:
    dx = (1/sigma) (g - mean(g) - x_hat * mean(g * x_hat)); eval: dx = g / sigma.
    """
    x_hat, inv_std, gamma, training = cache
    if dy.shape != x_hat.shape:
        raise ValueError(f"batch_norm2d_backward: dy must have the output's shape "
                         f"{tuple(x_hat.shape)}, got {tuple(dy.shape)}")
    axes = (0, 2, 3)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    scale = (gamma * inv_std)[:, None, None]
    if not training:
        return dy * scale, dgamma, dbeta
    count = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
    dx = scale * (dy - (dbeta / count)[:, None, None] - x_hat * (dgamma / count)[:, None, None])
    return dx, dgamma, dbeta
