"""Layers: thin stateful shells that own parameters and gradients and call scratchseg.ops.

Every layer has ``params`` and ``grads`` (dicts named as in PyTorch),
``buffers`` for untrained state, ``forward(x)``, ``backward(dy) -> dx`` and what
``Module`` gives every module (``zero_grad``, ``train``/``eval``, ``to``,
``state_dict``, ...). Gradients accumulate over backward calls until
``zero_grad()``, so a large tile can be split over several forward/backward
pairs. A layer keeps the cache of its last forward until its backward has used
it; under ``scratchseg.no_grad()`` its forward keeps none.
"""

from scratchseg import ops
from scratchseg.backend import get_array_module, to_device
from scratchseg.functional._checks import pair
from scratchseg.nn import init
from scratchseg.nn.module import Module


class Layer(Module):
    """A leaf module: arrays of its own and the cache of its last forward."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def _init_params(self, backend, **host_arrays):
        for name, array in host_arrays.items():
            self.params[name] = to_device(array, backend)
            self.grads[name] = to_device(init.zeros(array.shape, array.dtype), backend)

    def forget(self):
        self._cache = None

    def _pop_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward "
                               "(or twice for one forward, or after a forward under "
                               "scratchseg.no_grad(), which keeps nothing for a backward)")
        cache, self._cache = self._cache, None
        return cache

    def _accumulate(self, **grads):
        for name, grad in grads.items():
            if grad is not None:
                self.grads[name] += grad


class Conv2d(Layer):
    """y = conv2d(x, weight, bias); weight (C_out, C_in, kH, kW), He-normal, bias 0."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 *, rng=0, dtype="float32", backend="numpy"):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size", "Conv2d")
        self.stride, self.padding = stride, padding
        weight = init.he_normal((out_channels, in_channels, kh, kw), in_channels * kh * kw,
                                rng, dtype)
        arrays = {"weight": weight}
        if bias:
            arrays["bias"] = init.zeros((out_channels,), dtype)
        self._init_params(backend, **arrays)

    def forward(self, x):
        y, self._cache = ops.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                            self.stride, self.padding)
        return y

    def backward(self, dy, input_grad=True):
        """dx (None with ``input_grad=False``); dW and db accumulate into ``grads``."""
        dx, dw, db = ops.conv2d_backward(dy, self._pop_cache(), input_grad)
        self._accumulate(weight=dw, bias=db)
        return dx


class ConvTranspose2d(Layer):
    """y = conv_transpose2d(x, weight, bias); weight (C_in, C_out, kH, kW).

    He-normal with fan_in = C_in * ceil(kH / s) * ceil(kW / s), the inputs
    that feed one output pixel (C_in for the U-Net's 2x2, stride-2 up-convolution).
    """

    def __init__(self, in_channels, out_channels, kernel_size=2, stride=2, padding=0,
                 bias=True, *, rng=0, dtype="float32", backend="numpy"):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size", "ConvTranspose2d")
        sh, sw = pair(stride, "stride", "ConvTranspose2d")
        self.stride, self.padding = stride, padding
        fan_in = in_channels * (-(-kh // sh)) * (-(-kw // sw))
        weight = init.he_normal((in_channels, out_channels, kh, kw), fan_in, rng, dtype)
        arrays = {"weight": weight}
        if bias:
            arrays["bias"] = init.zeros((out_channels,), dtype)
        self._init_params(backend, **arrays)

    def forward(self, x):
        y, self._cache = ops.conv_transpose2d_forward(x, self.params["weight"],
                                                      self.params.get("bias"), self.stride,
                                                      self.padding)
        return y

    def backward(self, dy):
        dx, dw, db = ops.conv_transpose2d_backward(dy, self._pop_cache())
        self._accumulate(weight=dw, bias=db)
        return dx


class Linear(Layer):
    """y = x @ weight.T + bias; weight (out_features, in_features), He-normal, bias 0."""

    def __init__(self, in_features, out_features, bias=True, *, rng=0, dtype="float32",
                 backend="numpy"):
        super().__init__()
        arrays = {"weight": init.he_normal((out_features, in_features), in_features, rng, dtype)}
        if bias:
            arrays["bias"] = init.zeros((out_features,), dtype)
        self._init_params(backend, **arrays)

    def forward(self, x):
        y, self._cache = ops.linear_forward(x, self.params["weight"], self.params.get("bias"))
        return y

    def backward(self, dy):
        """dx; dW and db accumulate into ``grads``."""
        dx, dw, db = ops.linear_backward(dy, self._pop_cache())
        self._accumulate(weight=dw, bias=db)
        return dx


class RoIMaxPool(Layer):
    """y = roi_max_pool(x, rois, output_size, spatial_scale): (R, C, oh, ow) per box."""

    def __init__(self, output_size, spatial_scale=1.0):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def forward(self, x, rois):
        y, self._cache = ops.roi_max_pool_forward(x, rois, self.output_size, self.spatial_scale)
        return y

    def backward(self, dy):
        """dx (x's shape); the boxes get no gradient."""
        return ops.roi_max_pool_backward(dy, self._pop_cache())


class MaxPool2d(Layer):
    """y = max_pool2d(x, kernel_size, stride); stride defaults to kernel_size."""

    def __init__(self, kernel_size=2, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        y, self._cache = ops.max_pool2d_forward(x, self.kernel_size, self.stride)
        return y

    def backward(self, dy):
        return ops.max_pool2d_backward(dy, self._pop_cache())


class ReLU(Layer):
    """y = max(x, 0)."""

    def forward(self, x):
        y, self._cache = ops.relu_forward(x)
        return y

    def backward(self, dy):
        return ops.relu_backward(dy, self._pop_cache())


class Dropout(Layer):
    """Inverted dropout with probability p in training, the identity in eval.

    The masks come from a generator on the input's device, seeded once from
    ``rng`` (an int or a numpy Generator), so a seed fixes the masks.

    In data-parallel training every process holds the same seed and sets
    ``batch_shard = (global batch size, rank, processes)`` before each step:
    each mask is then drawn for the whole global batch and the process keeps
    rows rank::processes, the samples of its shard, so N processes drop
    exactly what one process would.
    """

    class _ShardRows:
        """A generator that draws for the global batch and returns one shard's rows."""

        def __init__(self, rng, global_batch, rank, size):
            self.rng, self.global_batch, self.rank, self.size = rng, global_batch, rank, size

        def random(self, shape, dtype):
            rows = len(range(self.rank, self.global_batch, self.size))
            if shape[0] != rows:
                raise ValueError(f"Dropout: rank {self.rank} of {self.size} holds {rows} "
                                 f"sample(s) of a global batch of {self.global_batch}, got "
                                 f"a batch of {shape[0]}")
            full = self.rng.random((self.global_batch, *shape[1:]), dtype=dtype)
            return full[self.rank::self.size]

    def __init__(self, p=0.5, *, rng=0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.seed = int(init.as_generator(rng).integers(2**63))
        self.batch_shard = None
        self.reset_rng()

    def reset_rng(self):
        """Restart the mask stream from the seed (the next forward draws the first mask)."""
        self._device_rng = None  # (array module, generator), made on the next forward

    def forward(self, x):
        xp = get_array_module(x)
        if self._device_rng is None or self._device_rng[0] is not xp:
            self._device_rng = (xp, xp.random.default_rng(self.seed))
        rng = self._device_rng[1]
        if self.batch_shard is not None:
            rng = self._ShardRows(rng, *self.batch_shard)
        y, self._cache = ops.dropout_forward(x, self.p, rng, self.training)
        return y

    def backward(self, dy):
        return ops.dropout_backward(dy, self._pop_cache())


class BatchNorm2d(Layer):
    """Per-channel batch normalisation with running statistics (PyTorch's semantics).

    ``reduce``, when set, sums the batch statistics across processes
    (synchronised batch norm in data-parallel training).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, *, dtype="float32",
                 backend="numpy"):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.reduce = None
        self._init_params(backend, weight=init.ones((num_features,), dtype),
                          bias=init.zeros((num_features,), dtype))
        self.buffers["running_mean"] = to_device(init.zeros((num_features,), dtype), backend)
        self.buffers["running_var"] = to_device(init.ones((num_features,), dtype), backend)

    def forward(self, x):
        y, self._cache = ops.batch_norm2d_forward(
            x, self.params["weight"], self.params["bias"], self.buffers["running_mean"],
            self.buffers["running_var"], self.training, self.momentum, self.eps, self.reduce)
        return y

    def backward(self, dy):
        dx, dgamma, dbeta = ops.batch_norm2d_backward(dy, self._pop_cache())
        self._accumulate(weight=dgamma, bias=dbeta)
        return dx


class SoftmaxCrossEntropy(Layer):
    """loss = softmax_cross_entropy(logits, labels, ...); ``backward(1.0)`` gives dlogits."""

    def __init__(self, class_weight=None, ignore_index=None, reduction="mean"):
        super().__init__()
        self.class_weight, self.ignore_index, self.reduction = (class_weight, ignore_index,
                                                                reduction)

    def forward(self, logits, labels, weight_map=None):
        loss, self._cache = ops.softmax_cross_entropy_forward(
            logits, labels, self.class_weight, weight_map, self.ignore_index, self.reduction)
        return loss

    def backward(self, dloss=1.0):
        return ops.softmax_cross_entropy_backward(dloss, self._pop_cache())
