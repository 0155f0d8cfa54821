"""The small backbone the three detectors share: plain conv, ReLU and max-pool layers.

(N, C, H, W) -> (N, 64, H // 4, W // 4) with the default channels: two blocks of
[conv3x3 (padding 1) -> ReLU -> maxpool 2x2] and a last conv3x3 -> ReLU. Each
feature cell sees a 18x18 pixel window and steps 4 pixels (``stride``), which
suits objects of 8 to 40 pixels, small enough to train on a CPU.
"""

from scratchseg.nn.layers import Conv2d, MaxPool2d, ReLU
from scratchseg.nn.module import Module


class Backbone(Module):
    """conv-ReLU-pool, conv-ReLU-pool, conv-ReLU; forward(x) -> features, backward(dfeatures)."""

    stride = 4

    def __init__(self, in_channels=1, channels=(16, 32, 64), *, rng=0, dtype="float32",
                 backend="numpy"):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"Backbone: channels must name 3 widths (stride 4), got {channels}")
        self.out_channels = channels[-1]
        previous = in_channels
        for k, width in enumerate(channels, start=1):
            self.add(f"conv{k}", Conv2d(previous, width, 3, padding=1, rng=rng, dtype=dtype,
                                        backend=backend))
            self.add(f"relu{k}", ReLU())
            if k < len(channels):
                self.add(f"pool{k}", MaxPool2d(2))
            previous = width

    def forward(self, x):
        for layer in self.children.values():
            x = layer.forward(x)
        return x

    def backward(self, dfeatures):
        """Every layer in reverse; the first conv computes dW only (images need no gradient)."""
        first, *rest = self.children.values()
        for layer in reversed(rest):
            dfeatures = layer.backward(dfeatures)
        first.backward(dfeatures, input_grad=False)

    def feature_size(self, height, width):
        """The feature map's (h, w) for an image of (height, width): two floor halvings."""
        return height // 2 // 2, width // 2 // 2
