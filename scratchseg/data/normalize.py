"""Per-channel intensity normalisation of raw (C, H, W) images.

``percentile`` (the default) maps each channel's ``low``th percentile to 0 and its
``high``th to 1 without clipping, as csbdeep and StarDist do, so one bright
speck does not squash the rest of the image. ``minmax`` maps min -> 0, max -> 1;
``standardize`` gives zero mean and unit standard deviation; ``none`` keeps the
stored values. A channel whose range is zero becomes zeros.
"""

import numpy as np

NORMALIZATIONS = ("percentile", "minmax", "standardize", "none")


def _rescale(channel, zero, one):
    """(channel - zero) / (one - zero) in float32; zeros when one == zero."""
    if one == zero:
        return np.zeros_like(channel)
    return (channel - np.float32(zero)) * np.float32(1.0 / (one - zero))


def _normalize_channel(channel, mode, low, high):
    if mode == "percentile":
        zero, one = np.percentile(channel, [low, high])
        if one == zero:  # a sparse image: both percentiles on the background
            zero, one = channel.min(), channel.max()
        return _rescale(channel, float(zero), float(one))
    if mode == "minmax":
        return _rescale(channel, float(channel.min()), float(channel.max()))
    mean = float(channel.mean(dtype=np.float64))
    return _rescale(channel, mean, mean + float(channel.std(dtype=np.float64)))


def normalize_image(image, mode="percentile", *, low=1.0, high=99.8):
    """float32 (C, H, W): each channel of the raw ``image`` normalised by ``mode``."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize: mode must be one of {', '.join(NORMALIZATIONS)}, "
                         f"got {mode!r}")
    if not 0 <= low < high <= 100:
        raise ValueError(f"normalize: percentiles need 0 <= low < high <= 100, got low={low}, "
                         f"high={high}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"normalize: expected a (C, H, W) image, got shape {image.shape}")
    if mode == "none":
        return image.copy()
    return np.stack([_normalize_channel(channel, mode, low, high) for channel in image])
