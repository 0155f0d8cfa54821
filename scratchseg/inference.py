"""Using a trained model: load it from its file, predict masks for images, evaluate on a folder.

Inference keeps no caches: ``load_trained`` returns the model in eval mode and
every forward goes through ``predict_logits``, which runs under ``no_grad()``.
"""

from pathlib import Path

import numpy
from PIL import Image

from scratchseg.data import (
    FolderDataset,
    mask_png_dtype,
    predict_logits,
    read_image,
    write_mask_png,
)
from scratchseg.fileio import atomic_path
from scratchseg.metrics import (
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
)
from scratchseg.nn import UNet
from scratchseg.training.checkpoint import drop_batch_norm_counters, load_model
from scratchseg.training.plots import overlay


def load_trained(path, backend="numpy"):
    """(model in eval mode, class_values) from a ``model.safetensors`` written by training."""
    state, config, class_values = load_model(path)
    model = UNet(**config, backend=backend)
    model.load_state_dict(drop_batch_norm_counters(state))
    return model.eval(), class_values


def predict_mask(model, image, class_values, tile=None):
    """The predicted mask of a host image (C, H, W), in the original mask values.

    The forwards run under ``no_grad()`` (in ``predict_logits``); pass a model in
    eval mode, as ``load_trained`` returns it.
    """
    if image.shape[0] != model.config["in_channels"]:
        raise ValueError(f"the model takes {model.config['in_channels']}-channel images, "
                         f"got {image.shape[0]} channels")
    dtype = _mask_dtype(class_values)
    classes = predict_logits(model, image, tile=tile).argmax(axis=0)
    return classes, numpy.asarray(class_values)[classes].astype(dtype)


def _mask_dtype(class_values):
    """The PNG dtype that holds every class value; ValueError rather than wrapping around."""
    return mask_png_dtype(class_values, f"the model's class values {list(class_values)}")


def predict_files(model_path, images, out_dir, *, overlay_images=False, tile=None,
                  backend="numpy"):
    """Write ``out_dir/<stem>.png`` (mask values) for every image; returns the written paths."""
    model, class_values = load_trained(model_path, backend)
    _mask_dtype(class_values)  # fail before writing anything
    images = [Path(p) for p in images]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ValueError(f"image file(s) not found: {', '.join(missing)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        image = read_image(path)
        classes, mask = predict_mask(model, image, class_values, tile)
        target = out_dir / f"{path.stem}.png"
        write_mask_png(target, mask)
        written.append(target)
        if overlay_images:
            target = out_dir / f"{path.stem}_overlay.png"
            with atomic_path(target) as temp:
                Image.fromarray(overlay(image, classes, len(class_values))).save(temp)
            written.append(target)
    return written


def evaluate_folder(model_path, data_dir, *, tile=None, backend="numpy"):
    """Metrics of the model on ``data_dir`` (images/ and masks/): a dict, per class and mean."""
    model, class_values = load_trained(model_path, backend)
    dataset = FolderDataset(data_dir, class_values=class_values)
    k = len(class_values)
    cm = numpy.zeros((k, k), dtype=numpy.int64)
    for i in range(len(dataset)):
        sample = dataset[i]
        classes, _ = predict_mask(model, sample.image, class_values, tile)
        cm += confusion_matrix(classes, sample.mask, k)
    return {
        "images": len(dataset),
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_iou": mean_iou(cm),
        "mean_dice": mean_dice(cm),
        "per_class": [
            {"class": c, "value": v, "iou": float(iou), "dice": float(dice)}
            for c, (v, iou, dice) in enumerate(zip(class_values, iou_per_class(cm),
                                                   dice_per_class(cm)))
        ],
        "confusion_matrix": cm.tolist(),
    }
