"""benchmarks/bench_distributed.py counts every allreduce of a training step, by kind.

A fake two-process communicator (every allreduce doubles its buffer in place:
two processes holding the same shard) drives the trainer's real step on the
CPU; the counts are checked against the model's own batch norms and buckets.
Nothing here asserts on speed.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchseg.nn import UNet
from scratchseg.nn.layers import BatchNorm2d
from scratchseg.training.distributed import ONE_PROCESS, GradientBuckets

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_distributed.py"
_spec = importlib.util.spec_from_file_location("bench_distributed", SCRIPT)
bench_distributed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_distributed)

TINY = dict(batch_size=4, tile=16, base_channels=4, depth=2, steps=2, warmup=1)


class TwinProcesses:
    """Rank 0 of 2 whose partner holds the same data: an allreduce doubles the buffer."""

    rank, size = 0, 2

    def __init__(self):
        self.calls, self.barriers = [], 0

    def allreduce(self, array):
        self.calls.append((array.dtype, array.shape))
        array *= 2
        return array

    def barrier(self):
        self.barriers += 1


def _expected(batch_norm=True):
    """(calls, bytes) per step of each kind, from the model the benchmark builds."""
    model = UNet(1, 4, TINY["base_channels"], TINY["depth"], "same", batch_norm=batch_norm,
                 seed=0)
    norms = [layer for _, layer in model.named_layers() if isinstance(layer, BatchNorm2d)]
    # forward: [sums, count] then the squared deviations; backward: [sum dy, sum dy x_hat]
    bn_values = sum((c + 1) + c + 2 * c for c in (n.buffers["running_mean"].size for n in norms))
    buckets = GradientBuckets(model)
    return {"gradients": (len(buckets.buckets), buckets.volume_bytes()),
            "batch_norm": (3 * len(norms), 4 * bn_values),  # float32 statistics
            "loss": (1, 16)}  # the float64 (loss sum, weight sum) pair


@pytest.mark.parametrize("batch_norm", [True, False])
def test_every_allreduce_of_a_step_is_counted_by_kind(batch_norm):
    twin = TwinProcesses()
    record = bench_distributed.measure(twin, batch_norm=batch_norm, **TINY)
    expected = _expected(batch_norm)
    if batch_norm:
        assert expected["batch_norm"][0] == 30  # 5 blocks of 2 batch norms, 3 calls each
    else:
        assert expected["batch_norm"] == (0, 0)
    for kind, (calls, nbytes) in expected.items():
        counted = record["allreduce"][kind]
        assert (counted["calls"], counted["bytes"]) == (calls, nbytes), kind
        assert counted["ms"] >= 0
    total = record["allreduce"]["total"]
    assert total["calls"] == sum(c for c, _ in expected.values())
    assert total["bytes"] == sum(b for _, b in expected.values())
    steps = TINY["steps"] + TINY["warmup"]
    assert len(twin.calls) == steps * total["calls"]  # nothing reached the inner one unseen
    assert twin.barriers == steps
    assert record["processes"] == 2 and record["local_batch"] == 2
    assert record["buckets"] == 1 and record["gradient_bytes"] == expected["gradients"][1]
    assert len(record["step_ms_all"]) == TINY["steps"] and record["step_ms"] > 0


def test_one_process_sends_only_the_identity_loss_reduction():
    record = bench_distributed.measure(ONE_PROCESS, **TINY)
    counts = {kind: (c["calls"], c["bytes"]) for kind, c in record["allreduce"].items()}
    assert counts == {"gradients": (0, 0), "batch_norm": (0, 0), "loss": (1, 16),
                      "total": (1, 16)}
    assert record["buckets"] == 0 and record["local_batch"] == TINY["batch_size"]


def test_counting_communicator_records_channels_and_resets():
    counter = bench_distributed.CountingCommunicator(TwinProcesses())
    assert (counter.rank, counter.size) == (0, 2)
    a = np.ones(3, np.float32)
    assert counter.allreduce(a) is a and a.tolist() == [2, 2, 2]
    channel = counter.channel("batch_norm")
    assert (channel.rank, channel.size) == (0, 2)
    channel.allreduce(np.ones(5, np.float64))
    channel.allreduce(np.ones(1, np.float64))
    counter.channel("extra").allreduce(np.ones(2, np.int64))
    got = {k: (c["calls"], c["bytes"]) for k, c in counter.counts.items()}
    assert got == {"gradients": (0, 0), "batch_norm": (2, 48), "loss": (1, 12),
                   "extra": (1, 16)}
    counter.reset()
    assert all(c["calls"] == 0 for c in counter.counts.values())


def test_markdown_and_json_report(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["--batch-size", "2", "--tile", "16", "--base-channels", "4", "--depth", "1",
            "--steps", "1", "--warmup", "0", "--json", str(path)]
    assert bench_distributed.main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads(path.read_text())
    assert set(record["allreduce"]) == {"gradients", "batch_norm", "loss", "total"}
    for label in ("gradient buckets", "batch-norm statistics", "loss normalisation", "total"):
        assert f"| {label}" in out
    assert f"processes {record['processes']}" in out
    table = bench_distributed.markdown(bench_distributed.measure(TwinProcesses(), **TINY))
    assert "| gradient buckets (1) | 1 |" in table
    assert "| batch-norm statistics | 30 | 1.29 KiB |" in table


def _mpirun():
    if importlib.util.find_spec("mpi4py") is None:
        return None
    local = Path(sys.executable).with_name("mpirun")
    return str(local) if local.exists() else shutil.which("mpirun")


@pytest.mark.skipif(_mpirun() is None, reason="needs mpi4py and mpirun")
def test_two_mpi_processes_count_what_the_fake_predicts(tmp_path):
    path = tmp_path / "bench.json"
    env = {**os.environ, "OMPI_MCA_rmaps_base_oversubscribe": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([_mpirun(), "--allow-run-as-root", "--oversubscribe", "-n", "2",
                    sys.executable, str(SCRIPT), "--batch-size", "4", "--tile", "16",
                    "--base-channels", "4", "--depth", "2", "--steps", "2", "--warmup", "1",
                    "--json", str(path)], check=True, env=env, timeout=120,
                   capture_output=True, cwd=ROOT)
    record = json.loads(path.read_text())
    assert record["processes"] == 2
    for kind, (calls, nbytes) in _expected().items():
        assert (record["allreduce"][kind]["calls"], record["allreduce"][kind]["bytes"]) == \
            (calls, nbytes), kind
