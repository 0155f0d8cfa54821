"""Using a trained model: load it, predict masks for images, evaluate it on a folder.

``load_model(path)`` returns a ``TrainedModel``: the U-Net in eval mode with
what its file says about reading images (the normalisation, the intensity range
it was trained on) and writing masks (class values, palette). Every forward runs
under ``no_grad()`` through ``predict_logits``, so inference keeps no caches.

>>> model = scratchseg.load_model("runs/nuclei")   # a run folder (its best model) or a file
>>> mask = model.predict(image)   # (H, W) or (C, H, W) array -> (H, W) mask values
"""

import json
import re
import warnings
from pathlib import Path

import numpy
from PIL import Image
from tqdm import tqdm

from scratchseg.data import (
    FolderDataset,
    MaskStyle,
    mask_png_dtype,
    normalize_image,
    predict_logits,
    read_pages,
)
from scratchseg.data.dataset import IGNORE_INDEX
from scratchseg.data.masks import write_labels, write_mask
from scratchseg.data.targets import BoundaryTargets
from scratchseg.fileio import atomic_path
from scratchseg.instance_metrics import dataset_instance_scores
from scratchseg.instances import instances_from_prediction
from scratchseg.metrics import (
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
)
from scratchseg.nn import UNet
from scratchseg.training.checkpoint import drop_batch_norm_counters, model_metadata
from scratchseg.training.checkpoint import load_model as load_file
from scratchseg.training.plots import outline_overlay, overlay

MODEL_FILES = ("model_best.safetensors", "model.safetensors")  # a run folder's, best first
DEFAULT_READING = dict(normalize="percentile", intensity_range=None, masks="auto",
                       mask_suffix="", ignore_value=-1, mask_style=None)


class IntensityWarning(UserWarning):
    """An image's intensities lie far outside those the model was trained on."""


def model_file(path):
    """``path`` itself, or for a run folder its best epoch's model (its last one's when
    the run never validated)."""
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise ValueError(f"{path} is a folder without {' or '.join(MODEL_FILES)}; pass a run "
                         f"folder or a model file")
    if not path.is_file():
        raise ValueError(f"{path}: model file not found")
    return path


def check_intensities(image, trained, normalize, name, stacklevel=3):
    """Warn (IntensityWarning) when a normalised image lies far outside the training
    images' range ``trained`` = (low, high): 4 times wider or narrower, or beyond it by a
    whole width. Nothing to check when ``trained`` is None."""
    if trained is None or not image.size:
        return
    low, high = trained
    width = max(high - low, 1e-6)
    p_low, p_high = (float(v) for v in numpy.percentile(image, (1.0, 99.8)))
    if not (p_high - p_low > 4 * width or p_high - p_low < width / 4
            or p_low > high + width or p_high < low - width):
        return
    warnings.warn(IntensityWarning(
        f"{name}: after {normalize!r} normalisation its intensities span "
        f"{p_low:.3g}..{p_high:.3g} but the training images spanned {low:.3g}..{high:.3g}; "
        f"predictions may be meaningless (another bit depth? train with --normalize "
        f"percentile)"), stacklevel=stacklevel)


class TrainedModel:
    """A trained U-Net with how to read its images and write its masks."""

    def __init__(self, network, class_values, reading):
        self.network, self.class_values = network, list(class_values)
        self.reading = {**DEFAULT_READING, **reading}
        style = self.reading["mask_style"]
        self.mask_style = MaskStyle("gray", None) if style is None else MaskStyle(
            style[0], None if style[1] is None else [tuple(c) for c in style[1]])

    @property
    def in_channels(self):
        return self.network.config["in_channels"]

    def prepare(self, image, name="image"):
        """The normalised float32 (C, H, W) input for a raw (H, W), (C, H, W) or (H, W, C)
        image; warns (IntensityWarning) when it lies far outside the training range."""
        image = numpy.asarray(image, dtype=numpy.float32)
        if image.ndim == 2:
            image = image[None]
        elif image.ndim == 3 and image.shape[0] != self.in_channels \
                and image.shape[-1] == self.in_channels:
            image = image.transpose(2, 0, 1)
        if image.ndim != 3 or image.shape[0] != self.in_channels:
            raise ValueError(f"{name}: the model takes {self.in_channels}-channel images, got "
                             f"an array of shape {image.shape}")
        image = normalize_image(image, self.reading["normalize"])
        self.check_intensities(image, name)
        return image

    def check_intensities(self, image, name):
        """check_intensities against this model's training range (stacklevel: the caller's)."""
        check_intensities(image, self.reading["intensity_range"], self.reading["normalize"],
                          name, stacklevel=4)

    def probabilities(self, image, tile=None, name="image"):
        """float32 (K, H, W) class probabilities (softmax of the logits)."""
        logits = predict_logits(self.network, self.prepare(image, name), tile=tile)
        logits = numpy.exp(logits - logits.max(axis=0))
        return logits / logits.sum(axis=0)

    def predict_classes(self, image, tile=None, name="image"):
        """int64 (H, W) class indices 0..K-1."""
        return predict_logits(self.network, self.prepare(image, name), tile=tile).argmax(axis=0)

    def predict(self, image, tile=None, name="image"):
        """(H, W) predicted mask in the original mask values (``class_values``)."""
        return numpy.asarray(self.class_values)[self.predict_classes(image, tile, name)]

    def instances(self, classes, min_size=0):
        """int32 (H, W) objects 1..K from a predicted class map (see
        scratchseg.instances.instances_from_prediction)."""
        return instances_from_prediction(classes, len(self.class_values),
                                         self.reading.get("target", "semantic"), min_size)

    def predict_instances(self, image, tile=None, name="image", min_size=0):
        """int32 (H, W) predicted objects, 0 for background (see ``instances``)."""
        return self.instances(self.predict_classes(image, tile, name), min_size)


def load_model(path, backend="numpy"):
    """The TrainedModel in a ``model.safetensors`` file or in a run folder."""
    path = model_file(path)
    state, config, class_values = load_file(path)
    network = UNet(**config, backend=backend)
    network.load_state_dict(drop_batch_norm_counters(state))
    reading = json.loads(model_metadata(path).get("reading", "{}"))
    return TrainedModel(network.eval(), class_values, reading)


def _outputs(path, out_dir, pages, overlay_images, instances):
    """The files predicting ``path`` writes per page: the mask, the instance labels (or
    None) and the overlay (or None)."""
    stems = [path.stem] if pages == 1 else [f"{path.stem}_{i:03d}" for i in range(pages)]
    return [(out_dir / f"{stem}.png",
             out_dir / f"{stem}_instances.png" if instances else None,
             out_dir / f"{stem}_overlay.png" if overlay_images else None) for stem in stems]


def _check_targets(images, out_dir):
    """Refuse, before writing anything, inputs whose outputs would collide or overwrite one."""
    by_stem = {}
    for path in images:
        by_stem.setdefault(path.stem, []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            raise ValueError(f"{', '.join(map(str, paths))}: these inputs share the stem "
                             f"{stem!r} and would write the same {stem}.png; predict them "
                             f"into separate --out folders")
    for path in images:
        written_as = re.fullmatch(r"(.+?)(_\d{3})?(_overlay|_instances)?\.png", path.name,
                                  re.IGNORECASE)
        if (path.resolve().parent == out_dir.resolve() and written_as
                and written_as.group(1) in by_stem):
            raise ValueError(f"{path}: --out {out_dir} would overwrite this input image; "
                             f"choose another --out folder")


def predict_files(model_path, images, out_dir, *, overlay_images=False, tile=None,
                  backend="numpy", progress=False, instances=False, min_size=0):
    """Write ``out_dir/<stem>.png`` (mask values, in the training masks' style) for every
    image, ``<stem>_<page>.png`` for each page of a stack, and with ``instances`` the
    16-bit object labels ``<stem>_instances.png``; yields each path written."""
    model = load_model(model_path, backend)
    if model.mask_style.kind == "gray":  # fail before writing anything
        mask_png_dtype(model.class_values, f"the model's class values {model.class_values}")
    images = [Path(p) for p in images]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ValueError(f"image file(s) not found: {', '.join(missing)}")
    out_dir = Path(out_dir)
    _check_targets(images, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = len(model.class_values)
    for path in tqdm(images, disable=not progress, unit="image", dynamic_ncols=True):
        pages = read_pages(path, channels=model.in_channels)
        outputs = _outputs(path, out_dir, len(pages), overlay_images, instances)
        for i, (page, (mask_path, labels_path, overlay_path)) in enumerate(
                zip(pages, outputs, strict=True)):
            image = model.prepare(page, str(path) if len(pages) == 1 else f"{path} page {i}")
            classes = predict_logits(model.network, image, tile=tile).argmax(axis=0)
            write_mask(mask_path, numpy.asarray(model.class_values)[classes], model.mask_style)
            yield mask_path
            labels = model.instances(classes, min_size) if instances else None
            if labels is not None:
                write_labels(labels_path, labels)
                yield labels_path
            if overlay_path is not None:
                picture = overlay(image, classes, k) if labels is None \
                    else outline_overlay(image, labels)
                with atomic_path(overlay_path) as temp:
                    Image.fromarray(picture).save(temp, format="PNG")
                yield overlay_path


def _labelled_folder(model, data_dir, mask_suffix, instances):
    """``data_dir`` read as the model's training read its folder; with ``instances``, or
    for a boundary model, the masks are instance ids whatever the model learnt."""
    reading, ignore = model.reading, model.reading["ignore_value"]
    boundary = reading.get("target") == "boundary"
    as_instances = instances or boundary or reading["masks"] == "instances"
    dataset = FolderDataset(
        data_dir, normalize=reading["normalize"],
        class_values=None if as_instances else model.class_values,
        masks="instances" if as_instances else "classes",
        mask_suffix=reading["mask_suffix"] if mask_suffix is None else mask_suffix,
        ignore_value=None if ignore < 0 else ignore)
    return BoundaryTargets(dataset) if boundary else dataset


def evaluate_instances(model_path, data_dir, *, tile=None, backend="numpy", mask_suffix=None,
                       min_size=0):
    """Instance metrics (scratchseg.instance_metrics.dataset_instance_scores) of the
    model's predicted objects against the instance ids in ``data_dir``'s masks."""
    model = load_model(model_path, backend)
    dataset = _labelled_folder(model, data_dir, mask_suffix, instances=True)

    def pairs():
        for i in range(len(dataset)):
            sample = dataset[i]
            model.check_intensities(sample.image, str(dataset.image_files[i]))
            classes = predict_logits(model.network, sample.image, tile=tile).argmax(axis=0)
            yield sample.instances, model.instances(classes, min_size)

    result = dataset_instance_scores(pairs())
    for name, image in zip(dataset.names, result["images"], strict=True):
        image["name"] = name
    return result


def evaluate_folder(model_path, data_dir, *, tile=None, backend="numpy", mask_suffix=None):
    """Metrics of the model on ``data_dir`` (images/ and masks/), read as in training:
    a dict, per class and mean; pixels of the ignored mask value count in none."""
    model = load_model(model_path, backend)
    dataset = _labelled_folder(model, data_dir, mask_suffix, instances=False)
    k = len(model.class_values)
    cm = numpy.zeros((k, k), dtype=numpy.int64)
    for i in range(len(dataset)):
        sample = dataset[i]
        model.check_intensities(sample.image, str(dataset.image_files[i]))
        classes = predict_logits(model.network, sample.image, tile=tile).argmax(axis=0)
        cm += confusion_matrix(classes, sample.mask, k, ignore_index=IGNORE_INDEX)
    return {
        "images": len(dataset),
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_iou": mean_iou(cm),
        "mean_dice": mean_dice(cm),
        "per_class": [
            {"class": c, "value": v, "iou": float(iou), "dice": float(dice)}
            for c, (v, iou, dice) in enumerate(zip(model.class_values, iou_per_class(cm),
                                                   dice_per_class(cm)))
        ],
        "confusion_matrix": cm.tolist(),
    }
