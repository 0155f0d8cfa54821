"""Data-parallel scaling: time per training step on N MPI processes, and what the allreduce costs.

    mpirun --allow-run-as-root --oversubscribe -n 2 \\
        env OPENBLAS_NUM_THREADS=1 python benchmarks/bench_distributed.py --batch-size 8

Every process trains on its shard of each global batch (the trainer's own
``training_step``); the script reports the median step time, the time spent
in the gradient allreduce and the bytes each process sends per step.
"""

import argparse
import statistics
import time

import numpy

from scratchseg.distributed import ONE_PROCESS, GradientBuckets, MPICommunicator, shard
from scratchseg.layers import BatchNorm2d
from scratchseg.models import UNet
from scratchseg.optim import SGD
from scratchseg.train import training_step


class TimedCommunicator:
    """Wraps a communicator and adds up the seconds its gradient allreduce takes."""

    def __init__(self, inner):
        self.inner, self.rank, self.size, self.seconds = inner, inner.rank, inner.size, 0.0

    def allreduce(self, array):
        started = time.perf_counter()
        result = self.inner.allreduce(array)
        self.seconds += time.perf_counter() - started
        return result

    def barrier(self):
        self.inner.barrier()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8, help="global batch")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    try:
        comm = MPICommunicator()
    except ValueError:
        comm = ONE_PROCESS
    timed = TimedCommunicator(comm)
    model = UNet(1, 4, args.base_channels, args.depth, "same", batch_norm=True, seed=0)
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d) and comm.size > 1:
            layer.reduce = comm.allreduce
    buckets = GradientBuckets(model) if comm.size > 1 else None
    optimizer = SGD(model, lr=0.01, momentum=0.9)
    rng = numpy.random.default_rng(0)
    x = rng.random((args.batch_size, 1, args.tile, args.tile), dtype=numpy.float32)
    labels = rng.integers(0, 4, (args.batch_size, args.tile, args.tile))
    mine = shard(range(args.batch_size), comm.rank, comm.size)

    times, comm_times = [], []
    for step in range(args.steps + 2):
        comm.barrier()
        timed.seconds = 0.0
        started = time.perf_counter()
        training_step(model, optimizer, x[mine], labels[mine], communicator=timed,
                      buckets=buckets)
        if step >= 2:  # warm-up steps left out
            times.append(time.perf_counter() - started)
            comm_times.append(timed.seconds)
    if comm.rank == 0:
        volume = sum(a.nbytes for _, a in model.gradients())
        print(f"processes {comm.size}  global batch {args.batch_size}  "
              f"step {1e3 * statistics.median(times):.1f} ms  "
              f"allreduce {1e3 * statistics.median(comm_times):.1f} ms  "
              f"gradient volume {volume / 2**20:.2f} MiB per process per step "
              f"in {len(buckets.buckets) if buckets else 0} bucket(s)")


if __name__ == "__main__":
    main()
