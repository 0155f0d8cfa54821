"""Data-parallel training over MPI: shards of each global batch, summed gradients.

Every process holds the whole model. Each takes its shard of every global
batch, computes the summed (not averaged) loss and its gradients, and one
allreduce over a few large flat buckets adds the gradients of all processes;
the loss is normalised by the global sum of pixel weights, so N processes
compute the same update as one process (to float summation order). Batch
norm reduces its per-channel sums across processes too (synchronised batch
statistics), so it sees the whole global batch as one process would.

The communicator is the only part that differs between CPU and GPU: mpi4py on
host buffers, or NCCL (``cupy.cuda.nccl``) on device buffers, each process on
the GPU of its rank among the processes of its node (``select_local_gpu``).
Everything else (sharding, bucketing, normalisation) is shared and tested on
the CPU.
"""

import sys

from scratchseg.backend import get_array_module
from scratchseg.nn.layers import BatchNorm2d

BUCKET_BYTES = 64 * 2**20


class SingleProcess:
    """The communicator of a run on one process: every reduction is the identity."""

    rank, size = 0, 1

    def allreduce(self, array):
        return array

    def barrier(self):
        pass

    def local_rank_and_size(self):
        return 0, 1


ONE_PROCESS = SingleProcess()


class MPICommunicator:
    """Sums buffers across the processes of an MPI communicator, in place (mpi4py)."""

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as error:
            raise ValueError("distributed training needs mpi4py and an MPI library: "
                             "pip install 'scratchseg[mpi]'") from error
        self._mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._nccl = None

    def allreduce(self, array):
        """Sum ``array`` over all processes, in place; returns it."""
        if self.size == 1:
            return array
        if get_array_module(array).__name__ == "cupy":
            return self._nccl_allreduce(array)
        self.comm.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)
        return array

    def _nccl_allreduce(self, array):
        """The GPU path: NCCL over the same ranks (one unique id broadcast over MPI)."""
        from cupy.cuda import nccl

        if self._nccl is None:
            uid = nccl.get_unique_id() if self.rank == 0 else None
            uid = self.comm.bcast(uid, root=0)
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        kinds = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                 "int64": nccl.NCCL_INT64}
        stream = get_array_module(array).cuda.get_current_stream().ptr
        self._nccl.allReduce(array.data.ptr, array.data.ptr, array.size,
                             kinds[str(array.dtype)], nccl.NCCL_SUM, stream)
        return array

    def barrier(self):
        self.comm.Barrier()

    def local_rank_and_size(self):
        """(rank, size) among the processes on this node (MPI's shared-memory split)."""
        local = self.comm.Split_type(self._mpi.COMM_TYPE_SHARED)
        try:
            return local.Get_rank(), local.Get_size()
        finally:
            local.Free()

    def abort(self, exit_code):
        """End every process of the job now (after flushing this one's output)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(exit_code)


def gpu_for_local_rank(local_rank, local_size, device_count):
    """The GPU of a process: its rank among the processes of its node, one GPU each."""
    if local_size > device_count:
        raise ValueError(f"{local_size} processes on this node but {device_count} visible "
                         f"GPU(s); NCCL needs one GPU per process: start at most "
                         f"{device_count} per node")
    return local_rank


def select_local_gpu(communicator):
    """Make this process's GPU (``gpu_for_local_rank``) CuPy's current device; returns it.

    Call it before any CuPy array exists, so the model and NCCL land on that GPU.
    """
    import cupy

    local_rank, local_size = communicator.local_rank_and_size()
    device = gpu_for_local_rank(local_rank, local_size, cupy.cuda.runtime.getDeviceCount())
    cupy.cuda.Device(device).use()
    return device


def synchronise_batch_norm(model, communicator):
    """Make every batch norm of ``model`` sum its batch statistics over the processes."""
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm2d):
            layer.reduce = communicator.allreduce


def shard(indices, rank, size):
    """This process's share of a global batch: every size-th index from ``rank`` on."""
    return list(indices)[rank::size]


class GradientBuckets:
    """Flat buffers that gather every gradient for a few large allreduce calls.

    Gradients are laid out in ``model.gradients()`` order; a bucket closes when
    it reaches ``bucket_bytes`` (one dtype per bucket).
    """

    def __init__(self, model, bucket_bytes=BUCKET_BYTES):
        self.model = model
        self.buckets = []  # (flat buffer, [(name, offset, size, shape)])
        layout, filled, dtype = [], 0, None
        for name, grad in model.gradients():
            if layout and (filled * grad.dtype.itemsize >= bucket_bytes or grad.dtype != dtype):
                self.buckets.append(self._allocate(layout, filled, dtype, grad))
                layout, filled = [], 0
            dtype = grad.dtype
            layout.append((name, filled, grad.size, grad.shape))
            filled += grad.size
        if layout:
            self.buckets.append(self._allocate(layout, filled, dtype, model.gradients()[0][1]))

    @staticmethod
    def _allocate(layout, size, dtype, like):
        xp = get_array_module(like)
        return xp.empty(size, dtype=dtype), layout

    def allreduce(self, communicator):
        """Sum every gradient over all processes (in place in ``model.gradients()``)."""
        if communicator.size == 1:
            return
        grads = dict(self.model.gradients())
        for flat, layout in self.buckets:
            for name, offset, size, _ in layout:
                flat[offset:offset + size] = grads[name].reshape(-1)
            communicator.allreduce(flat)
            for name, offset, size, shape in layout:
                grads[name][...] = flat[offset:offset + size].reshape(shape)

    def volume_bytes(self):
        """Bytes each process sends per step (before the allreduce algorithm's factor)."""
        return sum(int(flat.nbytes) for flat, _ in self.buckets)
