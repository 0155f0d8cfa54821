"""A dataset of image files and mask files: ``DIR/images/*`` and ``DIR/masks/*`` paired by stem.

Image ``X.ext`` pairs with mask ``X<mask_suffix>.ext`` (Carvana: ``x.jpg`` with
``x_mask.gif``). Hidden files (``._x.png``, ``.DS_Store``) and other extensions
are skipped. A stack of N pages pairs with a mask stack of N pages and gives
the samples ``X[0]`` .. ``X[N-1]``; an (N, H, W) image whose mask is one
(H, W) page is one N-channel image. Images are kept normalised
(scratchseg.data.normalize).

``masks="auto"`` or ``"classes"``: the sorted mask values (``class_values``)
become classes 0..K-1, after checks that the masks look like class masks
(``"auto"`` also refuses instance ids). ``masks="instances"``: every nonzero
value is one object of the foreground class 1, and the ids are kept. Pixels
of ``ignore_value`` get the class index IGNORE_INDEX.
"""

from pathlib import Path

import numpy as np

from scratchseg.data.dataset import IGNORE_INDEX, Sample
from scratchseg.data.images import IMAGE_EXTENSIONS, read_pages
from scratchseg.data.masks import (
    JPEG_EXTENSIONS,
    MASK_EXTENSIONS,
    check_class_masks,
    read_mask_pages,
    refuse_jpeg,
)
from scratchseg.data.normalize import normalize_image

MASK_MODES = ("auto", "classes", "instances")


def _files_by_stem(folder, extensions):
    """{stem: path} of the visible files in ``folder`` with one of ``extensions``."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: folder not found (expected DIR/images and DIR/masks)")
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in extensions:
            continue
        if path.stem in files:
            raise ValueError(f"{files[path.stem]} and {path} share the stem {path.stem!r}; "
                             f"keep one of them")
        files[path.stem] = path
    return files


def _pair(images, masks, suffix):
    """[(stem, image path, mask path)] sorted by stem; ValueError for a file without partner."""
    for stem, path in images.items():
        if stem + suffix not in masks:
            near = [m for m in masks if m.startswith(stem) and m != stem + suffix
                    and m[len(stem):len(stem) + 1] in ("", "_", "-", ".", " ")]
            hint = ""
            if near:
                option = f"--mask-suffix {near[0][len(stem):]}" if near[0] != stem \
                    else "no --mask-suffix"
                hint = f"; {masks[near[0]]} would pair with {option}"
            raise ValueError(f"{path}: no mask with the stem {stem + suffix!r} in "
                             f"{path.parent.parent / 'masks'}{hint}")
    for stem, path in masks.items():
        if not stem.endswith(suffix):
            raise ValueError(f"{path}: no image pairs with it: its stem does not end with the "
                             f"mask suffix {suffix!r}")
        wanted = stem[:len(stem) - len(suffix)]
        if wanted not in images:
            raise ValueError(f"{path}: no image with the stem {wanted!r} in "
                             f"{path.parent.parent / 'images'}")
    return [(stem, images[stem], masks[stem + suffix]) for stem in sorted(images)]


def _read_pair(image_path, mask_path):
    """(image pages, mask pages, mask style) of one pair, their sizes checked page by page."""
    mask_pages, style = read_mask_pages(mask_path)
    image_pages = read_pages(image_path)
    if len(mask_pages) == 1 and len(image_pages) > 1 and \
            all(page.shape == (1,) + mask_pages[0].shape for page in image_pages):
        image_pages = read_pages(image_path, channels=len(image_pages))
    if len(image_pages) != len(mask_pages):
        raise ValueError(f"{image_path} holds {len(image_pages)} pages but {mask_path} holds "
                         f"{len(mask_pages)}; a stack needs one mask page per image page")
    for i, (image, mask) in enumerate(zip(image_pages, mask_pages)):
        if image.shape[1:] != mask.shape:
            where = f" (page {i})" if len(mask_pages) > 1 else ""
            raise ValueError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but "
                             f"{image_path} is {image.shape[2]}x{image.shape[1]}{where}")
    return image_pages, mask_pages, style


def _class_indices(path, values, lookup, ignore_value):
    """int64 class indices of mask ``values``; ValueError naming ``path`` for an unknown value."""
    distinct, inverse = np.unique(values, return_inverse=True)
    unknown = [int(v) for v in distinct if int(v) not in lookup and v != ignore_value]
    if unknown:
        raise ValueError(f"{path}: mask value(s) {unknown[:5]} are not among the classes "
                         f"{list(lookup)}")
    classes = np.array([lookup.get(int(v), IGNORE_INDEX) for v in distinct], dtype=np.int64)
    return classes[inverse].reshape(values.shape)


class FolderDataset:
    """Images and masks from ``root/images`` and ``root/masks``, loaded once into memory."""

    def __init__(self, root, *, class_values=None, mask_suffix="", masks="auto",
                 ignore_value=None, normalize="percentile", max_classes=32):
        if masks not in MASK_MODES:
            raise ValueError(f"FolderDataset: masks must be one of {', '.join(MASK_MODES)}, "
                             f"got {masks!r}")
        root = Path(root)
        images = _files_by_stem(root / "images", IMAGE_EXTENSIONS)
        mask_files = _files_by_stem(root / "masks", MASK_EXTENSIONS + JPEG_EXTENSIONS)
        for path in mask_files.values():
            refuse_jpeg(path)
        if not images:
            raise ValueError(f"{root / 'images'}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.normalize = normalize
        self.names, self.images, self.image_files = [], [], []
        values_by_file, styles = {}, {}
        for stem, image_path, mask_path in _pair(images, mask_files, mask_suffix):
            pages, mask_pages, styles[mask_path] = _read_pair(image_path, mask_path)
            values_by_file[mask_path] = mask_pages
            for i, page in enumerate(pages):
                self.names.append(stem if len(pages) == 1 else f"{stem}[{i}]")
                self.images.append(normalize_image(page, normalize))
                self.image_files.append(image_path)
        self.in_channels = self._channels()
        self.mask_style = self._style(styles)
        raw = [page for pages in values_by_file.values() for page in pages]
        mask_paths = [path for path, pages in values_by_file.items() for _ in pages]
        ignored = [np.zeros(page.shape, bool) if ignore_value is None else page == ignore_value
                   for page in raw]
        if masks == "instances":
            if class_values is not None and [int(v) for v in class_values] != [0, 1]:
                raise ValueError(f"FolderDataset: masks='instances' has the classes [0, 1], got "
                                 f"class_values {list(class_values)}")
            self.class_values = [0, 1]
            self.instances = [np.where(off, 0, page).astype(np.int32)
                              for page, off in zip(raw, ignored)]
            self.masks = [np.where(off, IGNORE_INDEX, page != 0).astype(np.int64)
                          for page, off in zip(raw, ignored)]
        else:
            if class_values is None:
                check_class_masks(values_by_file, max_classes=max_classes,
                                  instances_check=masks == "auto", ignore_value=ignore_value)
                class_values = self._found_values(raw, ignored)
            self.class_values = [int(v) for v in class_values]
            if ignore_value in self.class_values:
                raise ValueError(f"FolderDataset: ignore_value {ignore_value} is also a class "
                                 f"value {self.class_values}; an ignored value is no class")
            lookup = {value: k for k, value in enumerate(self.class_values)}
            self.instances = None
            self.masks = [_class_indices(path, page, lookup, ignore_value)
                          for path, page in zip(mask_paths, raw)]
        self.num_classes = len(self.class_values)

    def _channels(self):
        first = self.images[0].shape[0]
        for image, path in zip(self.images, self.image_files):
            if image.shape[0] != first:
                raise ValueError(f"{path} has {image.shape[0]} channels but "
                                 f"{self.image_files[0]} has {first}; every image needs the "
                                 f"same channels")
        return first

    @staticmethod
    def _style(styles):
        (first_path, first), *_ = styles.items()
        for path, style in styles.items():
            if style.kind != first.kind:
                raise ValueError(f"{path} is a {style.kind} mask but {first_path} is a "
                                 f"{first.kind} mask; save every mask in one style")
        return first

    @staticmethod
    def _found_values(raw, ignored):
        values = sorted({int(v) for page, off in zip(raw, ignored) for v in np.unique(page[~off])})
        if len(values) < 2:
            raise ValueError(f"masks hold the single value {values}; segmentation needs at least "
                             f"2 classes")
        return values

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        instances = self.instances[i] if self.instances is not None else None
        return Sample(self.images[i], self.masks[i], instances, self.names[i])
