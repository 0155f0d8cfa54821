"""Synthetic shapes: a learnable segmentation task generated from a seed.

Four classes: 0 background, 1 ellipse, 2 rectangle (rotated), 3 triangle. Each
image holds a few objects of random size, orientation and intensity on a
background with a linear gradient, plus Gaussian noise. Objects may touch and
overlap: a later object occludes earlier ones, and the instance map records each
object's id on its visible pixels. A placement that would hide more than
``max_occlusion`` of an earlier object is redrawn, so every object stays
recognisable by its shape.

Sample i is drawn from ``np.random.default_rng([seed, i])``: the same seed and
index always give the same sample, whatever else was generated before.
"""

from typing import NamedTuple

import numpy as np

from scratchseg.data.dataset import Sample
from scratchseg.data.normalize import NORMALIZATIONS, normalize_image

CLASS_NAMES = ("background", "ellipse", "rectangle", "triangle")
_PLACEMENT_TRIES = 20


class Scene(NamedTuple):
    """A rendered image with its labels; ``footprints[j]`` is object j's full, unoccluded shape."""

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    footprints: np.ndarray


def _ellipse(yy, xx, cy, cx, r, angle, rng):
    """(u/a)^2 + (v/b)^2 <= 1 in the frame rotated by ``angle``; a = r, b in [0.65 r, r]."""
    u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
    v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    a, b = r, r * rng.uniform(0.65, 1.0)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _rectangle(yy, xx, cy, cx, r, angle, rng):
    """|u| <= h1 and |v| <= h2 in the rotated frame; h1 = 0.85 r, h2 in [0.6 h1, h1]."""
    u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
    v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    h1 = 0.85 * r
    h2 = h1 * rng.uniform(0.6, 1.0)
    return (np.abs(u) <= h1) & (np.abs(v) <= h2)


def _triangle(yy, xx, cy, cx, r, angle, rng):
    """Vertices at radius 1.4 r, angles angle + 2 pi k / 3 (+-0.3 rad): inside all three edges."""
    angles = angle + 2 * np.pi * np.arange(3) / 3 + rng.uniform(-0.3, 0.3, size=3)
    vy = cy + 1.4 * r * np.sin(angles)
    vx = cx + 1.4 * r * np.cos(angles)
    inside = np.ones(yy.shape, dtype=bool)
    for k in range(3):
        ay, ax, by, bx = vy[k], vx[k], vy[(k + 1) % 3], vx[(k + 1) % 3]
        inside &= (bx - ax) * (yy - ay) - (by - ay) * (xx - ax) >= 0
    return inside


_SHAPES = (_ellipse, _rectangle, _triangle)


def render_scene(
    rng,
    height,
    width,
    *,
    num_objects,
    radius,
    max_occlusion,
    class_intensity,
    intensity_spread,
    background,
    gradient,
    noise_std,
):
    """Draw one scene from ``rng``; see :class:`SyntheticShapes` for the parameters and
    their defaults."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = ((yy - height / 2) * np.sin(phi) + (xx - width / 2) * np.cos(phi)) / max(height, width)
    image = rng.uniform(*background) + rng.uniform(0, gradient) * ramp
    mask = np.zeros((height, width), dtype=np.int64)
    instances = np.zeros((height, width), dtype=np.int32)
    footprints = []
    for _ in range(rng.integers(num_objects[0], num_objects[1] + 1)):
        for _ in range(_PLACEMENT_TRIES):
            cls = int(rng.integers(1, len(CLASS_NAMES)))
            r = rng.uniform(*radius)
            cy, cx = rng.uniform(r, height - r), rng.uniform(r, width - r)
            shape = _SHAPES[cls - 1](yy, xx, cy, cx, r, rng.uniform(0, 2 * np.pi), rng)
            visible = np.bincount(instances.ravel(), minlength=len(footprints) + 1)[1:]
            hidden = np.bincount(instances[shape], minlength=len(footprints) + 1)[1:]
            full = np.array([f.sum() for f in footprints])
            if np.all(visible - hidden >= (1 - max_occlusion) * full):
                break
        else:
            continue
        footprints.append(shape)
        mask[shape] = cls
        instances[shape] = len(footprints)
        mean = class_intensity[cls - 1]
        image[shape] = rng.uniform(mean - intensity_spread, mean + intensity_spread)
    image = image + rng.normal(0.0, noise_std, size=image.shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)[None]
    footprints = np.array(footprints, dtype=bool).reshape(-1, height, width)
    return Scene(image, mask, instances, footprints)


class SyntheticShapes:
    """A dataset of ``num_samples`` synthetic scenes (1 channel, 4 classes), drawn lazily per index.

    size: edge length, or (height, width).
    num_objects: (min, max) objects per image, inclusive.
    radius: (min, max) object radius in pixels.
    max_occlusion: the largest fraction of an object that later objects may hide.
    class_intensity: mean intensity of ellipses, rectangles and triangles.
    intensity_spread: each object's intensity is uniform in mean +- spread.
    background: range of the background's mean intensity.
    gradient: the largest intensity change of the background ramp across the image.
    noise_std: standard deviation of the additive Gaussian noise.
    normalize: the per-image intensity normalisation of scratchseg.data.normalize.
    """

    num_classes = len(CLASS_NAMES)
    in_channels = 1
    class_values = list(range(len(CLASS_NAMES)))

    def __init__(
        self,
        num_samples=256,
        size=96,
        seed=0,
        *,
        num_objects=(3, 8),
        radius=(7.0, 15.0),
        max_occlusion=0.3,
        class_intensity=(0.4, 0.65, 0.9),
        intensity_spread=0.06,
        background=(0.05, 0.25),
        gradient=0.1,
        noise_std=0.05,
        normalize="none",
    ):
        height, width = (size, size) if np.isscalar(size) else size
        if min(height, width) < 2 * radius[1] + 1:
            raise ValueError(
                f"SyntheticShapes: size must be at least 2 * max radius + 1 = "
                f"{int(2 * radius[1] + 1)} to fit an object, got {size}"
            )
        if num_samples < 0:
            raise ValueError(f"SyntheticShapes: num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples)
        self.height, self.width = int(height), int(width)
        self.seed = seed
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"SyntheticShapes: normalize must be one of {NORMALIZATIONS}, "
                             f"got {normalize!r}")
        self.normalize = normalize
        self.options = dict(
            num_objects=num_objects,
            radius=radius,
            max_occlusion=max_occlusion,
            class_intensity=class_intensity,
            intensity_spread=intensity_spread,
            background=background,
            gradient=gradient,
            noise_std=noise_std,
        )

    def __len__(self):
        return self.num_samples

    def scene(self, index):
        """The full scene of sample ``index``, object footprints included."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(
                f"SyntheticShapes: index {index} out of range for {self.num_samples} samples"
            )
        index %= self.num_samples
        rng = np.random.default_rng([self.seed, index])
        return render_scene(rng, self.height, self.width, **self.options)

    def __getitem__(self, index):
        scene = self.scene(index)
        name = f"synthetic-{index % self.num_samples:05d}"
        return Sample(normalize_image(scene.image, self.normalize), scene.mask,
                      scene.instances, name)
