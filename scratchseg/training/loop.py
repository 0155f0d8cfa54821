"""The training loop: SGD on random tiles, validation by overlap-tile inference, resume.

A run directory holds, rewritten atomically after every epoch:
``model.safetensors`` (weights, architecture and class mapping: all that
``predict`` needs, and loadable by PyTorch), ``checkpoint.safetensors``
(weights, momentum buffers, epoch, step, options and history: an exact
resume), ``metrics.csv``, ``curves.png`` and ``samples.png`` (and with ``trace``,
``trace.csv`` and ``gradient_flow.png``: see scratchseg.training.trace). The model file
holds PyTorch's ``num_batches_tracked`` for every batch norm: the number of
SGD steps taken (one training forward each, PyTorch's count).

Every random draw is keyed on (seed, epoch, sample index), never on a
global generator, so a resumed run continues bit-identically.
"""

import csv
import io
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy
from tqdm import tqdm

from scratchseg.backend import get_array_module, to_device
from scratchseg.data import (
    FolderDataset,
    Subset,
    SyntheticShapes,
    WeightMaps,
    batch_indices,
    epoch_order,
    input_size_for_output,
    predict_logits,
    training_batch,
)
from scratchseg.data.batches import DROPOUT_STREAM, SPLIT_STREAM
from scratchseg.fileio import atomic_write_text
from scratchseg.functional.loss import NonFiniteError
from scratchseg.grad_mode import no_grad
from scratchseg.metrics import confusion_matrix, mean_dice, mean_iou, pixel_accuracy
from scratchseg.nn import UNet
from scratchseg.nn.optim import SGD, make_schedule
from scratchseg.ops import softmax_cross_entropy_backward, softmax_cross_entropy_forward
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
from scratchseg.training.options import resumed_options
from scratchseg.training.plots import plot_curves, plot_samples
from scratchseg.training.trace import GradientFlowTracer

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_pixel_acc", "val_miou", "val_dice",
                  "lr", "seconds")
MODEL_FILE, CHECKPOINT_FILE = "model.safetensors", "checkpoint.safetensors"
TRACE_FILE = "trace.csv"


class TrainingError(RuntimeError):
    """Training cannot go on (a diverged loss, an unusable run directory)."""


def load_dataset(options):
    """The built-in synthetic shapes, or a folder DIR/images + DIR/masks."""
    if options.data == "synthetic":
        return SyntheticShapes(options.num_samples, options.image_size, options.seed)
    return FolderDataset(options.data)


def split_dataset(dataset, val_fraction, seed):
    """A seeded train/validation split; at least one sample on each side when possible."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = numpy.random.default_rng([SPLIT_STREAM, seed]).permutation(len(dataset))
    num_val = min(max(round(len(dataset) * val_fraction), 1 if val_fraction > 0 else 0),
                  len(dataset) - 1)
    if len(dataset) < 1 or (val_fraction > 0 and len(dataset) < 2):
        raise ValueError(f"need at least 2 samples to split off validation, got {len(dataset)}")
    return Subset(dataset, sorted(order[num_val:])), Subset(dataset, sorted(order[:num_val]))


def tile_sizes(model, tile):
    """(input edge, output edge) of a training tile whose output is at least ``tile``."""
    input_size = input_size_for_output(model, tile)
    return input_size, model.output_size(input_size)


def training_step(model, optimizer, x, labels, weight_map=None, *,
                  communicator=ONE_PROCESS, buckets=None):
    """One SGD step on this process's shard of a global batch; returns the global mean loss.

    The contract's step (zero_grad, forward, loss, backward, update) with the
    loss summed over the shard and normalised by the global sum of pixel
    weights, sum_i v_i / sum v = mean: one process or N give the same update.
    """
    model.zero_grad()
    logits = model.forward(x)
    loss_sum, cache = softmax_cross_entropy_forward(logits, labels, weight_map=weight_map,
                                                    reduction="sum")
    xp = get_array_module(logits)
    weight_sum = weight_map.sum() if weight_map is not None else labels.size
    totals = communicator.allreduce(xp.stack([xp.asarray(v, dtype=xp.float64)
                                              for v in (loss_sum, weight_sum)]))
    loss, norm = float(totals[0]), float(totals[1])
    model.backward(softmax_cross_entropy_backward(1.0 / norm, cache), input_grad=False)
    if buckets is not None:
        buckets.allreduce(communicator)
    optimizer.step()
    return loss / norm


def evaluate(model, dataset, *, tile=None, communicator=ONE_PROCESS):
    """Whole-image overlap-tile inference: (loss, confusion matrix, {index: prediction}).

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
            loss, _ = softmax_cross_entropy_forward(logits[None], sample.mask[None],
                                                    reduction="sum")
            sums += (float(loss), sample.mask.size)
            predictions[i] = logits.argmax(axis=0)
            cm += confusion_matrix(predictions[i], sample.mask, num_classes)
    communicator.allreduce(cm)
    communicator.allreduce(sums)
    model.train()
    return sums[0] / max(sums[1], 1), cm, predictions


def _metrics_csv(history):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n")
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
        dataset = load_dataset(options)
        self.train_set, self.val_set = split_dataset(dataset, options.val_fraction, options.seed)
        self.class_values = list(dataset.class_values)
        self.model = UNet(**options.model_config(dataset), seed=options.seed,
                          backend=options.backend)
        self.input_size, self.output_size = tile_sizes(self.model, options.tile)
        self.optimizer = SGD(self.model, lr=options.lr, momentum=options.momentum,
                             weight_decay=options.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.train_set) / options.batch_size)
        total = max(self.steps_per_epoch * options.epochs, 1)
        self.lr_at = make_schedule(options.schedule, options.lr, total,
                                   warmup_steps=min(options.warmup_steps, total - 1))
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
            if self.epoch >= options.epochs:
                raise TrainingError(f"{self.out_dir} already finished its {self.epoch} epochs; "
                                    f"to train on, resume with --epochs N, a new total "
                                    f"N > {self.epoch}")
        if self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    # -- checkpoints ---------------------------------------------------------------------

    def _restore(self):
        state = load_training_state(self.out_dir / CHECKPOINT_FILE)
        self.model.load_state_dict(state["extra"]["model"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        if self.tracer is not None and (self.out_dir / TRACE_FILE).exists():
            self.tracer.load_csv(self.out_dir / TRACE_FILE)

    def save(self):
        """Write the model file, the metrics, the curves, then the checkpoint (atomically)."""
        state = self.model.state_dict()
        save_model(self.out_dir / MODEL_FILE, add_batch_norm_counters(state, self.step),
                   config=self.model.config, class_values=self.class_values)
        atomic_write_text(self.out_dir / "metrics.csv", _metrics_csv(self.history))
        plot_curves(self.history, self.out_dir / "curves.png")
        if self.tracer is not None:
            self.tracer.write_csv(self.out_dir / TRACE_FILE)
            self.tracer.plot(self.out_dir / "gradient_flow.png")
        save_training_state(self.out_dir / CHECKPOINT_FILE,
                            optimizer_state=self.optimizer.state_dict(), epoch=self.epoch,
                            step=self.step, rng_state={"seed": self.options.seed},
                            history=self.history,
                            extra={"model": state, "options": asdict(self.options)})

    # -- the loop ------------------------------------------------------------------------

    def run(self):
        """Train until ``options.epochs``; returns the metrics history."""
        options = self.options
        bar = tqdm(total=self.steps_per_epoch * options.epochs, initial=self.step,
                   disable=not self.progress, unit="step", dynamic_ncols=True)
        with bar:
            while self.epoch < options.epochs:
                started = time.perf_counter()
                row = self._validate(self._train_epoch(bar))
                row["seconds"] = time.perf_counter() - started
                self.history.append(row)
                self.epoch += 1
                if self.is_writer:
                    self.save()
                    bar.write(
                        f"epoch {row['epoch']:>3}  train_loss {row['train_loss']:.4f}  "
                        + (f"val_loss {row['val_loss']:.4f}  val_miou {row['val_miou']:.4f}  "
                           if row["val_miou"] is not None else "")
                        + f"({row['seconds']:.1f} s)")
                self.communicator.barrier()
        return self.history

    def _train_epoch(self, bar):
        options, model = self.options, self.model
        model.train()
        _reseed_dropout(model, options.seed, self.epoch)
        order = epoch_order(len(self.train_set), epoch=self.epoch, seed=options.seed)
        losses = []
        comm = self.communicator
        for global_indices in batch_indices(order, options.batch_size):
            indices = shard(global_indices, comm.rank, comm.size)  # [] when the batch is short
            if model.dropout is not None and comm.size > 1:
                model.dropout.batch_shard = (len(global_indices), comm.rank, comm.size)
            x, labels, weights = training_batch(
                self.train_set, indices, epoch=self.epoch, seed=options.seed,
                input_size=self.input_size, output_size=self.output_size,
                augment=options.augment, weight_maps=self.weight_maps)
            device = [None if a is None else to_device(a, options.backend)
                      for a in (x, labels, weights)]
            self.optimizer.lr = self.lr_at(self.step)
            if self.tracer is not None:
                self.tracer.before_step()
            try:
                # divergence is detected below and reported as one clear error
                with numpy.errstate(over="ignore", invalid="ignore"):
                    loss = training_step(model, self.optimizer, *device, communicator=comm,
                                         buckets=self.buckets)
            except NonFiniteError as error:
                raise TrainingError(
                    f"training diverged at epoch {self.epoch + 1}, step {self.step + 1} "
                    f"(non-finite logits); lower --lr (now {options.lr})") from error
            if not math.isfinite(loss):
                raise TrainingError(f"non-finite loss {loss} at epoch {self.epoch + 1}, "
                                    f"step {self.step + 1}; lower --lr (now {options.lr})")
            if self.tracer is not None:
                self.tracer.after_step(self.step)
            losses.append(loss)
            self.step += 1
            bar.set_postfix(epoch=self.epoch + 1, loss=f"{loss:.4f}", refresh=False)
            bar.update()
        return float(numpy.mean(losses))

    def _validate(self, train_loss):
        row = dict(epoch=self.epoch + 1, train_loss=train_loss, val_loss=None,
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
                plot_samples([s.image for s in samples], [s.mask for s in samples],
                             [predictions[i] for i in shown], self.out_dir / "samples.png",
                             self.val_set.num_classes)
        return row


def resume_options(run_dir, **given):
    """The options stored in ``run_dir``'s checkpoint, with the ``given`` RESUMABLE_OPTIONS
    (see scratchseg.training.options.resumed_options: any other option must be unchanged)."""
    state = load_training_state(Path(run_dir) / CHECKPOINT_FILE)
    return resumed_options(state["extra"]["options"], given, run_dir)
