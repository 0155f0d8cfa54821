"""Data-parallel training: sharding and gradient buckets on the CPU, and 2 MPI processes vs 1."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchseg.checkpoint import load_model
from scratchseg.distributed import ONE_PROCESS, GradientBuckets, shard
from scratchseg.models import UNet


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


def _mpirun():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    local = Path(sys.executable).with_name("mpirun")
    return str(local) if local.exists() else shutil.which("mpirun")


TINY = ["--num-samples", "10", "--image-size", "40", "--base-channels", "4", "--depth", "2",
        "--tile", "32", "--batch-size", "5", "--warmup-steps", "0", "--epochs", "2", "--quiet"]


@pytest.mark.skipif(_mpirun() is None,
                    reason="needs mpi4py and mpirun: pip install 'scratchseg[mpi]'")
@pytest.mark.parametrize("options", [[], ["--weight-map", "--padding", "valid", "--tile", "8",
                                          "--no-batch-norm"]], ids=["bn-same", "weightmap-valid"])
def test_two_processes_train_the_same_model_as_one(tmp_path, options):
    command = [sys.executable, "-m", "scratchseg.cli", "train", *TINY, *options]
    env = {**os.environ, "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    subprocess.run([*command, "--out", str(tmp_path / "one")], check=True, env=env,
                   timeout=300)
    subprocess.run([_mpirun(), "--allow-run-as-root", "--oversubscribe", "-n", "2", *command,
                    "--distributed", "--out", str(tmp_path / "two")], check=True, env=env,
                   timeout=300)
    one, config, _ = load_model(tmp_path / "one" / "model.safetensors")
    two, _, _ = load_model(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    largest = max(float(np.abs(one[k] - two[k]).max()) for k in one)
    assert largest < 1e-5, f"largest weight difference {largest}"
    initial = UNet(**config, seed=0).state_dict()
    assert max(float(np.abs(one[k] - initial[k]).max()) for k in one) > 1e-3  # it trained
    assert (tmp_path / "two" / "metrics.csv").read_text().count("\n") == 3
