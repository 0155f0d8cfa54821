"""Data-parallel scaling: time per training step on N MPI processes, and every allreduce in it.

    mpirun --allow-run-as-root --oversubscribe -n 2 \\
        env OPENBLAS_NUM_THREADS=1 python benchmarks/bench_distributed.py --batch-size 8

Every process trains on its shard of each global batch with the trainer's own
``training_step`` (zero_grad, forward, loss, backward, gradient allreduce, SGD
update), set up as the trainer sets it up: ``GradientBuckets`` and
``synchronise_batch_norm`` when there is more than one process. The
communicator is wrapped in a ``CountingCommunicator``, so every allreduce of
the step is counted, sized and timed, by what it sums:

- ``gradients``: the flat gradient buckets, one call per bucket;
- ``batch_norm``: synchronised batch norm's per-channel statistics, two calls
  in every BatchNorm2d forward (the sums and count, then the squared
  deviations) and one in its backward (the sums of dy and dy * x_hat);
- ``loss``: the global loss and pixel-weight sums that normalise the loss.

Reported per step (the median over the timed steps, rank 0): the whole step's
time, and per kind the allreduce calls, the bytes each process contributes
(the buffers' size; a ring allreduce sends about twice that whatever N is) and
the seconds spent inside allreduce. Every allreduce is a synchronisation
point, so its time includes waiting for the slowest process. The report is a
markdown table, and with ``--json FILE`` a JSON record.
"""

import scratchseg  # noqa: F401, I001  (before NumPy, so that OpenBLAS's threads sleep)

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy

from scratchseg.training.distributed import (
    ONE_PROCESS,
    GradientBuckets,
    MPICommunicator,
    shard,
    synchronise_batch_norm,
)
from scratchseg.nn import UNet
from scratchseg.nn.optim import SGD
from scratchseg.training.loop import training_step

# what each allreduce sums, in report order, with the table's wording
KINDS = {"gradients": "gradient buckets", "batch_norm": "batch-norm statistics",
         "loss": "loss normalisation"}


class CountingCommunicator:
    """Wraps a communicator and records the calls, bytes and seconds of every allreduce.

    Its own ``allreduce`` is recorded as ``default_kind``; ``channel(kind)``
    gives a communicator for one purpose (batch norm, the gradient buckets)
    whose calls are recorded under ``kind``. ``reset()`` starts a new step.
    """

    def __init__(self, inner, default_kind="loss"):
        self.inner, self.rank, self.size = inner, inner.rank, inner.size
        self.default_kind = default_kind
        self.reset()

    def reset(self):
        self.counts = {kind: {"calls": 0, "bytes": 0, "seconds": 0.0} for kind in KINDS}

    def record(self, kind, array):
        started = time.perf_counter()
        result = self.inner.allreduce(array)
        count = self.counts.setdefault(kind, {"calls": 0, "bytes": 0, "seconds": 0.0})
        count["seconds"] += time.perf_counter() - started
        count["calls"] += 1
        count["bytes"] += int(array.nbytes)
        return result

    def allreduce(self, array):
        return self.record(self.default_kind, array)

    def channel(self, kind):
        return _Channel(self, kind)

    def barrier(self):
        self.inner.barrier()


class _Channel:
    """The communicator one purpose uses: the same processes, recorded under ``kind``."""

    def __init__(self, counter, kind):
        self.counter, self.kind = counter, kind
        self.rank, self.size = counter.rank, counter.size

    def allreduce(self, array):
        return self.counter.record(self.kind, array)

    def barrier(self):
        self.counter.barrier()


class _CountedBuckets:
    """``GradientBuckets`` whose allreduce goes through the ``gradients`` channel."""

    def __init__(self, buckets, channel):
        self.buckets, self.channel = buckets, channel

    def allreduce(self, communicator):
        self.buckets.allreduce(self.channel)


def measure(comm, *, batch_size=8, tile=64, base_channels=16, depth=3, batch_norm=True,
            steps=10, warmup=2, seed=0):
    """Train ``warmup + steps`` steps on this process's shard; returns the record (a dict)."""
    counter = CountingCommunicator(comm)
    model = UNet(1, 4, base_channels, depth, "same", batch_norm=batch_norm, seed=seed)
    buckets = None
    if comm.size > 1:  # as the trainer does
        buckets = GradientBuckets(model)
        synchronise_batch_norm(model, counter.channel("batch_norm"))
    counted = _CountedBuckets(buckets, counter.channel("gradients")) if buckets else None
    optimizer = SGD(model, lr=0.01, momentum=0.9)
    rng = numpy.random.default_rng(seed)
    x = rng.random((batch_size, 1, tile, tile), dtype=numpy.float32)
    labels = rng.integers(0, 4, (batch_size, tile, tile))
    mine = shard(range(batch_size), comm.rank, comm.size)

    step_seconds, per_step = [], []
    for step in range(warmup + steps):
        comm.barrier()
        counter.reset()
        started = time.perf_counter()
        training_step(model, optimizer, x[mine], labels[mine], communicator=counter,
                      buckets=counted)
        elapsed = time.perf_counter() - started
        if step >= warmup:
            step_seconds.append(elapsed)
            per_step.append(counter.counts)

    for counts in per_step:
        counts["total"] = {key: sum(c[key] for c in counts.values())
                           for key in ("calls", "bytes", "seconds")}
    allreduce = {kind: {"calls": _per_step([s[kind]["calls"] for s in per_step]),
                        "bytes": _per_step([s[kind]["bytes"] for s in per_step]),
                        "ms": 1e3 * statistics.median(s[kind]["seconds"] for s in per_step)}
                 for kind in per_step[0]}
    return {
        "processes": comm.size, "global_batch": batch_size, "local_batch": len(mine),
        "tile": tile, "base_channels": base_channels, "depth": depth,
        "batch_norm": batch_norm, "steps": steps, "warmup": warmup,
        "parameters": sum(int(p.size) for _, p in model.parameters()),
        "gradient_bytes": sum(int(g.nbytes) for _, g in model.gradients()),
        "buckets": len(buckets.buckets) if buckets else 0,
        "step_ms": 1e3 * statistics.median(step_seconds),
        "step_ms_all": [1e3 * s for s in step_seconds],
        "allreduce": allreduce,
    }


def _per_step(values):
    """The count every step shares (an int), or the median if the steps differ."""
    return values[0] if len(set(values)) == 1 else statistics.median(values)


def _size(nbytes):
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes:g} B"


def markdown(record):
    """The record as a header line and a table: one row per kind of allreduce, and the total."""
    step = record["step_ms"]
    lines = [
        f"processes {record['processes']}, global batch {record['global_batch']} "
        f"({record['local_batch']} on rank 0), {record['tile']}x{record['tile']} tiles, "
        f"U-Net base {record['base_channels']} depth {record['depth']}"
        f"{'' if record['batch_norm'] else ' without batch norm'}, "
        f"{record['parameters']:,} parameters: step {step:.1f} ms "
        f"(median of {record['steps']})",
        "",
        "| allreduce | calls per step | bytes per step per process | time per step | "
        "share of step |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, label in [*KINDS.items(), ("total", "total")]:
        count = record["allreduce"][kind]
        if kind == "gradients" and record["buckets"]:
            label += f" ({record['buckets']})"
        share = f"{100 * count['ms'] / step:.1f}%" if step > 0 else "-"
        lines.append(f"| {label} | {count['calls']:g} | {_size(count['bytes'])} | "
                     f"{count['ms']:.2f} ms | {share} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8, help="global batch")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the figures")
    parser.add_argument("--json", metavar="FILE", help="also write the record as JSON")
    args = parser.parse_args(argv)
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--tile", args.tile, 1),
                             ("--steps", args.steps, 1), ("--warmup", args.warmup, 0)):
        if value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")

    try:
        comm = MPICommunicator()
    except ValueError:  # no mpi4py: one process
        comm = ONE_PROCESS
    record = measure(comm, batch_size=args.batch_size, tile=args.tile,
                     base_channels=args.base_channels, depth=args.depth,
                     batch_norm=args.batch_norm, steps=args.steps, warmup=args.warmup)
    if comm.rank == 0:
        print(markdown(record))
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
