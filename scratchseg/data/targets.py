"""Training targets from instance labels: the boundary map that lets a class map tell
touching objects apart.

    target(x) = 0  where instances(x) == 0                      (background)
                2  where some y with |x - y|_inf <= width has instances(y) != instances(x)
                1  otherwise                                    (object interior)

The distance is the chessboard distance |x - y|_inf = max(|row|, |col|): the boundary is
every object pixel whose (2 width + 1)^2 square holds a pixel of another object or of the
background, so two touching objects are parted by a band of 2 * width boundary pixels.
Pixels outside the image count as nothing: an object cut by the image edge keeps its
interior up to the edge. An object that holds no (2 width + 1)^2 square (thinner than
2 width + 1 pixels) has no interior and becomes all boundary.
"""

import numpy as np
from scipy import ndimage

from scratchseg.data.dataset import IGNORE_INDEX, DatasetView, Sample, check_instances

# What a model learns from instance labels: the class mask as it is ("semantic"), or
# boundary_target's background / interior / boundary classes ("boundary").
TARGETS = ("semantic", "boundary")


def boundary_target(instances, width=2):
    """int64 (H, W) map of 0 background, 1 interior, 2 boundary from an int (H, W) instance map.

    A pixel is interior when the min and the max of ``instances`` over its square of side
    2 width + 1 both equal its own id (two separable filters, no loop over objects).
    """
    instances = check_instances(instances, "boundary_target")
    if isinstance(width, bool) or not isinstance(width, int | np.integer) or width < 1:
        raise ValueError(f"boundary_target: width must be an integer >= 1, got {width!r}")
    side = 2 * int(width) + 1
    lowest = ndimage.minimum_filter(instances, size=side, mode="nearest")
    highest = ndimage.maximum_filter(instances, size=side, mode="nearest")
    objects = instances > 0
    target = np.where(objects, 2, 0).astype(np.int64)
    target[objects & (lowest == instances) & (highest == instances)] = 1
    return target


class BoundaryTargets(DatasetView):
    """``dataset`` with each sample's mask replaced by ``boundary_target`` of its instances:
    three classes (0 background, 1 interior, 2 boundary)."""

    num_classes = 3
    class_values = [0, 1, 2]

    def __init__(self, dataset, width=2):
        self.dataset, self.width = dataset, width

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        sample = self.dataset[i]
        if sample.instances is None:
            raise ValueError(f"{sample.name}: --target boundary needs instance labels "
                             f"(--masks instances)")
        target = boundary_target(sample.instances, self.width)
        target[sample.mask == IGNORE_INDEX] = IGNORE_INDEX
        return Sample(sample.image, target, sample.instances, sample.name)
