"""Data augmentation for segmentation: flips, 90-degree rotations, elastic deformation, intensity.

Every geometric change is applied identically to the image, the mask and the
weight map. The elastic deformation is the U-Net paper's: displacement vectors
drawn from N(0, sigma^2) on a coarse grid x grid lattice spanning the image,
interpolated bicubically to a smooth per-pixel field u(p); each output pixel p
takes the input at p + u(p). The image is resampled bicubically, the mask by
nearest neighbour (so it keeps its values), the weight map bilinearly; points
outside the image are mirrored.
"""

import numpy as np
from scipy import ndimage


def augment(
    image,
    mask,
    weight=None,
    *,
    rng,
    flip=True,
    rotate=True,
    elastic=True,
    intensity=True,
    elastic_sigma=10.0,
    elastic_grid=3,
    max_gain=1.1,
    offset=0.1,
):
    """Randomly transform ``image`` (C, H, W), ``mask`` (H, W) and ``weight`` (H, W) or None.

    flip: mirror left-right and up-down, each with probability 1/2.
    rotate: rotate by k * 90 degrees, k uniform in 0..3 (H and W swap for odd k).
    elastic: the elastic deformation above, with ``elastic_sigma`` pixels and ``elastic_grid``.
    intensity: image * a + b with log a uniform in [-log max_gain, log max_gain] (a gain
    between 1 / max_gain and max_gain) and b uniform in [-offset, offset].

    Returns new arrays (image, mask, weight) with the input dtypes; weight stays None if None.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    _check(image, mask, weight)
    arrays = [image, mask[None]] + ([] if weight is None else [np.asarray(weight)[None]])
    if flip:
        for axis, flipped in zip((-1, -2), rng.random(2) < 0.5, strict=True):
            if flipped:
                arrays = [np.flip(a, axis=axis) for a in arrays]
    if rotate:
        quarter_turns = int(rng.integers(4))
        arrays = [np.rot90(a, quarter_turns, axes=(-2, -1)) for a in arrays]
    if elastic:
        field = elastic_displacement(rng, arrays[0].shape[-2:], elastic_sigma, elastic_grid)
        orders = (3, 0, 1)[: len(arrays)]  # image bicubic, mask nearest, weight bilinear
        arrays = [warp(a, field, order) for a, order in zip(arrays, orders, strict=True)]
    image, mask = np.array(arrays[0], order="C"), np.array(arrays[1][0], order="C")
    weight = None if weight is None else np.array(arrays[2][0], order="C")
    if intensity:
        log_gain = np.log(max_gain)
        a, b = np.exp(rng.uniform(-log_gain, log_gain)), rng.uniform(-offset, offset)
        image = (image * a + b).astype(image.dtype)
    return image, mask, weight


def elastic_displacement(rng, shape, sigma, grid):
    """float64 (2, H, W) smooth displacement (rows, columns) in pixels.

    N(0, sigma^2) vectors on a grid x grid lattice whose corners are the image
    corners, interpolated with cubic splines.
    """
    if grid < 2:
        raise ValueError(f"elastic_displacement: grid must be >= 2 points per axis, got {grid}")
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    rows = np.linspace(0, grid - 1, shape[0])
    cols = np.linspace(0, grid - 1, shape[1])
    points = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([ndimage.map_coordinates(c, points, order=3, mode="mirror") for c in coarse])


def warp(array, displacement, order):
    """Resample each channel of ``array`` (C, H, W) at p + displacement(p), mirroring outside.

    order: spline order (0 nearest, 1 bilinear, 3 bicubic). The dtype is kept.
    """
    height, width = array.shape[-2:]
    rows, cols = np.mgrid[0:height, 0:width]
    points = [rows + displacement[0], cols + displacement[1]]
    return np.stack(
        [
            ndimage.map_coordinates(c, points, order=order, mode="reflect", output=array.dtype)
            for c in array
        ]
    )


def _check(image, mask, weight):
    if image.ndim != 3:
        raise ValueError(f"augment: image must be (C, H, W), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"augment: image must be floating point, got dtype {image.dtype}")
    if mask.shape != image.shape[1:]:
        raise ValueError(
            f"augment: mask must be (H, W) = {image.shape[1:]} like the image, got {mask.shape}"
        )
    if weight is not None and np.shape(weight) != image.shape[1:]:
        raise ValueError(
            f"augment: weight must be (H, W) = {image.shape[1:]} like the image, "
            f"got {np.shape(weight)}"
        )
