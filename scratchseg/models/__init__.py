"""Models composed from scratchseg's layers."""

from scratchseg.models.unet import UNet

__all__ = ["UNet"]
