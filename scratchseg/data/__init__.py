"""Data: the synthetic dataset, image/mask folders, augmentation, weight maps, tiling."""

from scratchseg.data.augment import augment
from scratchseg.data.batches import WeightMaps, batch_indices, epoch_order, training_batch
from scratchseg.data.dataset import Sample, Subset, instances_from_mask
from scratchseg.data.folder import (
    FolderDataset,
    mask_png_dtype,
    read_image,
    read_mask,
    write_mask_png,
)
from scratchseg.data.synthetic import SyntheticShapes
from scratchseg.data.tiling import input_size_for_output, predict_logits, random_tile
from scratchseg.data.weightmap import unet_weight_map

__all__ = [
    "FolderDataset",
    "Sample",
    "Subset",
    "SyntheticShapes",
    "WeightMaps",
    "augment",
    "batch_indices",
    "epoch_order",
    "input_size_for_output",
    "instances_from_mask",
    "mask_png_dtype",
    "predict_logits",
    "random_tile",
    "read_image",
    "read_mask",
    "training_batch",
    "unet_weight_map",
    "write_mask_png",
]
