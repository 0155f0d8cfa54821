"""Pictures of a run: training curves, sample predictions, coloured masks and overlays.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, no
display) and written atomically through ``scratchseg.fileio.atomic_path``; the file's
extension picks the format (``.png``, ``.svg``, ``.pdf``).
"""

import numpy
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scratchseg.backend import to_numpy
from scratchseg.fileio import atomic_path

OUT_OF_RANGE_COLOUR = (255, 255, 255)

_LOSS_SERIES = (("train_loss", "train"), ("val_loss", "validation"))
_METRIC_SERIES = (
    ("val_pixel_acc", "pixel accuracy"),
    ("val_miou", "mean IoU"),
    ("val_dice", "Dice"),
)


def palette(num_classes):
    """Colour of each class, uint8 ``(num_classes, 3)``: class 0 black, then the
    Pascal VOC bit-interleaved palette, whose bit ``3*b + c`` of the class index sets
    bit ``7 - b`` of channel ``c``, so every class below 2**24 gets its own colour."""
    if num_classes < 1:
        raise ValueError(f"palette: num_classes must be >= 1, got {num_classes!r}")
    classes = numpy.arange(num_classes)
    colours = numpy.zeros((num_classes, 3), numpy.uint8)
    for bit in range(8):
        for channel in range(3):
            bit_set = (classes >> (3 * bit + channel)) & 1
            colours[:, channel] |= (bit_set << (7 - bit)).astype(numpy.uint8)
    return colours


def colorize(mask, num_classes):
    """Class-index mask ``(H, W)`` -> uint8 RGB ``(H, W, 3)`` in the fixed ``palette``;
    values outside ``[0, num_classes)`` (an ignore index, say) are drawn white."""
    mask = to_numpy(mask)
    if mask.ndim != 2:
        raise ValueError(f"colorize: mask must be (H, W), got shape {mask.shape}")
    if mask.dtype.kind not in "biu":
        raise TypeError(f"colorize: mask must hold integer class indices, got {mask.dtype}")
    mask = mask.astype(numpy.int64)
    inside = (mask >= 0) & (mask < num_classes)
    rgb = numpy.empty(mask.shape + (3,), numpy.uint8)
    rgb[...] = OUT_OF_RANGE_COLOUR
    rgb[inside] = palette(num_classes)[mask[inside]]
    return rgb


def _display_rgb(image):
    """Image ``(H, W)`` or ``(C, H, W)`` -> uint8 RGB ``(H, W, 3)``: three channels as RGB,
    otherwise channel 0 in grey; uint8 kept, anything else stretched min..max to 0..255."""
    image = to_numpy(image)
    if image.ndim == 3:
        image = image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0]
    elif image.ndim != 2:
        raise ValueError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    if image.dtype != numpy.uint8:
        image = image.astype(numpy.float64)
        low, high = image.min(), image.max()
        scale = 255 / (high - low) if high > low else 0.0
        image = numpy.rint((image - low) * scale).astype(numpy.uint8)
    if image.ndim == 2:
        image = numpy.repeat(image[:, :, None], 3, axis=2)
    return image


def overlay(image, mask, num_classes, alpha=0.5):
    """Blend the coloured ``mask`` over ``image`` (same H, W): ``(1 - alpha) * image +
    alpha * colour`` where ``mask != 0``; class 0 (background) leaves the image as it is."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha!r}")
    rgb = _display_rgb(image)
    colours = colorize(mask, num_classes)
    if rgb.shape != colours.shape:
        raise ValueError(
            f"overlay: image is {rgb.shape[:2]} but mask is {colours.shape[:2]}; "
            "they must be the same size"
        )
    tinted = to_numpy(mask) != 0
    blend = (1 - alpha) * rgb[tinted] + alpha * colours[tinted].astype(numpy.float64)
    rgb[tinted] = numpy.rint(blend).astype(numpy.uint8)
    return rgb


def outline_overlay(image, labels):
    """The image (``_display_rgb``) with each object of the instance map ``labels`` (H, W)
    outlined in its own ``palette`` colour: the object's pixels with a 4-neighbour
    outside it."""
    rgb = _display_rgb(image)
    labels = to_numpy(labels).astype(numpy.int64)
    padded = numpy.pad(labels, 1, mode="edge")
    neighbours = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
    edge = (labels > 0) & numpy.any([n != labels for n in neighbours], axis=0)
    rgb[edge] = palette(int(labels.max(initial=0)) + 1)[labels[edge]]
    return rgb


def _save(figure, path):
    FigureCanvasAgg(figure)
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=100)


def _column(history, key):
    """``history[i][key]`` as floats, missing or None as NaN."""
    values = [row.get(key) for row in history]
    return numpy.array([numpy.nan if v is None else v for v in values], numpy.float64)


def _plot_series(axes, epochs, history, series):
    """One line per series through its finite values (validation may skip epochs)."""
    for key, label in series:
        values = _column(history, key)
        finite = numpy.isfinite(values)
        if finite.any():
            axes.plot(epochs[finite], values[finite], marker=".", label=label)


def plot_curves(history, path):
    """Plot a run's per-epoch history (dicts with epoch, train_loss, val_loss,
    val_pixel_acc, val_miou, val_dice, lr; val values may be None or NaN) to ``path``:
    losses, validation metrics (when there are any) and learning rate, side by side."""
    if not history:
        raise ValueError("plot_curves: history is empty")
    epochs = numpy.array([row["epoch"] for row in history])
    has_metrics = any(numpy.isfinite(_column(history, key)).any() for key, _ in _METRIC_SERIES)
    panels = [("loss", _LOSS_SERIES)]
    if has_metrics:
        panels.append(("validation metric", _METRIC_SERIES))
    panels.append(("learning rate", (("lr", "lr"),)))

    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for axes, (ylabel, series) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        _plot_series(axes, epochs, history, series)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if len(axes.lines) > 1:
            axes.legend()
    _save(figure, path)


def plot_samples(images, truths, predictions, path, num_classes, objects=None):
    """One row per sample: the image (``(C, H, W)``; RGB when C == 3, else channel 0 in
    grey), the true mask and the predicted mask (``(H, W)`` class indices, ``palette``),
    and with ``objects`` (instance maps, one per sample) the predicted objects outlined."""
    if not len(images) == len(truths) == len(predictions) >= 1:
        raise ValueError(
            "plot_samples: need as many images, truths and predictions (at least one), got "
            f"{len(images)}, {len(truths)} and {len(predictions)}"
        )
    columns = ["image", "truth", "prediction"] + ([] if objects is None else ["objects"])
    figure = Figure(figsize=(3 * len(columns), 3 * len(images)), layout="constrained")
    grid = figure.subplots(len(images), len(columns), squeeze=False)
    for i, (row, image, truth, prediction) in enumerate(
            zip(grid, images, truths, predictions, strict=True)):
        pictures = [_display_rgb(image), colorize(truth, num_classes),
                    colorize(prediction, num_classes)]
        if objects is not None:
            pictures.append(outline_overlay(image, objects[i]))
        for axes, picture in zip(row, pictures, strict=True):
            axes.imshow(picture, interpolation="nearest")
            axes.set_axis_off()
    for axes, title in zip(grid[0], columns, strict=True):
        axes.set_title(title)
    _save(figure, path)
