"""The sample/dataset protocol shared by every data source and the trainer.

A dataset is a sequence: ``len(ds)``, ``ds[i] -> Sample``, with the attributes
``num_classes``, ``in_channels`` and ``class_values`` (class k stands for the
original mask value ``class_values[k]``).
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

IGNORE_INDEX = -1  # the class index of mask pixels that count for no class (the loss skips them)


@dataclass
class Sample:
    """One training example.

    image: float32 (C, H, W), values about [0, 1].
    mask: int64 (H, W), class indices 0..K-1.
    instances: int32 (H, W) with 0 = background and k > 0 one object each, or None.
    name: a label for reports (file stem, or "synthetic-00012").
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray | None
    name: str


def check_instances(instances, op, name="instances"):
    """``instances`` as an integer (H, W) label map with ids >= 0 (0 = background), or the
    error that names ``op`` and ``name``."""
    instances = np.asarray(instances)
    if not np.issubdtype(instances.dtype, np.integer):
        raise TypeError(f"{op}: {name} must be an integer label map, got dtype "
                        f"{instances.dtype}")
    if instances.ndim != 2:
        raise ValueError(f"{op}: {name} must be 2-D (H, W), got shape {instances.shape}")
    if instances.size and instances.min() < 0:
        raise ValueError(f"{op}: {name}: ids must be >= 0, got {instances.min()} (0 is "
                         f"background)")
    return instances


class DatasetView:
    """A dataset made from ``self.dataset``: what it does not define itself (the classes,
    the channels, the mask style) is the dataset's."""

    def __getattr__(self, name):
        if name == "dataset":  # not set yet (unpickling, copying): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class Subset(DatasetView):
    """The samples ``indices`` of ``dataset`` (train/val splits)."""

    def __init__(self, dataset, indices):
        indices = [int(i) for i in indices]
        outside = [i for i in indices if not -len(dataset) <= i < len(dataset)]
        if outside:
            raise ValueError(
                f"Subset: indices must lie in [0, {len(dataset)}) for a dataset of "
                f"{len(dataset)} samples, got {outside[:5]}"
            )
        self.dataset = dataset
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def instances_from_mask(mask):
    """Label each 4-connected region of each foreground class (class 0 is background).

    Returns int32 (H, W): 0 on background, 1..N one id per region.
    """
    mask = np.asarray(mask)
    instances = np.zeros(mask.shape, dtype=np.int32)
    count = 0
    for k in np.unique(mask[mask > 0]):
        labels, n = ndimage.label(mask == k)
        instances[labels > 0] = labels[labels > 0] + count
        count += n
    return instances
