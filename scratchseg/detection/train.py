"""``scratchseg detect train``: one detector, SGD, validation by mAP, checkpoints, resume.

Each step draws ``batch_size`` images (a new permutation every pass over the
data, keyed by (seed, pass)), flips each at random, runs every image forward and
backward (gradients accumulate, each scaled by 1/batch_size) and takes one SGD
step. The random stream of step s is keyed by (seed, s), so a resumed run draws
exactly what the uninterrupted one would have. R-CNN and Fast R-CNN get their
proposals from selective search, run once per image and kept.
"""

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy
from tqdm import tqdm

from scratchseg.data.dataset import Subset
from scratchseg.detection.data import CocoDataset, SyntheticBoxes
from scratchseg.detection.draw import draw_detections
from scratchseg.detection.evaluate import average_precision
from scratchseg.detection.fast_rcnn import FastRCNN
from scratchseg.detection.faster_rcnn import FasterRCNN
from scratchseg.detection.options import DetectOptions
from scratchseg.detection.rcnn import RCNN
from scratchseg.fileio import atomic_path, atomic_write_text
from scratchseg.nn import SGD
from scratchseg.training.checkpoint import (
    load_training_state,
    save_model,
    save_training_state,
)
from scratchseg.training.loop import (
    BEST_MODEL_FILE,
    CHECKPOINT_FILE,
    MODEL_FILE,
    TrainingError,
    intensity_range,
    metrics_csv,
)
from scratchseg.training.options import resumed_options

DETECTOR_CLASSES = {"rcnn": RCNN, "fast-rcnn": FastRCNN, "faster-rcnn": FasterRCNN}
MODEL_FORMAT = "scratchseg-detector"
METRIC_COLUMNS = ("step", "train_loss", "val_map50", "val_map", "val_seconds_per_image", "lr",
                  "seconds")
VALIDATIONS = 10  # how often a run validates when --val-every is 0
MIN_IMAGES_TO_HOLD_OUT = 5  # fewer COCO images (and no --val-data): validate on them all
VAL_SEED, TEST_SEED = 10_000, 20_000  # synthetic validation and test scenes: other seeds


def build_detector(config, *, seed=0, backend="numpy"):
    """A detector from its stored config (kind, in_channels, num_classes, ...)."""
    config = dict(config)
    kind = config.pop("kind")
    if kind not in DETECTOR_CLASSES:
        raise ValueError(f"unknown detector {kind!r}; choose one of {list(DETECTOR_CLASSES)}")
    return DETECTOR_CLASSES[kind](**config, seed=seed, backend=backend)


def synthetic_scenes(samples, size, seed, object_size=None):
    """``samples`` shape scenes of edge ``size`` (SyntheticBoxes) whose objects are those of
    a scene of edge ``object_size`` (default ``size``): radii 5..12 pixels at 64, scaled
    with the edge, and 1 to 4 objects per 64^2 of such a scene, as many per area."""
    object_size = object_size or size
    scale, per_area = object_size / 64, (size / object_size) ** 2
    return SyntheticBoxes(samples, size, seed, radius=(5.0 * scale, 12.0 * scale),
                          num_objects=(max(1, round(per_area)), max(1, round(4 * per_area))))


def load_datasets(options):
    """(train, validation) datasets: synthetic scenes, or a COCO JSON and --val-data, else
    every fifth of its images held out (all of them validate when there are under 5)."""
    if options.data == "synthetic":
        return (synthetic_scenes(options.num_samples, options.size, options.seed),
                synthetic_scenes(options.val_samples, options.size, VAL_SEED + options.seed))
    data = CocoDataset(options.data, options.images or None, normalize=options.normalize)
    if options.val_data:
        val = CocoDataset(options.val_data, options.images or None, normalize=options.normalize)
        if (val.class_names, val.in_channels) != (data.class_names, data.in_channels):
            raise ValueError(f"--val-data {options.val_data}: its categories "
                             f"{val.class_names[1:]} and {val.in_channels} channels differ "
                             f"from --data's {data.class_names[1:]} and {data.in_channels}")
        return data, val
    if len(data) < MIN_IMAGES_TO_HOLD_OUT:  # too few to spare any: validate on the training set
        return data, data
    held_out = set(range(4, len(data), 5))
    return (Subset(data, [i for i in range(len(data)) if i not in held_out]),
            Subset(data, sorted(held_out)))


def flip_boxes(boxes, width):
    """Boxes of the image mirrored left to right: x1' = W - x2, x2' = W - x1."""
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return flipped


def evaluate_detector(model, dataset, proposals=None, *, progress=False):
    """(mAP figures, detections, mean seconds per stage) of ``model`` on ``dataset``;
    ``proposals`` caches selective search per index (R-CNN, Fast R-CNN)."""
    detections, seconds = [], {}
    for index in tqdm(range(len(dataset)), disable=not progress, unit="image", leave=False):
        sample = dataset[index]
        boxes = None if proposals is None else proposals(index, sample.image)
        found, stages = model.detect(sample.image, boxes)
        detections.append(found)
        for stage, value in stages.items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    result = average_precision([dataset[i] for i in range(len(dataset))], detections,
                               model.config["num_classes"])
    return result, detections, {k: v / max(len(dataset), 1) for k, v in seconds.items()}


class ProposalCache:
    """Selective search's boxes per image index, computed once (R-CNN, Fast R-CNN)."""

    def __init__(self, model):
        self.model, self.boxes = model, {}

    def __call__(self, index, image):
        if index not in self.boxes:
            self.boxes[index] = self.model.proposals(image)
        return self.boxes[index]


class DetectionTrainer:
    """Owns the detector, optimizer, data and run folder of one detection run."""

    def __init__(self, options, out_dir, *, resume=False, progress=True):
        options.validate()
        self.options, self.out_dir, self.progress = options, Path(out_dir), progress
        if not resume and (self.out_dir / CHECKPOINT_FILE).exists():
            raise TrainingError(f"{self.out_dir} already holds a run; continue it with "
                                f"--resume {self.out_dir} or choose another --out")
        self.train_set, self.val_set = load_datasets(options)
        self.class_names = list(self.train_set.class_names)
        self.model = DETECTOR_CLASSES[options.model](
            self.train_set.in_channels, self.train_set.num_classes, seed=options.seed,
            backend=options.backend)
        self.model.rois_per_image = options.rois_per_image
        self.optimizer = SGD(self.model, lr=options.lr, momentum=options.momentum,
                             weight_decay=options.weight_decay)
        self.val_every = options.val_every or max(1, math.ceil(options.steps / VALIDATIONS))
        self.step, self.history = 0, []
        searched = self.model.uses_selective_search
        self.train_proposals = ProposalCache(self.model) if searched else None
        self.val_proposals = ProposalCache(self.model) if searched else None
        if resume:
            state = load_training_state(self.out_dir / CHECKPOINT_FILE)
            self.model.load_state_dict(state["extra"]["model"])
            self.optimizer.load_state_dict(state["optimizer_state"])
            self.step, self.history = state["step"], state["history"]
            if self.step >= options.steps:
                raise TrainingError(f"{self.out_dir} already finished its {self.step} steps; "
                                    f"to train on, resume with --steps N, a new total "
                                    f"N > {self.step}")
        self.intensity_range = intensity_range(self.train_set)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def lr_at(self, step):
        """The base rate, a tenth of it for the last quarter of the steps (the papers' drop)."""
        return self.options.lr * (0.1 if step >= 0.75 * self.options.steps else 1.0)

    def images_of_step(self, step):
        """The dataset indices step ``step`` trains on: passes over shuffled data."""
        count, size = len(self.train_set), self.options.batch_size
        first = step * size
        indices = []
        for position in range(first, first + size):
            epoch, offset = divmod(position, count)
            order = numpy.random.default_rng([self.options.seed, epoch]).permutation(count)
            indices.append(int(order[offset]))
        return indices

    def train_step(self, step):
        """One SGD step; returns the summed losses averaged over its images."""
        rng = numpy.random.default_rng([self.options.seed, 1, step])
        self.model.zero_grad()
        totals = {}
        indices = self.images_of_step(step)
        for index in indices:
            sample = self.train_set[index]
            image, boxes = sample.image, sample.boxes[~sample.crowd]
            labels = sample.labels[~sample.crowd]
            proposals = (self.train_proposals(index, image)
                         if self.train_proposals is not None else None)
            if self.options.flip and rng.random() < 0.5:
                width = image.shape[-1]
                image, boxes = image[..., ::-1].copy(), flip_boxes(boxes, width)
                proposals = None if proposals is None else flip_boxes(proposals, width)
            losses = self.model.train_image(image, boxes, labels, proposals, rng,
                                            scale=1.0 / len(indices))
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value / len(indices)
        loss = sum(totals.values())
        if not math.isfinite(loss):
            raise TrainingError(f"training diverged at step {step + 1} (loss {loss}); lower "
                                f"--lr (now {self.options.lr})")
        self.optimizer.lr = self.lr_at(step)
        self.optimizer.step()
        return loss, totals

    def run(self):
        """Train to ``--steps``; validate and write the run's files every ``val_every``."""
        options = self.options
        bar = tqdm(total=options.steps, initial=self.step, disable=not self.progress,
                   unit="step", dynamic_ncols=True)
        losses, started = [], time.perf_counter()
        with bar, numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            while self.step < options.steps:
                loss, parts = self.train_step(self.step)
                losses.append(loss)
                self.step += 1
                bar.set_postfix({"loss": f"{loss:.3f}", **{k: f"{v:.3f}" for k, v in
                                                           parts.items()}}, refresh=False)
                bar.update()
                if self.step % self.val_every and self.step < options.steps:
                    continue
                row = self.validate(float(numpy.mean(losses)))
                row["seconds"] = time.perf_counter() - started
                best = all(row["val_map50"] > past["val_map50"] for past in self.history)
                self.history.append(row)
                self.save(best)
                bar.write(f"step {self.step:>5}/{options.steps}  train_loss "
                          f"{row['train_loss']:.4f}  val mAP@0.5 {row['val_map50']:.4f}  "
                          f"mAP@[.5:.95] {row['val_map']:.4f}  ({row['seconds']:.1f} s)")
                losses, started = [], time.perf_counter()
        return self.history

    def validate(self, train_loss):
        self.model.eval()
        result, detections, seconds = evaluate_detector(self.model, self.val_set,
                                                        self.val_proposals)
        self.model.train()
        shown = list(range(min(4, len(self.val_set))))
        pictures = [draw_detections(self.val_set[i].image, detections[i].boxes,
                                    detections[i].labels, detections[i].scores,
                                    self.class_names, score_threshold=0.5) for i in shown]
        self._write_png(self.out_dir / "detections.png", pictures)
        return dict(step=self.step, train_loss=train_loss, val_map50=result["map50"],
                    val_map=result["map"], val_seconds_per_image=sum(seconds.values()),
                    lr=self.lr_at(self.step - 1), seconds=None)

    @staticmethod
    def _write_png(path, pictures):
        from PIL import Image

        height = max(p.shape[0] for p in pictures)
        row = numpy.concatenate([numpy.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)),
                                           constant_values=255) for p in pictures], axis=1)
        with atomic_path(path) as temp:
            Image.fromarray(row).save(temp, format="PNG")

    def model_metadata(self):
        """How predict and evaluate read images for this model (JSON in the file)."""
        options = self.options
        reading = dict(data="synthetic" if options.data == "synthetic" else "coco",
                       size=options.size, normalize=options.normalization(),
                       intensity_range=self.intensity_range)
        return {"reading": json.dumps(reading)}

    def save(self, best):
        state = self.model.state_dict()
        for name in (MODEL_FILE, BEST_MODEL_FILE) if best else (MODEL_FILE,):
            save_model(self.out_dir / name, state, config=self.model.config,
                       class_values=self.class_names, extra_metadata=self.model_metadata(),
                       model_format=MODEL_FORMAT)
        atomic_write_text(self.out_dir / "metrics.csv", metrics_csv(self.history, METRIC_COLUMNS))
        save_training_state(self.out_dir / CHECKPOINT_FILE,
                            optimizer_state=self.optimizer.state_dict(), epoch=0,
                            step=self.step, rng_state={"seed": self.options.seed},
                            history=self.history,
                            extra={"model": state, "options": asdict(self.options)})


def resume_detection_options(run_dir, **given):
    """The options in ``run_dir``'s checkpoint with the given resumable ones (--steps,
    --val-every, --backend) applied; any other must be unchanged."""
    state = load_training_state(Path(run_dir) / CHECKPOINT_FILE)
    return resumed_options(state["extra"]["options"], given, run_dir, DetectOptions)
