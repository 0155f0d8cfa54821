"""Layers (stateful shells over scratchseg.ops), initialisation, the U-Net and SGD."""

from scratchseg.nn.layers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Linear,
    MaxPool2d,
    ReLU,
    RoIMaxPool,
    SoftmaxCrossEntropy,
)
from scratchseg.nn.optim import SGD
from scratchseg.nn.unet import UNet

__all__ = ["BatchNorm2d", "Conv2d", "ConvTranspose2d", "Dropout", "Linear", "MaxPool2d", "ReLU",
           "RoIMaxPool", "SGD", "SoftmaxCrossEntropy", "UNet"]
