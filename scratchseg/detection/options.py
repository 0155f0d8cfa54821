"""The options of ``scratchseg detect train``, each declared once (see training/options.py).

The defaults are the lecture's comparison on the built-in synthetic shapes: a
newcomer passes only ``--model`` and ``--out``; a COCO JSON as ``--data`` trains
on real boxes.
"""

from dataclasses import dataclass

from scratchseg.backend import BACKENDS
from scratchseg.data import NORMALIZATIONS
from scratchseg.training.options import (
    BOOLEAN,
    TEXT,
    Rule,
    integer,
    number,
    one_of,
    option,
    validate_options,
)

DETECTORS = ("rcnn", "fast-rcnn", "faster-rcnn")


@dataclass
class DetectOptions:
    """Everything that defines a detection run."""

    model: str = option("faster-rcnn", "the detector: rcnn, fast-rcnn or faster-rcnn",
                        one_of(DETECTORS))
    data: str = option("synthetic", "'synthetic' (built-in shapes with boxes) or a COCO "
                       "annotation JSON", Rule(lambda v: isinstance(v, str) and v != "",
                                               "'synthetic' or a COCO JSON file"))
    images: str = option("", "folder of the COCO JSON's images (default: the JSON's folder)",
                         TEXT)
    val_data: str = option("", "a COCO JSON to validate on (default: held-out synthetic "
                           "scenes, or every fifth image of --data; with under 5 images, "
                           "all of them)", TEXT)
    num_samples: int = option(256, "synthetic training scenes", integer(1))
    val_samples: int = option(64, "synthetic validation scenes (other seeds than training's)",
                              integer(1))
    size: int = option(128, "synthetic scene edge in pixels; objects scale with it (radius "
                       "10..24 pixels at 128)", integer(32))
    steps: int = option(1500, "SGD steps (on resume: the new total)", integer(1),
                        resumable=True)
    batch_size: int = option(2, "images per SGD step", integer(1))
    rois_per_image: int = option(64, "RoIs per image for the head, a quarter foreground",
                                 integer(4))
    lr: float = option(0.02, "base learning rate (x0.1 for the last quarter of the steps)",
                       number(0))
    momentum: float = option(0.9, "SGD momentum", number(0, 1))
    weight_decay: float = option(5e-4, "L2 weight decay (the papers')", number(0))
    flip: bool = option(True, "random horizontal flips of the training images", BOOLEAN)
    val_every: int = option(0, "validate and write the run's files every N steps, 0 = ten "
                            "times per run", integer(0), resumable=True)
    normalize: str = option("percentile", "per-image normalisation of COCO images "
                            "(the synthetic scenes are used as drawn)", one_of(NORMALIZATIONS))
    seed: int = option(0, "seed of the weights, the data order and the sampling", integer(0))
    backend: str = option("numpy", "array module", one_of(BACKENDS), resumable=True)

    def validate(self):
        """ValueError naming the first option out of range, by its command-line flag."""
        validate_options(self)

    def normalization(self):
        return "none" if self.data == "synthetic" else self.normalize
