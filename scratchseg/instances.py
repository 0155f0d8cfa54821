"""Instance label images from a model's output (a three-class map or a binary foreground):
seeds grown over the foreground.

Objects are 8-connected (a pixel touches the 8 around it), and growth counts chessboard
steps, the distance of scratchseg.data.targets.boundary_target's band.

The growth is ``scipy.ndimage.watershed_ift``. It ranks a path by its largest step
|f(p) - f(q)| between neighbours, not by the height f it reaches, so a classical
elevation (a distance map) orders nothing and its ties fall to a depth-first queue.
Here f is a flat floor (0) on the foreground and a wall (1) on the background, and the
seeds go in as negative markers, which watershed_ift queues first in, first out: the flood
is breadth-first, and each foreground pixel joins the seed it reaches in the fewest
8-connected steps without leaving the foreground (ties go to the seed queued first).
"""

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity
# Two maxima of the distance transform belong to one object when the straight line
# between them never drops below this fraction of the lower one's height.
_RIDGE_FRACTION = 0.8


def instances_from_classes(classes, *, interior=1, boundary=2, min_size=0):
    """int32 (H, W) instances from an int (H, W) class map of interior, boundary and others.

    Seeds are the 8-connected components of ``classes == interior``; they grow over the
    foreground (interior or boundary); any other class is background. Boundary that no
    interior reaches is no object: an object always has an interior, and a network's
    stray boundary pixels (on noise, say) would otherwise each count as one. Objects
    under ``min_size`` pixels become 0; the rest are numbered 1..K.
    """
    classes = _checked_map(classes, "instances_from_classes", "classes")
    if interior == boundary:
        raise ValueError(
            f"instances_from_classes: interior and boundary must differ, got {interior} for both"
        )
    _check_min_size(min_size, "instances_from_classes")
    seeds = ndimage.label(classes == interior, structure=_EIGHT)[0]
    foreground = (classes == interior) | (classes == boundary)
    components = ndimage.label(foreground, structure=_EIGHT)[0]
    seeded = np.isin(components, np.unique(components[seeds > 0]))
    return _relabel(_grow(seeds, foreground & seeded), min_size)


def instances_from_foreground(foreground, *, min_size=0, split=True):
    """int32 (H, W) instances from a binary (H, W) foreground map (bool, or integers 0/1).

    split=False: the 8-connected components. split=True: the maxima of the Euclidean
    distance transform d that stand apart (see _separate_maxima) each seed the part of
    their inscribed disk |x - c| < d(c) where d(c) - |x - c| is largest, and the seeds grow
    over the foreground, so touching round objects separate along a line through the two
    points where their outlines cross. Objects under ``min_size`` pixels become 0; the
    rest are numbered 1..K.
    """
    foreground = _checked_map(foreground, "instances_from_foreground", "foreground")
    if foreground.size and (foreground.min() < 0 or foreground.max() > 1):
        raise ValueError(
            "instances_from_foreground: foreground must hold 0 and 1 only, got values in "
            f"[{foreground.min()}, {foreground.max()}]"
        )
    _check_min_size(min_size, "instances_from_foreground")
    foreground = foreground.astype(bool)
    if not split:
        return _relabel(ndimage.label(foreground, structure=_EIGHT)[0], min_size)
    distance = ndimage.distance_transform_edt(foreground)
    centres, radii = _separate_maxima(distance, foreground)
    return _relabel(_grow(_inscribed_disks(centres, radii, foreground.shape), foreground),
                    min_size)


def instances_from_prediction(classes, num_classes, target="semantic", min_size=0):
    """int32 (H, W) objects 1..K from a model's predicted class map: for a ``boundary``
    target the interiors grown over the foreground (instances_from_classes), else the
    8-connected components of each class but 0, so that touching objects of different
    classes stay apart; objects under ``min_size`` pixels dropped."""
    if target == "boundary":
        return instances_from_classes(classes, min_size=min_size)
    labels = np.zeros(np.shape(classes), np.int32)
    for k in range(1, num_classes):
        objects = instances_from_foreground(classes == k, min_size=min_size, split=False)
        labels[objects > 0] = objects[objects > 0] + labels.max()
    return labels


def _checked_map(array, op, name):
    """``array`` as a 2-D bool or integer array, or the error that names ``op`` and ``name``."""
    array = np.asarray(array)
    if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{op}: {name} must hold integers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{op}: {name} must be 2-D (H, W), got shape {array.shape}")
    return array


def _check_min_size(min_size, op):
    """Refuse a ``min_size`` that is not an integer >= 0, naming ``op``."""
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 0:
        raise ValueError(f"{op}: min_size must be an integer >= 0, got {min_size!r}")


def _grow(seeds, foreground):
    """Seeds (int, ids > 0, inside ``foreground``) flooded breadth-first over ``foreground``;
    foreground components without a seed get new ids; background 0 (see the module
    docstring).

    The background stays unmarked: as markers too it would not be flooded, but then pixels
    that watershed_ift queues twice can keep a wrong label (seen with scipy 1.17).
    """
    components, count = ndimage.label(foreground, structure=_EIGHT)
    seeded = np.zeros(count + 1, dtype=bool)
    seeded[components[seeds > 0]] = True
    markers = -seeds.astype(np.int32)
    seedless = foreground & ~seeded[components]
    markers[seedless] = -(seeds.max(initial=0) + components[seedless])
    floor = np.where(foreground, 0, 1).astype(np.uint8)
    grown = ndimage.watershed_ift(floor, markers, structure=_EIGHT)
    return np.where(foreground, -grown, 0)


def _separate_maxima(distance, foreground):
    """Centres (N, 2) and heights (N,) of the maxima of ``distance`` that stand apart.

    Each plateau of 3x3 local maxima is a candidate, at its first pixel in raster order.
    From the highest down, a candidate is kept unless the straight line to a kept one of
    its component stays at or above _RIDGE_FRACTION of its height: a ridge, not a valley,
    joins them.
    """
    peaks = foreground & (distance == ndimage.maximum_filter(distance, size=3))
    plateaus = ndimage.label(peaks, structure=_EIGHT)[0]
    at_peaks = np.flatnonzero(plateaus)
    first = np.unique(plateaus.ravel()[at_peaks], return_index=True)[1]
    tops = np.column_stack(np.unravel_index(at_peaks[first], distance.shape))
    heights = distance[tops[:, 0], tops[:, 1]]
    components = ndimage.label(foreground, structure=_EIGHT)[0][tops[:, 0], tops[:, 1]]
    kept = {}  # component -> indices of its kept maxima
    for i in np.argsort(-heights, kind="stable"):
        rivals = kept.setdefault(components[i], [])
        level = _RIDGE_FRACTION * heights[i]
        if not any(_line_minimum(distance, tops[i], tops[j]) >= level for j in rivals):
            rivals.append(i)
    chosen = sorted(i for rivals in kept.values() for i in rivals)
    return tops[chosen], heights[chosen]


def _line_minimum(image, start, stop):
    """The smallest value of ``image`` on the pixels of the straight line start -> stop."""
    steps = int(np.abs(stop - start).max()) + 1
    rows, cols = np.rint(np.linspace(start, stop, steps)).astype(np.intp).T
    return image[rows, cols].min()


def _inscribed_disks(centres, radii, shape):
    """int32 seeds: pixel x joins the centre c with the largest radius(c) - |x - c| > 0."""
    seeds = np.zeros(shape, dtype=np.int32)
    depth = np.zeros(shape)
    for label, ((row, col), radius) in enumerate(zip(centres, radii), start=1):
        reach = int(np.ceil(radius))
        window = (slice(max(row - reach, 0), min(row + reach + 1, shape[0])),
                  slice(max(col - reach, 0), min(col + reach + 1, shape[1])))
        rows, cols = np.ogrid[window]
        inside = radius - np.hypot(rows - row, cols - col)
        deeper = inside > depth[window]
        depth[window][deeper] = inside[deeper]
        seeds[window][deeper] = label
    return seeds


def _relabel(labels, min_size):
    """int32 ``labels`` with objects under ``min_size`` pixels set to 0, the rest 1..K."""
    sizes = np.bincount(labels.ravel(), minlength=1)
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    new_ids = np.zeros(sizes.size, dtype=np.int32)
    new_ids[keep] = np.arange(1, keep.sum() + 1)
    return new_ids[labels]
