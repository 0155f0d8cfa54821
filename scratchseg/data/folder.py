"""A dataset of image files and mask files: ``DIR/images/*`` and ``DIR/masks/*`` matched by stem.

Images are PNG (Pillow) or TIFF (tifffile), grayscale or RGB, 8 or 16 bit
(scaled to [0, 1]) or float. Masks hold one integer value per class, in
[0, 65535] (what an 8- or 16-bit PNG mask holds); the sorted set of values
over all masks maps to classes 0..K-1 and is kept as ``class_values`` so
predictions can be written back in the original values.
"""

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from scratchseg.data.dataset import Sample
from scratchseg.fileio import atomic_path

EXTENSIONS = (".png", ".tif", ".tiff")
MAX_CLASSES = 256
MASK_VALUE_RANGE = (0, 65535)  # the values an 8- or 16-bit grayscale PNG holds


def _read_array(path):
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as image:
            return np.asarray(image)
    except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from error


def read_image(path):
    """float32 (C, H, W): grayscale -> 1 channel, RGB(A) -> 3; uint8 / 255, uint16 / 65535."""
    array = _read_array(path)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].transpose(2, 0, 1)
    elif array.ndim == 2:
        array = array[None]
    else:
        raise ValueError(f"{path}: expected a grayscale or RGB image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535
    if array.dtype == bool or array.dtype.kind in "iuf":
        return array.astype(np.float32)
    raise ValueError(f"{path}: unsupported pixel type {array.dtype}")


def read_mask(path):
    """int64 (H, W) mask values in [0, 65535]; a colour, fractional or negative mask is an error."""
    array = _read_array(path)
    if array.ndim != 2:
        raise ValueError(f"{path}: a mask must be single-channel (H, W), got shape "
                         f"{array.shape}; save it as grayscale or palette PNG")
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{path}: mask values must be integers, got fractional values")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{path}: unsupported mask type {array.dtype}")
    low, high = MASK_VALUE_RANGE
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{path}: mask values must be integers in [{low}, {high}] (one value "
                         f"per class, as an 8- or 16-bit PNG mask holds), got values from "
                         f"{array.min():g} to {array.max():g}")
    return array.astype(np.int64)


def mask_png_dtype(values, what):
    """uint8 when every value fits, else uint16; ValueError naming ``what`` outside [0, 65535]."""
    values = np.asarray(values)
    low, high = MASK_VALUE_RANGE
    if values.dtype.kind not in "iub" or (values.size and (values.min() < low
                                                           or values.max() > high)):
        shown = f"values from {values.min()} to {values.max()}" if values.size else "no values"
        raise ValueError(f"{what}: a mask PNG holds integers in [{low}, {high}], got "
                         f"{values.dtype} {shown}")
    return np.uint8 if values.max(initial=0) < 256 else np.uint16


def write_mask_png(path, mask):
    """Write an integer (H, W) mask as an 8- or 16-bit grayscale PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: a mask PNG needs an (H, W) array, got shape {mask.shape}")
    dtype = mask_png_dtype(mask, path)
    with atomic_path(path) as temp:
        Image.fromarray(mask.astype(dtype)).save(temp, format="PNG")


def _files_by_stem(folder):
    if not folder.is_dir():
        raise ValueError(f"{folder}: folder not found (expected DIR/images and DIR/masks)")
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in EXTENSIONS:
            if path.stem in files:
                raise ValueError(f"{folder}: two files share the stem {path.stem!r}")
            files[path.stem] = path
    return files


class FolderDataset:
    """Images and masks from ``root/images`` and ``root/masks``, loaded once into memory."""

    def __init__(self, root, class_values=None):
        root = Path(root)
        images, masks = _files_by_stem(root / "images"), _files_by_stem(root / "masks")
        if not images:
            raise ValueError(f"{root / 'images'}: no .png/.tif/.tiff images")
        for stem in sorted(set(images) ^ set(masks)):
            which = "mask" if stem in images else "image"
            found = images.get(stem) or masks.get(stem)
            raise ValueError(f"{found}: no matching {which} with stem {stem!r}")
        self.names = sorted(images)
        self.images = [read_image(images[s]) for s in self.names]
        raw_masks = [read_mask(masks[s]) for s in self.names]
        for stem, image, mask in zip(self.names, self.images, raw_masks):
            if image.shape[1:] != mask.shape:
                raise ValueError(f"{masks[stem]}: mask is {mask.shape[1]}x{mask.shape[0]} but "
                                 f"{images[stem]} is {image.shape[2]}x{image.shape[1]}")
        channels = {image.shape[0] for image in self.images}
        if len(channels) > 1:
            raise ValueError(f"{root / 'images'}: images mix {sorted(channels)} channels")
        self.in_channels = channels.pop()
        self.class_values = self._class_values(raw_masks, [masks[s] for s in self.names],
                                               class_values)
        lookup = {value: k for k, value in enumerate(self.class_values)}
        self.masks = []
        for stem, mask in zip(self.names, raw_masks):
            values, inverse = np.unique(mask, return_inverse=True)
            unknown = [int(v) for v in values if int(v) not in lookup]
            if unknown:
                raise ValueError(f"{masks[stem]}: mask value(s) {unknown[:5]} are not among the "
                                 f"model's classes {self.class_values}")
            classes = np.array([lookup[int(v)] for v in values], dtype=np.int64)
            self.masks.append(classes[inverse].reshape(mask.shape))
        self.num_classes = len(self.class_values)

    @staticmethod
    def _class_values(raw_masks, mask_paths, given):
        if given is not None:
            return [int(v) for v in given]
        distinct = [np.unique(mask) for mask in raw_masks]
        values = sorted({int(v) for mask_values in distinct for v in mask_values})
        if len(values) > MAX_CLASSES:
            most = sorted(zip(distinct, mask_paths), key=lambda pair: -len(pair[0]))[:3]
            named = ", ".join(f"{path} ({len(mask_values)})" for mask_values, path in most)
            raise ValueError(f"masks hold {len(values)} distinct values; at most {MAX_CLASSES} "
                             f"classes are supported (are these masks or images?); most "
                             f"distinct values in: {named}")
        if len(values) < 2:
            raise ValueError(f"masks hold a single value {values}; segmentation needs at least "
                             f"2 classes")
        return values

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        # instances None: the weight map derives them from the mask when asked
        return Sample(self.images[i], self.masks[i], None, self.names[i])
