"""Layers (stateful shells over scratchseg.ops), initialisation, the U-Net and SGD."""

from scratchseg.nn.layers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    MaxPool2d,
    ReLU,
    SoftmaxCrossEntropy,
)
from scratchseg.nn.optim import SGD
from scratchseg.nn.unet import UNet

__all__ = ["BatchNorm2d", "Conv2d", "ConvTranspose2d", "Dropout", "MaxPool2d", "ReLU", "SGD",
           "SoftmaxCrossEntropy", "UNet"]
