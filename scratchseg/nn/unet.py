"""The U-Net of Ronneberger, Fischer and Brox (MICCAI 2015, arXiv 1505.04597).

Contracting path: ``depth`` levels of [conv3x3 -> ReLU] x 2 followed by a 2x2
max-pool, the channels doubling per level from ``base_channels``; a bottleneck
block at the bottom (dropout after it, "at the end of the contracting path").
Expanding path: per level a 2x2 stride-2 up-convolution that halves the
channels, the crop-and-copy of the encoder map at that level, and
[conv3x3 -> ReLU] x 2. A final 1x1 convolution maps to class logits.

With the defaults (valid convolutions, depth 4, base 64) this is the paper's
network: 572x572 in, 388x388 out, 31,030,658 parameters for 1 -> 2 classes.
``padding="same"`` pads the 3x3 convolutions so the output keeps the input size.
"""

import numbers

from scratchseg import ops
from scratchseg.backend import check_backend
from scratchseg.nn import init
from scratchseg.nn.layers import BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, MaxPool2d, ReLU
from scratchseg.nn.module import Module

PADDINGS = ("valid", "same")


def _check_edge(method, name, value):
    """Edges are counted in pixels: an int (Python's or NumPy's, returned as Python's),
    never a float or a bool."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"UNet.{method}: {name} must be an int (pixels), got "
                        f"{type(value).__name__} {value!r}")
    return int(value)


class ModuleList(Module):
    """Modules registered as parts "0", "1", ...; indexed and iterated like a list."""

    def __init__(self, modules):
        super().__init__()
        for k, module in enumerate(modules):
            self.add(str(k), module)

    def __getitem__(self, k):
        return list(self.children.values())[k]

    def __iter__(self):
        return iter(self.children.values())

    def __len__(self):
        return len(self.children)


class ConvBlock(Module):
    """[conv3x3 -> (batch norm) -> ReLU] x 2, run forward in order and backward in reverse."""

    def __init__(self, in_channels, out_channels, padding, batch_norm, rng, dtype, backend):
        super().__init__()
        pad = 1 if padding == "same" else 0
        for k, c_in in enumerate((in_channels, out_channels), start=1):
            self.add(f"conv{k}", Conv2d(c_in, out_channels, 3, padding=pad,
                                        bias=not batch_norm, rng=rng, dtype=dtype,
                                        backend=backend))
            if batch_norm:
                self.add(f"bn{k}", BatchNorm2d(out_channels, dtype=dtype, backend=backend))
            self.add(f"relu{k}", ReLU())

    def forward(self, x):
        for layer in self.children.values():
            x = layer.forward(x)
        return x

    def backward(self, dy, input_grad=True):
        """The layers in reverse; ``input_grad=False`` stops at the first conv's dW."""
        first, *rest = self.children.values()
        for layer in reversed(rest):
            dy = layer.backward(dy)
        return first.backward(dy, input_grad)


class UpBlock(Module):
    """A 2x2 stride-2 up-convolution halving the channels, the crop-and-copy of the skip,
    then a ConvBlock, whose layers are registered here beside ``up`` (``decoder.0.up``,
    ``decoder.0.conv1``, ... as in PyTorch's oracle, scratchseg/tools/torch_unet.py)."""

    def __init__(self, up, convs):
        super().__init__()
        self.up = self.add("up", up)
        self.convs = convs
        self.children.update(convs.children)
        self._concat = None

    def forward(self, x, skip):
        x, self._concat = ops.concat_forward(skip, self.up.forward(x))
        return self.convs.forward(x)

    def backward(self, dy):
        """(dskip, dx): the skip's gradient (zero where it was cropped) and the input's."""
        concat, self._concat = self._concat, None
        dskip, dy = ops.concat_backward(self.convs.backward(dy), concat)
        return dskip, self.up.backward(dy)


class UNet(Module):
    """The U-Net; see the module docstring. Weights are drawn on the host from ``seed``."""

    def __init__(self, in_channels=1, num_classes=2, base_channels=64, depth=4,
                 padding="valid", batch_norm=False, dropout=0.0, seed=0, *,
                 dtype="float32", backend="numpy"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"UNet: padding must be one of {PADDINGS}, got {padding!r}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("base_channels", base_channels), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet: {name} must be a positive int, got {value!r}")
        self.config = dict(in_channels=in_channels, num_classes=num_classes,
                           base_channels=base_channels, depth=depth, padding=padding,
                           batch_norm=batch_norm, dropout=dropout)
        check_backend(backend)
        rng = init.as_generator(seed)
        widths = [base_channels * 2**level for level in range(depth + 1)]
        block_args = (padding, batch_norm, rng, dtype, backend)

        self.encoder = self.add("encoder", ModuleList(
            ConvBlock(c_in, c_out, *block_args)
            for c_in, c_out in zip([in_channels] + widths[:-2], widths[:-1])))
        self.pools = [MaxPool2d(2) for _ in range(depth)]  # no state: not registered
        self.bottleneck = self.add("bottleneck", ConvBlock(widths[-2], widths[-1], *block_args))
        self.dropout = self.add("dropout", Dropout(dropout, rng=rng)) if dropout > 0 else None
        decoder_widths = widths[-2::-1]  # deepest level first, in forward order
        # every up-convolution's weights are drawn before the blocks': a seed gives the same
        # network as it always has
        ups = [ConvTranspose2d(2 * c, c, 2, 2, rng=rng, dtype=dtype, backend=backend)
               for c in decoder_widths]
        self.decoder = self.add("decoder", ModuleList(
            UpBlock(up, ConvBlock(2 * c, c, *block_args)) for up, c in zip(ups, decoder_widths)))
        self.head = self.add("head", Conv2d(base_channels, num_classes, 1, rng=rng, dtype=dtype,
                                            backend=backend))

    # -- forward and backward -------------------------------------------------------------

    def forward(self, x):
        """logits = head(decoder(bottleneck(encoder(x)))), skips cropped and concatenated."""
        self.check_input(x)
        skips = []
        for block, pool in zip(self.encoder, self.pools):
            x = block.forward(x)
            skips.append(x)
            x = pool.forward(x)
        x = self.bottleneck.forward(x)
        if self.dropout is not None:
            x = self.dropout.forward(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block.forward(x, skip)
        return self.head.forward(x)

    def backward(self, dlogits, input_grad=True):
        """dx: the decoder in reverse, each skip's gradient set aside, then the encoder
        in reverse with the skip gradient added to the gradient arriving from below.
        Parameter gradients accumulate into ``gradients()``. ``input_grad=False``
        (training: the image needs no gradient) returns None and skips the first
        convolution's dx, a GEMM as large as its forward.
        """
        dx = self.head.backward(dlogits)
        skip_grads = []  # shallowest first: the decoder is walked from the top down
        for block in reversed(self.decoder):
            dskip, dx = block.backward(dx)
            skip_grads.append(dskip)
        if self.dropout is not None:
            dx = self.dropout.backward(dx)
        dx = self.bottleneck.backward(dx)
        for block, pool, dskip in zip(reversed(self.encoder), reversed(self.pools),
                                      reversed(skip_grads)):
            dx = pool.backward(dx)
            dx += dskip
            dx = block.backward(dx, input_grad or block is not self.encoder[0])
        return dx

    # -- sizes ----------------------------------------------------------------------------

    def output_size(self, input_size):
        """The output edge for an input edge; ValueError naming the nearest valid sizes."""
        input_size = _check_edge("output_size", "input_size", input_size)
        size = self._trace_size(input_size)
        if size is None:
            lower, upper = self._nearest_valid(input_size)
            raise ValueError(
                f"UNet ({self.config['padding']}, depth {self.config['depth']}) cannot take "
                f"input size {input_size}; nearest valid sizes: "
                + (f"{lower} and {upper}" if lower else f"{upper}")
            )
        return size

    def valid_input_size(self, min_size):
        """The smallest input edge >= min_size the network can take."""
        size = max(_check_edge("valid_input_size", "min_size", min_size), 1)
        while self._trace_size(size) is None:
            size += 1
        return size

    def context_radius(self):
        """Pixels of input on either side that one output pixel may depend on: 7 * 2^depth - 5.

        Each 3x3 convolution at level l (pooled l times) reaches 2^l pixels
        further: two per block on the way down, two in the bottleneck, two per
        block on the way up, 3 * 2^(depth+1) - 4 in all (the valid network's
        margin, 92 for depth 4). The 2x2 max-pool into level l and the
        up-convolution out of it add up to 2^(l-1) pixels on one side, by where
        the pixel sits in its pooling window: 2^depth - 1 more, 107 for depth 4.
        """
        return 7 * 2 ** self.config["depth"] - 5

    def _trace_size(self, n):
        """Follow an edge length through the network; None where it breaks."""
        if not isinstance(n, int) or n < 1:
            return None
        shrink = 4 if self.config["padding"] == "valid" else 0
        for _ in range(self.config["depth"]):
            n -= shrink
            if n < 2 or n % 2:
                return None
            n //= 2
        n -= shrink
        if n < 1:
            return None
        for _ in range(self.config["depth"]):
            n = 2 * n - shrink
            if n < 1:
                return None
        return n

    def _nearest_valid(self, n):
        lower = next((m for m in range(n - 1, 0, -1) if self._trace_size(m)), None)
        return lower, self.valid_input_size(n + 1)

    def check_input(self, x):
        c = self.config["in_channels"]
        if not hasattr(x, "ndim") or not hasattr(x, "shape"):
            raise TypeError(f"UNet: input must be a NumPy or CuPy array (N, {c}, H, W), got "
                            f"{type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"UNet: input must have shape (N, {c}, H, W), got "
                             f"{tuple(x.shape)}")
        for edge in x.shape[2:]:
            self.output_size(int(edge))
