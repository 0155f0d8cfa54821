"""The U-Net weight map (Ronneberger et al. 2015, Eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

d1 and d2 are the Euclidean distances from pixel x to the nearest and the
second-nearest object (instance). The border term is added on background pixels
only, so the thin gaps between touching objects weigh heavily; it is 0 when the
image holds fewer than two objects. w_c balances the classes: 1 everywhere, or
with ``class_balance`` the inverse frequency of foreground and background,
scaled so that its mean over the image is 1.
"""

import numpy as np
from scipy import ndimage

from scratchseg.data.dataset import check_instances

_NEGLIGIBLE = 1e-7


def unet_weight_map(instances, w0=10.0, sigma=5.0, class_balance=False):
    """float32 (H, W) weight map from an int (H, W) instance map (0 = background)."""
    instances = check_instances(instances, "unet_weight_map")
    if w0 < 0 or sigma <= 0:
        raise ValueError(f"unet_weight_map: need w0 >= 0 and sigma > 0, got {w0} and {sigma}")
    foreground = instances > 0
    weight = _class_weight(foreground) if class_balance else np.ones(instances.shape)
    ids = np.unique(instances[foreground])
    if ids.size >= 2 and w0 > 0:
        labels = np.where(foreground, np.searchsorted(ids, instances) + 1, 0)
        reach = sigma * np.sqrt(2 * np.log(max(w0 / _NEGLIGIBLE, 1.0)))
        d1, d2 = _two_nearest_distances(labels, reach)
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        weight += np.where(foreground, 0.0, border)
    return weight.astype(np.float32)


def _class_weight(foreground):
    """w_c = 1 / (2 f) on foreground and 1 / (2 (1 - f)) on background, f the foreground share."""
    share = foreground.mean()
    if share in (0.0, 1.0):
        return np.ones(foreground.shape)
    return np.where(foreground, 1 / (2 * share), 1 / (2 * (1 - share)))


def _two_nearest_distances(labels, reach):
    """Per pixel, the two smallest distances to objects 1..N of ``labels`` (inf beyond ``reach``).

    Each object's distance transform is computed in its bounding box grown by
    ``reach``: exact there, and any pixel outside is farther than ``reach``, where
    the border term is below _NEGLIGIBLE.
    """
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    margin = int(np.ceil(reach))
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, n))
            for s, n in zip(box, labels.shape, strict=True)
        )
        distance = ndimage.distance_transform_edt(labels[window] != label)
        nearest, second = d1[window], d2[window]
        d2[window] = np.minimum(second, np.maximum(nearest, distance))
        d1[window] = np.minimum(nearest, distance)
    return d1, d2
