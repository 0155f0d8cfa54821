"""Training batches keyed on (seed, epoch, draw): the same tiles on any process.

An epoch is a shuffled list of draws, each one random tile of one image; an
image of A pixels is drawn about A / (output tile area) times, so an epoch
covers each image's area about once. Every random draw of a tile
(augmentation, tile position) comes from
``numpy.random.default_rng([SAMPLE_STREAM, seed, epoch, draw])``, never from
a shared generator, so splitting a batch over processes, or resuming a run,
gives exactly the tiles one uninterrupted process would have drawn. Each use
has its own leading stream tag: NumPy's seed sequences treat trailing zeros
as absent, so [seed, epoch] and [seed, epoch, 0] would give the same numbers.
"""

import math

import numpy as np

from scratchseg.data.augment import augment as augment_sample
from scratchseg.data.dataset import instances_from_mask
from scratchseg.data.tiling import centre_tile, random_tile
from scratchseg.data.weightmap import unet_weight_map

ORDER_STREAM, SAMPLE_STREAM, SPLIT_STREAM, DROPOUT_STREAM = 1, 2, 3, 4
# Context kept around a tile for augmentation: the elastic deformation moves pixels by
# about N(0, 10^2), so 3 sigma of them can enter the tile from outside it.
AUGMENT_MARGIN = 30


def tiles_per_image(shapes, tile):
    """Draws per epoch of each image of ``shapes`` ((H, W) each): ceil(H W / tile^2)."""
    return [max(1, math.ceil(height * width / tile**2)) for height, width in shapes]


def epoch_order(tile_counts, *, epoch, seed, total=None):
    """The sample index of each draw of ``epoch``: image i ``tile_counts[i]`` times, shuffled;
    repeated (each round shuffled anew) and cut to ``total`` draws when given."""
    rng = np.random.default_rng([ORDER_STREAM, seed, epoch])
    pool = np.repeat(np.arange(len(tile_counts)), tile_counts)
    total = len(pool) if total is None else total
    if total and not len(pool):
        raise ValueError("epoch_order: no images to draw tiles from")
    rounds = [rng.permutation(pool) for _ in range(-(-total // max(len(pool), 1)))]
    return np.concatenate(rounds or [pool])[:total]


def batch_indices(order, batch_size):
    """Consecutive batches of ``order``; the last may be shorter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = [int(i) for i in order]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class WeightMaps:
    """The paper's weight map per sample index, computed once and kept."""

    def __init__(self, w0=10.0, sigma=5.0):
        self.w0, self.sigma, self._maps = w0, sigma, {}

    def __call__(self, index, sample):
        if index not in self._maps:
            instances = sample.instances
            if instances is None:
                instances = instances_from_mask(sample.mask)
            self._maps[index] = unet_weight_map(instances, self.w0, self.sigma)
        return self._maps[index]


def training_batch(dataset, indices, draws, *, epoch, seed, input_size, output_size,
                   augment=True, weight_maps=None, max_gain=1.1):
    """x float32 (B, C, s, s), labels int64 (B, o, o), weights float32 (B, o, o) or None.

    For each sample index and its draw number in the epoch: the sample's weight
    map (when ``weight_maps`` is a WeightMaps), a random tile with input edge s and
    output edge o, all drawn from the draw's own generator. With ``augment`` (its
    intensity gain up to ``max_gain`` either way), an image larger than the tile's
    input with AUGMENT_MARGIN pixels of context on each side gives that window,
    which is augmented (the paper's 3 x 3 elastic grid then spans the window) and
    cut to s and o, so a draw costs the same whatever the image's size; a smaller
    image is augmented whole, then cut. No indices give B = 0 (the empty
    shard of a process in data-parallel training).
    """
    if len(indices) != len(draws):
        raise ValueError(f"training_batch: one draw number per index, got {len(indices)} "
                         f"indices and {len(draws)} draws")
    if len(indices) == 0:
        x = np.zeros((0, dataset.in_channels, input_size, input_size), np.float32)
        labels = np.zeros((0, output_size, output_size), np.int64)
        return x, labels, None if weight_maps is None else labels.astype(np.float32)
    images, masks, weights = [], [], []
    for index, draw in zip(indices, draws, strict=True):
        sample = dataset[index]
        rng = np.random.default_rng([SAMPLE_STREAM, seed, epoch, int(draw)])
        weight = None if weight_maps is None else weight_maps(int(index), sample)
        image, mask = sample.image, sample.mask
        window = input_size + 2 * AUGMENT_MARGIN
        if augment and window**2 < mask.size:  # a window around the tile: cheaper to warp
            image, mask, weight = random_tile(image, mask, weight, input_size=input_size,
                                              output_size=output_size, rng=rng, window=window)
            image, mask, weight = augment_sample(image, mask, weight, rng=rng,
                                                 max_gain=max_gain)
            image, mask, weight = centre_tile(image, mask, weight, input_size=input_size,
                                              output_size=output_size)
        else:  # the whole image is no larger than the window: augment it all, then cut
            if augment:
                image, mask, weight = augment_sample(image, mask, weight, rng=rng,
                                                     max_gain=max_gain)
            image, mask, weight = random_tile(image, mask, weight, input_size=input_size,
                                              output_size=output_size, rng=rng)
        images.append(image)
        masks.append(mask)
        weights.append(weight)
    x = np.stack(images).astype(np.float32)
    labels = np.stack(masks).astype(np.int64)
    weight_map = None if weight_maps is None else np.stack(weights).astype(np.float32)
    return x, labels, weight_map
