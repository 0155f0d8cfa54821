"""Training and validation data: a separate folder, held-out images, or held-out regions.

Whole images are held out when there are enough of them. With fewer than
``MIN_IMAGES_TO_SPLIT`` images, holding out one would leave too little to learn
from, so each image is cut in two instead: the last ``val_fraction`` of its
longer side validates, the rest trains.
"""

import math

import numpy

from scratchseg.data import Sample, Subset
from scratchseg.data.batches import SPLIT_STREAM
from scratchseg.data.dataset import DatasetView

MIN_IMAGES_TO_SPLIT = 5


class Crops(DatasetView):
    """Sample i is ``dataset[i]`` cut to ``boxes[i] = (top, bottom, left, right)``."""

    def __init__(self, dataset, boxes, suffix):
        self.dataset, self.boxes, self.suffix = dataset, list(boxes), suffix

    def __len__(self):
        return len(self.boxes)

    def __getitem__(self, i):
        top, bottom, left, right = self.boxes[i]
        sample = self.dataset[i]
        window = (slice(top, bottom), slice(left, right))
        instances = None if sample.instances is None else sample.instances[window]
        return Sample(sample.image[(slice(None), *window)], sample.mask[window], instances,
                      f"{sample.name}{self.suffix}")


def held_out_regions(dataset, val_fraction):
    """(train crops, validation crops): each image's longer side cut at 1 - val_fraction."""
    train_boxes, val_boxes = [], []
    for i in range(len(dataset)):
        height, width = dataset[i].mask.shape
        along_rows = height >= width
        length = height if along_rows else width
        cut = min(max(length - math.ceil(length * val_fraction), 1), length - 1)
        if along_rows:
            train_boxes.append((0, cut, 0, width))
            val_boxes.append((cut, height, 0, width))
        else:
            train_boxes.append((0, height, 0, cut))
            val_boxes.append((0, height, cut, width))
    return Crops(dataset, train_boxes, ":train"), Crops(dataset, val_boxes, ":val")


def split_dataset(dataset, val_fraction, seed):
    """(train, validation): a seeded split of whole images, or held-out regions when there
    are fewer than MIN_IMAGES_TO_SPLIT images; validation is empty when val_fraction is 0."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(dataset) < 1:
        raise ValueError("the dataset is empty")
    if val_fraction == 0:
        return Subset(dataset, range(len(dataset))), Subset(dataset, [])
    if len(dataset) < MIN_IMAGES_TO_SPLIT:
        return held_out_regions(dataset, val_fraction)
    order = numpy.random.default_rng([SPLIT_STREAM, seed]).permutation(len(dataset))
    num_val = min(max(round(len(dataset) * val_fraction), 1), len(dataset) - 1)
    return Subset(dataset, sorted(order[num_val:])), Subset(dataset, sorted(order[:num_val]))
