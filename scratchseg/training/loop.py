"""The training loop: SGD on random tiles, validation by overlap-tile inference, resume.

An epoch draws random tiles covering each training image's area about once
(``--tiles-per-epoch`` overrides it); by default a run takes about 500 SGD steps.
Every ``val_every`` epochs, and after the last, the run validates and rewrites its
directory atomically:
``model.safetensors`` (weights, architecture, class mapping and how to read
images: all that ``predict`` needs, and loadable by PyTorch),
``model_best.safetensors`` (the same for the epoch with the best validation
mean IoU so far), ``checkpoint.safetensors``
(weights, momentum buffers, epoch, step, options and history: an exact
resume), ``metrics.csv``, ``curves.png`` and ``samples.png`` (and with ``trace``,
``trace.csv`` and ``gradient_flow.png``: see scratchseg.training.trace). The model file
holds PyTorch's ``num_batches_tracked`` for every batch norm: the number of
SGD steps taken (one training forward each, PyTorch's count).

Every random draw is keyed on (seed, epoch, draw), never on a global generator,
so a resumed run continues bit-identically from its last written epoch.
"""

import contextlib
import csv
import io
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy
from tqdm import tqdm

from scratchseg.backend import get_array_module, to_device
from scratchseg.data import (
    FolderDataset,
    SyntheticShapes,
    WeightMaps,
    batch_indices,
    epoch_order,
    input_size_for_output,
    predict_logits,
    tiles_per_image,
    training_batch,
)
from scratchseg.data.batches import DROPOUT_STREAM
from scratchseg.data.dataset import IGNORE_INDEX
from scratchseg.data.targets import BoundaryTargets
from scratchseg.fileio import atomic_write_text
from scratchseg.functional.loss import NonFiniteError
from scratchseg.grad_mode import no_grad
from scratchseg.instances import instances_from_prediction
from scratchseg.metrics import confusion_matrix, mean_dice, mean_iou, pixel_accuracy
from scratchseg.nn import UNet
from scratchseg.nn.optim import SGD, make_schedule
from scratchseg.ops import (
    dice_loss_backward,
    dice_loss_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from scratchseg.training.checkpoint import (
    add_batch_norm_counters,
    load_training_state,
    save_model,
    save_training_state,
)
from scratchseg.training.distributed import (
    ONE_PROCESS,
    GradientBuckets,
    select_local_gpu,
    shard,
    synchronise_batch_norm,
)
from scratchseg.training.objective import class_weights, pixel_weights
from scratchseg.training.options import resumed_options
from scratchseg.training.plots import plot_curves, plot_samples
from scratchseg.training.split import split_dataset
from scratchseg.training.trace import GradientFlowTracer

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_pixel_acc", "val_miou", "val_dice",
                  "lr", "seconds")
MODEL_FILE, BEST_MODEL_FILE = "model.safetensors", "model_best.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
AUTO_STEPS = 500  # the default run length in SGD steps
AUTO_VALIDATIONS = 15  # about how often the default run validates and writes its files
# The intensity augmentation's largest gain. An image normalised on its own has a contrast
# set by its brightest objects (a field of dim nuclei comes out with twice the background
# noise of one with a bright nucleus), so training varies it by up to 2x either way; values
# fed as stored ("none", the synthetic data whose intensities mean classes) vary by 10%.
MAX_GAIN = {"none": 1.1}
PER_IMAGE_MAX_GAIN = 2.0
TRACE_FILE = "trace.csv"


class TrainingError(RuntimeError):
    """Training cannot go on (a diverged loss, an unusable run directory)."""


def load_dataset(options, class_values=None, folder=None):
    """The built-in synthetic shapes, or the folder ``folder`` (default ``options.data``)
    read as the options say; with ``--target boundary``, their boundary targets."""
    folder = folder or options.data
    if folder == "synthetic":
        dataset = SyntheticShapes(options.num_samples, options.image_size, options.seed,
                                  normalize=options.normalization())
    elif options.target == "boundary" and options.masks != "instances":
        raise ValueError("--target boundary draws each object's boundary from its instance "
                         "id: give instance masks and --masks instances")
    else:
        if options.target == "boundary":
            class_values = None  # the boundary classes come from instances: always [0, 1]
        dataset = FolderDataset(folder, class_values=class_values, **options.folder_settings())
    return BoundaryTargets(dataset) if options.target == "boundary" else dataset


def training_and_validation(options):
    """(train set, validation set, class values): ``--val-data``, or split off ``--data``."""
    dataset = load_dataset(options)
    if not options.val_data:
        return (*split_dataset(dataset, options.val_fraction, options.seed),
                dataset.class_values)
    val_set = load_dataset(options, dataset.class_values, options.val_data)
    if val_set.in_channels != dataset.in_channels:
        raise ValueError(f"--val-data {options.val_data} holds {val_set.in_channels}-channel "
                         f"images but --data {options.data} holds {dataset.in_channels}")
    return dataset, val_set, dataset.class_values


def intensity_range(dataset):
    """[low, high]: the lowest 1st and highest 99.8th percentile of the normalised images,
    stored with the model so predict can warn about images far outside it."""
    low, high = numpy.inf, -numpy.inf
    for i in range(len(dataset)):
        p_low, p_high = numpy.percentile(dataset[i].image, (1.0, 99.8))
        low, high = min(low, p_low), max(high, p_high)
    return [float(low), float(high)]


def tile_sizes(model, tile):
    """(input edge, output edge) of a training tile whose output is at least ``tile``."""
    input_size = input_size_for_output(model, tile)
    return input_size, model.output_size(input_size)


def training_step(model, optimizer, x, labels, weights=None, *, loss="ce",
                  communicator=ONE_PROCESS, buckets=None):
    """One SGD step on this process's shard of a global batch; returns the global mean loss.

    The contract's step (zero_grad, forward, loss, backward, update).
    Cross-entropy is summed over the shard and normalised by the global sum of
    pixel weights, sum_i v_i / sum v = mean: one process or N give the same update.
    The Dice loss is a ratio of sums over a batch, so each process takes its shard's
    and the step averages them over the processes.
    """
    model.zero_grad()
    logits = model.forward(x)
    xp = get_array_module(logits)
    total, dlogits = 0.0, None
    if loss in ("ce", "ce+dice"):
        loss_sum, cache = softmax_cross_entropy_forward(logits, labels, weight_map=weights,
                                                        reduction="sum")
        weight_sum = weights.sum() if weights is not None else labels.size
        totals = communicator.allreduce(xp.stack([xp.asarray(v, dtype=xp.float64)
                                                  for v in (loss_sum, weight_sum)]))
        total += float(totals[0]) / float(totals[1])
        dlogits = softmax_cross_entropy_backward(1.0 / float(totals[1]), cache)
    if loss in ("dice", "ce+dice"):
        dice, cache = dice_loss_forward(logits, labels, weight=weights)
        total += float(communicator.allreduce(xp.asarray([dice], xp.float64))[0]) \
            / communicator.size
        ddice = dice_loss_backward(1.0 / communicator.size, cache)
        dlogits = ddice if dlogits is None else dlogits + ddice
    model.backward(dlogits, input_grad=False)
    if buckets is not None:
        buckets.allreduce(communicator)
    optimizer.step()
    return total


def evaluate(model, dataset, *, tile=None, communicator=ONE_PROCESS):
    """Whole-image overlap-tile inference: (cross-entropy, confusion matrix,
    {index: prediction}); ignored pixels count in neither.

    The model runs in eval mode under ``no_grad()`` and is left in training mode.

    With several processes each takes every size-th image and the loss and
    confusion matrix are summed across them; predictions stay local.
    """
    model.eval()
    num_classes = dataset.num_classes
    cm = numpy.zeros((num_classes, num_classes), dtype=numpy.int64)
    sums, predictions = numpy.zeros(2), {}
    with no_grad():  # forwards only: no layer (nor the loss) keeps a cache
        for i in shard(range(len(dataset)), communicator.rank, communicator.size):
            sample = dataset[i]
            logits = predict_logits(model, sample.image, tile=tile)
            labels, weights = pixel_weights(sample.mask, None, None)
            loss, _ = softmax_cross_entropy_forward(
                logits[None], labels[None], reduction="sum",
                weight_map=None if weights is None else weights[None])
            sums += (float(loss), sample.mask.size if weights is None else weights.sum())
            predictions[i] = logits.argmax(axis=0)
            cm += confusion_matrix(predictions[i], sample.mask, num_classes,
                                   ignore_index=IGNORE_INDEX)
    communicator.allreduce(cm)
    communicator.allreduce(sums)
    model.train()
    return sums[0] / max(sums[1], 1), cm, predictions


def metrics_csv(history, columns=METRIC_COLUMNS):
    """The history's rows as CSV text, floats to 6 significant digits."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return text.getvalue()


def _reseed_dropout(model, seed, epoch):
    if model.dropout is not None:
        stream = numpy.random.default_rng([DROPOUT_STREAM, seed, epoch])
        model.dropout.seed = int(stream.integers(2**63))
        model.dropout.reset_rng()


class Trainer:
    """Owns the model, optimizer, data and run directory of one training run."""

    def __init__(self, options, out_dir, *, resume=False, progress=True,
                 communicator=ONE_PROCESS):
        options.validate()
        self.options, self.out_dir = options, Path(out_dir)
        self.communicator = communicator
        self.is_writer = communicator.rank == 0  # only the first process writes files
        self.progress = progress and self.is_writer
        if not resume and (self.out_dir / CHECKPOINT_FILE).exists():
            raise TrainingError(f"{self.out_dir} already holds a run; continue it with "
                                f"--resume {self.out_dir} or choose another --out")
        if options.backend == "cupy" and communicator.size > 1:
            select_local_gpu(communicator)  # before the first CuPy array
        self.train_set, self.val_set, self.class_values = training_and_validation(options)
        self.class_weights = class_weights(options.class_weights, self.train_set)
        self.model = UNet(**options.model_config(self.train_set), seed=options.seed,
                          backend=options.backend)
        self.input_size, self.output_size = tile_sizes(self.model, options.tile)
        self.optimizer = SGD(self.model, lr=options.lr, momentum=options.momentum,
                             weight_decay=options.weight_decay)
        self._plan_epochs()
        self.weight_maps = WeightMaps() if options.weight_map else None
        self.buckets = None
        if communicator.size > 1:
            self.buckets = GradientBuckets(self.model)
            synchronise_batch_norm(self.model, communicator)
        # the trace records the writer's shard (another process's shard may be empty)
        self.tracer = GradientFlowTracer(self.model) if options.trace and self.is_writer \
            else None
        self.epoch, self.step, self.history = 0, 0, []
        if resume:
            self._restore()
            if self.epoch >= self.epochs:
                raise TrainingError(f"{self.out_dir} already finished its {self.epoch} epochs; "
                                    f"to train on, resume with --epochs N, a new total "
                                    f"N > {self.epoch}")
        if self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def _plan_epochs(self):
        """Tiles per epoch, steps per epoch, epochs, validation interval and the schedule."""
        options = self.options
        self.tile_counts = tiles_per_image(
            [self.train_set[i].mask.shape for i in range(len(self.train_set))],
            self.output_size)
        self.tiles_per_epoch = options.tiles_per_epoch or max(sum(self.tile_counts),
                                                              options.batch_size)
        self.steps_per_epoch = math.ceil(self.tiles_per_epoch / options.batch_size)
        self.epochs = options.epochs or math.ceil(AUTO_STEPS / self.steps_per_epoch)
        self.val_every = options.val_every or max(1, round(self.epochs / AUTO_VALIDATIONS))
        total = self.steps_per_epoch * self.epochs
        self.lr_at = make_schedule(options.schedule, options.lr, total,
                                   warmup_steps=min(options.warmup_steps, total - 1))

    # -- checkpoints ---------------------------------------------------------------------

    def _restore(self):
        state = load_training_state(self.out_dir / CHECKPOINT_FILE)
        self.model.load_state_dict(state["extra"]["model"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        if self.tracer is not None and (self.out_dir / TRACE_FILE).exists():
            self.tracer.load_csv(self.out_dir / TRACE_FILE)

    def model_metadata(self):
        """How predict reads images and writes masks for this model (JSON in the file)."""
        options = self.options
        style = getattr(self.train_set, "mask_style", None)  # the synthetic data has none
        reading = dict(normalize=options.normalization(), intensity_range=self.intensity_range,
                       masks=options.masks, target=options.target,
                       mask_suffix=options.mask_suffix,
                       ignore_value=options.ignore_value,
                       mask_style=None if style is None else [style.kind, style.palette])
        return {"reading": json.dumps(reading)}

    def save(self, best):
        """Write the model file (and the best model's when ``best``), the metrics, the
        curves, then the checkpoint (each atomically)."""
        state = add_batch_norm_counters(self.model.state_dict(), self.step)
        names = (MODEL_FILE, BEST_MODEL_FILE) if best else (MODEL_FILE,)
        for name in names:
            save_model(self.out_dir / name, state, config=self.model.config,
                       class_values=self.class_values, extra_metadata=self.model_metadata())
        atomic_write_text(self.out_dir / "metrics.csv", metrics_csv(self.history))
        plot_curves(self.history, self.out_dir / "curves.png")
        if self.tracer is not None:
            self.tracer.write_csv(self.out_dir / TRACE_FILE)
            self.tracer.plot(self.out_dir / "gradient_flow.png")
        save_training_state(self.out_dir / CHECKPOINT_FILE,
                            optimizer_state=self.optimizer.state_dict(), epoch=self.epoch,
                            step=self.step, rng_state={"seed": self.options.seed},
                            history=self.history,
                            extra={"model": self.model.state_dict(),
                                   "options": asdict(self.options)})

    # -- the loop ------------------------------------------------------------------------

    def run(self):
        """Train until the planned epochs; returns the metrics history."""
        if self.is_writer:
            self.intensity_range = intensity_range(self.train_set)
        bar = tqdm(total=self.steps_per_epoch * self.epochs, initial=self.step,
                   disable=not self.progress, unit="step", dynamic_ncols=True)
        with bar:
            while self.epoch < self.epochs:
                started = time.perf_counter()
                train_loss = self._train_epoch(bar)
                self.epoch += 1
                if self.epoch % self.val_every and self.epoch < self.epochs:
                    continue
                with self._stopping_on_divergence(f"the validation after epoch {self.epoch}"):
                    row = self._validate(train_loss)
                row["seconds"] = time.perf_counter() - started
                best = row["val_miou"] is not None and all(
                    row["val_miou"] > (past["val_miou"] or -1) for past in self.history)
                self.history.append(row)
                if self.is_writer:
                    self.save(best)
                    bar.write(
                        f"epoch {row['epoch']:>3}/{self.epochs}  train_loss "
                        f"{row['train_loss']:.4f}  "
                        + (f"val_loss {row['val_loss']:.4f}  val_miou {row['val_miou']:.4f}  "
                           if row["val_miou"] is not None else "")
                        + f"({row['seconds']:.1f} s)")
                self.communicator.barrier()
        return self.history

    def _train_epoch(self, bar):
        options, model = self.options, self.model
        model.train()
        _reseed_dropout(model, options.seed, self.epoch)
        order = epoch_order(self.tile_counts, epoch=self.epoch, seed=options.seed,
                            total=self.tiles_per_epoch)
        losses = []
        comm = self.communicator
        for global_draws in batch_indices(range(len(order)), options.batch_size):
            draws = shard(global_draws, comm.rank, comm.size)  # [] when the batch is short
            if model.dropout is not None and comm.size > 1:
                model.dropout.batch_shard = (len(global_draws), comm.rank, comm.size)
            x, labels, border_weights = training_batch(
                self.train_set, order[draws], draws, epoch=self.epoch, seed=options.seed,
                input_size=self.input_size, output_size=self.output_size,
                augment=options.augment, weight_maps=self.weight_maps,
                max_gain=MAX_GAIN.get(options.normalization(), PER_IMAGE_MAX_GAIN))
            labels, weights = pixel_weights(labels, border_weights, self.class_weights)
            device = [None if a is None else to_device(a, options.backend)
                      for a in (x, labels, weights)]
            self.optimizer.lr = self.lr_at(self.step)
            if self.tracer is not None:
                self.tracer.before_step()
            losses.append(self._step(device))
            if self.tracer is not None:
                self.tracer.after_step(self.step)
            self.step += 1
            bar.set_postfix(epoch=f"{self.epoch + 1}/{self.epochs}", loss=f"{losses[-1]:.4f}",
                            refresh=False)
            bar.update()
        return float(numpy.mean(losses))

    def _step(self, batch):
        """One training step; a diverging loss stops the run with one clear error."""
        with self._stopping_on_divergence(f"epoch {self.epoch + 1}, step {self.step + 1}"):
            loss = training_step(self.model, self.optimizer, *batch, loss=self.options.loss,
                                 communicator=self.communicator, buckets=self.buckets)
            if not math.isfinite(loss):
                raise NonFiniteError(f"loss {loss}")
        return loss

    @contextlib.contextmanager
    def _stopping_on_divergence(self, where):
        """NumPy's overflow warnings silenced inside; non-finite logits or loss end the run
        with a TrainingError that says where and what to do."""
        try:
            with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
                yield
        except NonFiniteError as error:
            raise TrainingError(f"training diverged at {where} ({error}); lower --lr (now "
                                f"{self.options.lr})") from error

    def _validate(self, train_loss):
        row = dict(epoch=self.epoch, train_loss=train_loss, val_loss=None,
                   val_pixel_acc=None, val_miou=None, val_dice=None,
                   lr=self.optimizer.lr, seconds=None)
        if len(self.val_set):
            val_loss, cm, predictions = evaluate(self.model, self.val_set,
                                                 communicator=self.communicator)
            row.update(val_loss=val_loss, val_pixel_acc=pixel_accuracy(cm),
                       val_miou=mean_iou(cm), val_dice=mean_dice(cm))
            if self.is_writer:
                shown = sorted(predictions)[:4]
                samples = [self.val_set[i] for i in shown]
                objects = [instances_from_prediction(predictions[i], self.val_set.num_classes,
                                                     self.options.target) for i in shown]
                plot_samples([s.image for s in samples], [s.mask for s in samples],
                             [predictions[i] for i in shown], self.out_dir / "samples.png",
                             self.val_set.num_classes, objects)
        return row


def resume_options(run_dir, **given):
    """The options stored in ``run_dir``'s checkpoint, with the ``given`` RESUMABLE_OPTIONS
    (see scratchseg.training.options.resumed_options: any other option must be unchanged)."""
    state = load_training_state(Path(run_dir) / CHECKPOINT_FILE)
    return resumed_options(state["extra"]["options"], given, run_dir)
