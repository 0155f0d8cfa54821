"""Data: the synthetic dataset, image and mask files, folders, normalisation, augmentation,
weight maps, tiling."""

from scratchseg.data.augment import augment
from scratchseg.data.batches import (
    WeightMaps,
    batch_indices,
    epoch_order,
    tiles_per_image,
    training_batch,
)
from scratchseg.data.dataset import IGNORE_INDEX, Sample, Subset, instances_from_mask
from scratchseg.data.folder import MASK_MODES, FolderDataset
from scratchseg.data.images import IMAGE_EXTENSIONS, read_image, read_pages
from scratchseg.data.masks import (
    MASK_EXTENSIONS,
    MaskStyle,
    check_class_masks,
    mask_png_dtype,
    read_mask_pages,
    write_labels,
    write_mask,
)
from scratchseg.data.normalize import NORMALIZATIONS, normalize_image
from scratchseg.data.synthetic import SyntheticShapes
from scratchseg.data.tiling import input_size_for_output, predict_logits, random_tile
from scratchseg.data.weightmap import unet_weight_map

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "MASK_MODES",
    "NORMALIZATIONS",
    "FolderDataset",
    "MaskStyle",
    "Sample",
    "Subset",
    "SyntheticShapes",
    "WeightMaps",
    "augment",
    "batch_indices",
    "check_class_masks",
    "epoch_order",
    "input_size_for_output",
    "instances_from_mask",
    "mask_png_dtype",
    "normalize_image",
    "predict_logits",
    "random_tile",
    "read_image",
    "read_mask_pages",
    "read_pages",
    "tiles_per_image",
    "training_batch",
    "unet_weight_map",
    "write_labels",
    "write_mask",
]
