"""Data-parallel training: sharding, buckets, empty shards and GPU choice on the CPU, and
2 MPI processes against 1 (training, dropout, an empty shard, resume, a failing process)."""

import csv
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from scratchseg.cli import main
from scratchseg.data import SyntheticShapes, training_batch
from scratchseg.nn import UNet
from scratchseg.nn.optim import SGD
from scratchseg.training.checkpoint import load_model
from scratchseg.training.distributed import (
    ONE_PROCESS,
    GradientBuckets,
    MPICommunicator,
    gpu_for_local_rank,
    select_local_gpu,
    shard,
    synchronise_batch_norm,
)
from scratchseg.training.loop import training_step


class Doubling:
    """A stand-in for two processes holding identical gradients: allreduce doubles."""

    rank, size = 0, 2

    def __init__(self):
        self.calls = 0

    def allreduce(self, array):
        self.calls += 1
        array *= 2
        return array


def test_shards_cover_the_batch_once():
    batch = [7, 3, 9, 1, 4]
    shards = [shard(batch, r, 2) for r in range(2)]
    assert shards == [[7, 9, 4], [3, 1]]
    assert sorted(shards[0] + shards[1]) == sorted(batch)
    assert shard(batch, 0, 1) == batch
    assert shard([5], 1, 2) == []


def test_buckets_sum_every_gradient_in_a_few_calls():
    model = UNet(base_channels=4, depth=2, batch_norm=True)
    for k, (_, grad) in enumerate(model.gradients()):
        grad[...] = k + 1
    buckets = GradientBuckets(model, bucket_bytes=20_000)
    assert 1 < len(buckets.buckets) < len(model.gradients())
    assert buckets.volume_bytes() == sum(g.nbytes for _, g in model.gradients())
    comm = Doubling()
    buckets.allreduce(comm)
    assert comm.calls == len(buckets.buckets)
    for k, (name, grad) in enumerate(model.gradients()):
        assert np.all(grad == 2 * (k + 1)), name


def test_one_process_needs_no_communication():
    model = UNet(base_channels=2, depth=1)
    buckets = GradientBuckets(model)
    before = [g.copy() for _, g in model.gradients()]
    buckets.allreduce(ONE_PROCESS)
    assert all(np.array_equal(a, g) for a, (_, g) in zip(before, model.gradients()))


class Recording:
    """Process 0 of two: keeps a copy of what it sends to every collective."""

    rank, size = 0, 2

    def __init__(self):
        self.sent = []

    def allreduce(self, array):
        self.sent.append(array.copy())
        return array


class Replaying:
    """Process 1 of two: every collective adds what Recording's process sent to the same call."""

    rank, size = 1, 2

    def __init__(self, other):
        self.other, self.sent = other, []

    def allreduce(self, array):
        other = self.other.sent[len(self.sent)]
        assert array.shape == other.shape and array.dtype == other.dtype
        self.sent.append(array.copy())
        array += other
        return array


def _parallel_replica(comm):
    model = UNet(1, 4, base_channels=4, depth=2, padding="same", batch_norm=True,
                 dropout=0.3, seed=0)
    synchronise_batch_norm(model, comm)
    return model, SGD(model, lr=0.1, momentum=0.9), GradientBuckets(model)


def test_an_empty_shard_joins_every_collective_with_zeros():
    """A global batch of one sample leaves process 1 nothing: it still makes every call
    process 0 makes (loss totals, synchronised batch norm, gradient buckets), in the same
    order and shapes, sends zeros, and ends the step with process 0's weights."""
    data = SyntheticShapes(num_samples=1, size=32, seed=0)
    first, second = Recording(), None
    second = Replaying(first)
    replicas = [_parallel_replica(comm) for comm in (first, second)]
    for comm, (model, optimizer, buckets) in zip((first, second), replicas):
        model.dropout.batch_shard = (1, comm.rank, comm.size)
        mine = shard([0], comm.rank, comm.size)
        x, labels, _ = training_batch(data, mine, mine, epoch=0, seed=0,
                                      input_size=32, output_size=32)
        assert len(x) == 1 - comm.rank
        loss = training_step(model, optimizer, x, labels, communicator=comm, buckets=buckets)
        assert np.isfinite(loss)
    assert len(second.sent) == len(first.sent) > len(replicas[0][2].buckets) + 1
    assert all(not np.any(sent) for sent in second.sent)
    states = [model.state_dict() for model, _, _ in replicas]
    for name, array in states[0].items():
        assert np.array_equal(states[1][name], array), name


class FakeMPIComm:
    """COMM_WORLD of a job with 2 nodes of 3 processes: world rank 4 is rank 1 on its node."""

    def __init__(self, rank):
        self.rank, self.split_types = rank, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return 6

    def Split_type(self, split_type):
        self.split_types.append(split_type)
        node = types.SimpleNamespace(Get_rank=lambda: self.rank % 3, Get_size=lambda: 3,
                                     Free=lambda: None)
        return node


def test_each_process_takes_the_gpu_of_its_rank_on_the_node(monkeypatch):
    assert [gpu_for_local_rank(r, 3, 4) for r in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="3 processes on this node but 2 visible GPU"):
        gpu_for_local_rank(0, 3, 2)
    pytest.importorskip("mpi4py")
    from mpi4py import MPI

    comm = FakeMPIComm(rank=4)
    communicator = MPICommunicator(comm)
    assert communicator.local_rank_and_size() == (1, 3)
    assert comm.split_types == [MPI.COMM_TYPE_SHARED]
    used = []
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 4),
        Device=lambda index: types.SimpleNamespace(use=lambda: used.append(index))))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    assert select_local_gpu(communicator) == 1 and used == [1]
    assert select_local_gpu(ONE_PROCESS) == 0 and used == [1, 0]


def _mpirun():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    local = Path(sys.executable).with_name("mpirun")
    return str(local) if local.exists() else shutil.which("mpirun")


TINY = ["--num-samples", "10", "--image-size", "40", "--base-channels", "4", "--depth", "2",
        "--tile", "32", "--batch-size", "5", "--tiles-per-epoch", "8", "--warmup-steps", "0",
        "--quiet"]
needs_mpi = pytest.mark.skipif(_mpirun() is None,
                               reason="needs mpi4py and mpirun: pip install 'scratchseg[mpi]'")


def _two_processes(*argv, check=True, timeout=300):
    """``scratchseg`` (or ``python -c CODE`` when argv starts with "-c") on 2 MPI processes."""
    command = [sys.executable, *(argv if argv[0] == "-c" else ("-m", "scratchseg.cli", *argv))]
    env = {**os.environ, "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    return subprocess.run([_mpirun(), "--allow-run-as-root", "--oversubscribe", "-n", "2",
                           *command], check=check, env=env, timeout=timeout,
                          capture_output=not check, text=True)


def _assert_same_models(one_dir, two_dir):
    one, config, _ = load_model(one_dir / "model.safetensors")
    two, _, _ = load_model(two_dir / "model.safetensors")
    assert one.keys() == two.keys()
    largest = max(float(np.abs(one[k] - two[k]).max()) for k in one)
    assert largest < 1e-5, f"largest weight difference {largest}"
    initial = UNet(**config, seed=0).state_dict()
    assert max(float(np.abs(one[k] - initial[k]).max()) for k in initial) > 1e-3  # it trained


def _metrics(run):
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(f)]


def test_the_empty_shard_case_has_an_empty_shard():
    assert "--tiles-per-epoch" in TINY
    tiles = int(TINY[TINY.index("--tiles-per-epoch") + 1])
    assert tiles % 7 == 1  # --batch-size 7: a last global batch of one tile


@needs_mpi
@pytest.mark.parametrize("options", [
    [], ["--weight-map", "--padding", "valid", "--tile", "8", "--no-batch-norm"],
    ["--dropout", "0.3"], ["--batch-size", "7", "--dropout", "0.3"],
], ids=["bn-same", "weightmap-valid", "dropout", "empty-shard"])
def test_two_processes_train_the_same_model_as_one(tmp_path, options):
    argv = ["train", *TINY, "--epochs", "2", *options]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    _two_processes(*argv, "--distributed", "--out", str(tmp_path / "two"))
    _assert_same_models(tmp_path / "one", tmp_path / "two")
    assert len(_metrics(tmp_path / "two")) == 2


FLOAT64_STEPS = """
import sys
import numpy as np
from scratchseg.data import SyntheticShapes, training_batch
from scratchseg.training.distributed import (ONE_PROCESS, GradientBuckets, MPICommunicator, shard,
                                    synchronise_batch_norm)
from scratchseg.nn import UNet
from scratchseg.nn.optim import SGD
from scratchseg.training.loop import training_step
comm = MPICommunicator() if sys.argv[1] == "mpi" else ONE_PROCESS
model = UNet(1, 4, base_channels=4, depth=2, padding="same", batch_norm=True, seed=0,
             dtype="float64")
synchronise_batch_norm(model, comm)
optimizer, buckets = SGD(model, lr=0.05, momentum=0.9), GradientBuckets(model)
data = SyntheticShapes(num_samples=16, size=32, seed=0)
for step in range(8):
    batch = range(8 * (step % 2), 8 * (step % 2) + 8)
    mine = shard(list(batch), comm.rank, comm.size)
    x, labels, _ = training_batch(data, mine, mine, epoch=step, seed=0, input_size=32,
                                  output_size=32)
    training_step(model, optimizer, x.astype(np.float64), labels, communicator=comm,
                  buckets=buckets)
if comm.rank == 0:
    np.savez(sys.argv[2], **model.state_dict())
"""


@needs_mpi
def test_two_processes_equal_one_in_float64(tmp_path):
    """In float64 the only difference float32 runs show, summation order, vanishes: 8 steps
    with synchronised batch norm match 1 process to 1e-12 (float32 runs with batch norm
    drift further apart over many steps, as rounding differences grow through training)."""
    subprocess.run([sys.executable, "-c", FLOAT64_STEPS, "one", str(tmp_path / "one.npz")],
                   check=True, timeout=300)
    _two_processes("-c", FLOAT64_STEPS, "mpi", str(tmp_path / "two.npz"))
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(one.files) == sorted(two.files)
    for name in one.files:
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-12, err_msg=name)
    initial = UNet(1, 4, base_channels=4, depth=2, padding="same", batch_norm=True,
                   seed=0).state_dict()
    assert max(float(np.abs(one[k] - initial[k]).max()) for k in initial) > 1e-2  # it trained


@needs_mpi
def test_two_processes_resume_as_one_does(tmp_path):
    argv = ["train", *TINY, "--epochs", "1", "--dropout", "0.3"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main(["train", "--resume", str(tmp_path / "one"), "--epochs", "2", "--quiet"]) == 0
    _two_processes(*argv, "--distributed", "--out", str(tmp_path / "two"))
    _two_processes("train", "--resume", str(tmp_path / "two"), "--epochs", "2", "--quiet",
                   "--distributed")
    _assert_same_models(tmp_path / "one", tmp_path / "two")
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [row["epoch"] for row in two] == [1.0, 2.0]
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


FAILING_RANK = """
import sys
from mpi4py import MPI
import scratchseg.training.loop
if MPI.COMM_WORLD.Get_rank() == 1:
    def unreadable(*args, **kwargs):
        raise OSError("rank 1 cannot read its data")
    scratchseg.training.loop.training_batch = unreadable
from scratchseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


@needs_mpi
def test_a_failing_process_ends_the_whole_job(tmp_path):
    """Process 0 waits in the step's first allreduce for a process that failed: the
    failing process reports its error and aborts the job instead of leaving it hanging."""
    result = _two_processes("-c", FAILING_RANK, "train", *TINY, "--epochs", "1",
                            "--distributed", "--out", str(tmp_path / "run"), check=False,
                            timeout=60)
    assert result.returncode != 0
    assert "scratchseg train: error: rank 1 cannot read its data" in result.stderr
    assert "process 1 of 2 failed; aborting every process" in result.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()
