"""The training options, each declared once: its default, its help text and its rule.

``TrainOptions`` is a dataclass whose every field is made by ``option(default,
help, rule)``. Everything else is derived from those fields:

- ``validate_options(options)`` (``TrainOptions.validate()``) checks each value
  against its rule and names the first one out of range by its flag:
  ``--lr must be a number >= 0, got -0.1``;
- ``add_option_flags(parser, TrainOptions)`` adds one command-line flag per
  field: ``--batch-size`` for ``batch_size``, ``--no-augment`` too for a
  boolean, the rule's choices for a choice, otherwise the default's type, and
  the default in the help text;
- ``RESUMABLE_OPTIONS``: the fields declared ``resumable=True``, the ones a
  resumed run may change (they change neither the model nor the data).

A new option is one more field here; the CLI and the checks follow.
"""

import argparse
import math
from dataclasses import MISSING, dataclass, field, fields, replace

from scratchseg.backend import BACKENDS
from scratchseg.data import MASK_MODES, NORMALIZATIONS
from scratchseg.data.targets import TARGETS
from scratchseg.nn.optim import SCHEDULES
from scratchseg.nn.unet import PADDINGS
from scratchseg.training.objective import LOSSES


@dataclass(frozen=True)
class Rule:
    """What an option allows: ``test(value) -> bool``, the words for it, and its choices
    (a tuple when the value is one of a few, which the flag then offers)."""

    test: object
    describe: str
    choices: tuple = None

    def __call__(self, value):
        return bool(self.test(value))


def integer(low):
    return Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
                f"an integer >= {low}")


def number(low, below=None):
    """A finite number >= low (and < below when given)."""
    def allowed(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and v >= low and (below is None or v < below))
    return Rule(allowed, f"a number >= {low}" if below is None else f"in [{low}, {below})")


def one_of(choices):
    choices = tuple(choices)
    return Rule(lambda v: v in choices, "one of " + ", ".join(choices), choices)


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")


def option(default, help, rule, *, resumable=False):
    """One option: a dataclass field carrying its help text and its rule in its metadata."""
    return field(default=default, metadata=dict(help=help, rule=rule, resumable=resumable))


def flag_name(name):
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def validate_options(options):
    """ValueError naming the first option out of its rule, by its command-line flag."""
    for f in fields(options):
        rule, value = f.metadata["rule"], getattr(options, f.name)
        if not rule(value):
            raise ValueError(f"{flag_name(f.name)} must be {rule.describe}, got {value!r}")


def _shown(default):
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default) if default != "" else "none"


def add_option_flags(parser, options_class):
    """Add one flag per field of ``options_class`` to ``parser``; returns the field names.

    Every flag's parsed default is None, so ``given_options`` can tell what was
    typed from what was not (a resumed run keeps its stored values).
    """
    names = []
    for f in fields(options_class):
        if f.default is MISSING:
            raise TypeError(f"{options_class.__name__}.{f.name} needs a default to be a flag")
        rule = f.metadata["rule"]
        text = f.metadata["help"]
        if "default" not in text:  # a help that says its default in words keeps them
            text = f"{text} (default: {_shown(f.default)})"
        text = text.replace("%", "%%")
        kwargs = dict(dest=f.name, default=None, help=text)
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif rule.choices is not None:
            kwargs["choices"] = rule.choices
        else:
            kwargs["type"] = type(f.default)
        parser.add_argument(flag_name(f.name), **kwargs)
        names.append(f.name)
    return names


def given_options(args, options_class):
    """{field: value} for the flags of ``options_class`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(options_class)
            if getattr(args, f.name, None) is not None}


TEXT = Rule(lambda v: isinstance(v, str), "text")


def _class_weights_rule(value):
    if value in ("none", "balanced"):
        return True
    try:
        weights = [float(w) for w in value.split(",")]
    except (AttributeError, ValueError):
        return False
    return all(math.isfinite(w) and w >= 0 for w in weights) and any(w > 0 for w in weights)


@dataclass
class TrainOptions:
    """Everything that defines a run; the defaults are the main job on the built-in data."""

    data: str = option("synthetic", "'synthetic' (built in) or a folder with images/ and masks/",
                       Rule(lambda v: isinstance(v, str) and v != "", "'synthetic' or a folder"))
    val_data: str = option("", "a folder with images/ and masks/ to validate on (default: "
                           "held out from --data)", TEXT)
    epochs: int = option(0, "epochs to train, 0 = as many as make about 500 SGD steps (on "
                         "resume: the new total)", integer(0), resumable=True)
    tiles_per_epoch: int = option(0, "random tiles per epoch, 0 = enough to cover each "
                                  "training image's area about once", integer(0))
    val_every: int = option(0, "validate and write the run's files every N epochs, 0 = about "
                            "15 times per run (the last epoch always)", integer(0),
                            resumable=True)
    batch_size: int = option(8, "tiles per SGD step", integer(1))
    lr: float = option(0.05, "base learning rate", number(0))
    momentum: float = option(0.9, "SGD momentum (the paper used 0.99)", number(0, 1))
    weight_decay: float = option(0.0, "L2 weight decay", number(0))
    schedule: str = option("cosine", "learning-rate schedule", one_of(SCHEDULES))
    warmup_steps: int = option(20, "linear warm-up steps", integer(0))
    loss: str = option("ce", "ce (cross-entropy), dice (soft Dice) or ce+dice (their sum)",
                       one_of(LOSSES))
    class_weights: str = option("none", "none, balanced (inverse class frequency) or w0,w1,... "
                                "(one per class)", Rule(_class_weights_rule,
                                                        "none, balanced or w0,w1,..."))
    base_channels: int = option(16, "channels of the first level", integer(1))
    depth: int = option(3, "number of 2x2 poolings", integer(1))
    padding: str = option("same", "valid (the paper's) or same", one_of(PADDINGS))
    batch_norm: bool = option(True, "batch norm after convs", BOOLEAN)
    dropout: float = option(0.0, "dropout at the end of the contracting path", number(0, 1))
    tile: int = option(64, "output edge of a training tile", integer(1))
    normalize: str = option("auto", "per-image intensity normalisation: percentile "
                            "(1st..99.8th percentile to 0..1), minmax, standardize or none; "
                            "auto = percentile for folders, none for the synthetic data "
                            "(whose intensities mean classes)",
                            one_of(("auto",) + NORMALIZATIONS))
    masks: str = option("auto", "what mask values mean: classes, instances (every nonzero id "
                        "is one object of the foreground class) or auto (classes, stopping "
                        "on masks that look like instance ids)", one_of(MASK_MODES))
    mask_suffix: str = option("", "a mask's stem is its image's stem plus this (e.g. _mask "
                              "for x.jpg with x_mask.gif)", TEXT)
    ignore_value: int = option(-1, "mask value left out of loss and metrics, e.g. 255 (VOC's "
                               "void); -1 = none", integer(-1))
    target: str = option("semantic", "what the model learns from instance masks: semantic "
                         "(the classes) or boundary (background, interior, boundary: touching "
                         "objects stay apart)", one_of(TARGETS))
    max_classes: int = option(32, "stop when the masks hold more distinct values than this",
                              integer(2))
    val_fraction: float = option(0.2, "fraction held out for validation: of the images, or "
                                 "of each image's area with fewer than 5 images",
                                 number(0, 1))
    weight_map: bool = option(False, "weight pixels by the paper's border weight map (Eq. 2)",
                              BOOLEAN)
    augment: bool = option(True, "flips, rotations, elastic deformation, intensity jitter",
                           BOOLEAN)
    seed: int = option(0, "seed of weights, split, tiles and augmentation", integer(0))
    backend: str = option("numpy", "array module", one_of(BACKENDS), resumable=True)
    num_samples: int = option(160, "images in the synthetic dataset", integer(1))
    image_size: int = option(96, "edge of the synthetic images", integer(1))
    trace: bool = option(False, "record per-layer activation, gradient and update norms: "
                         "trace.csv, gradient_flow.png", BOOLEAN, resumable=True)

    def validate(self):
        """ValueError naming the first option out of range, by its command-line flag."""
        validate_options(self)

    def model_config(self, dataset):
        return dict(in_channels=dataset.in_channels, num_classes=dataset.num_classes,
                    base_channels=self.base_channels, depth=self.depth, padding=self.padding,
                    batch_norm=self.batch_norm, dropout=self.dropout)

    def folder_settings(self):
        """How this run reads a folder: FolderDataset's keyword arguments."""
        return dict(mask_suffix=self.mask_suffix, masks=self.masks,
                    ignore_value=None if self.ignore_value < 0 else self.ignore_value,
                    normalize=self.normalization(), max_classes=self.max_classes)

    def normalization(self):
        """The normalisation ``--normalize`` means for this run's data (``auto`` resolved)."""
        if self.normalize != "auto":
            return self.normalize
        return "none" if self.data == "synthetic" else "percentile"


# the options a resumed run may change: they change neither the model nor the data
RESUMABLE_OPTIONS = tuple(f.name for f in fields(TrainOptions) if f.metadata["resumable"])


def resumed_options(stored, given, run_dir, options_class=None):
    """The ``stored`` options (a dict, as a checkpoint holds them) with the ``given``
    resumable options applied, validated; ``options_class`` defaults to TrainOptions.

    Any other option given must equal the stored one: resuming continues the
    same model on the same data, so a ValueError names every option that differs.
    """
    options_class = options_class or TrainOptions
    known = {f.name for f in fields(options_class)}
    resumable = [f.name for f in fields(options_class) if f.metadata["resumable"]]
    options = options_class(**{k: v for k, v in stored.items() if k in known})
    changed = [f"{flag_name(k)} (the run has {getattr(options, k)!r}, got {v!r})"
               for k, v in given.items() if k not in resumable and
               v != getattr(options, k)]
    if changed:
        allowed = ", ".join(flag_name(k) for k in resumable)
        raise ValueError(f"--resume {run_dir} cannot change {'; '.join(changed)}; only "
                         f"{allowed} may change (start a new run with --out for the others)")
    options = replace(options, **{k: v for k, v in given.items() if k in resumable})
    options.validate()
    return options
