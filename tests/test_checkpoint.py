"""Model files, training state, atomic writes and the errors on unreadable files."""

import json

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from scratchseg.fileio import atomic_path, atomic_write_bytes, atomic_write_text
from scratchseg.training import checkpoint
from scratchseg.training.checkpoint import (
    add_batch_norm_counters,
    drop_batch_norm_counters,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)

CONFIG = {
    "in_channels": 1,
    "num_classes": 3,
    "base_channels": 4,
    "depth": 2,
    "padding": "same",
    "batch_norm": True,
    "dropout": 0.0,
}


def state_dict():
    rng = np.random.default_rng(0)
    return {
        "enc.0.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "enc.0.bias": rng.standard_normal(4).astype(np.float32),
        "bn.running_var": rng.random(4),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
    }


def assert_arrays_equal(actual, expected):
    assert set(actual) == set(expected)
    for name, array in expected.items():
        assert actual[name].dtype == array.dtype, name
        assert actual[name].shape == array.shape, name
        np.testing.assert_array_equal(actual[name], array)


def test_model_round_trip(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(
        path,
        state_dict(),
        config=CONFIG,
        class_values=[0, np.int64(128), 255],
        extra_metadata={"epoch": "3"},
    )
    arrays, config, class_values = load_model(path)
    assert_arrays_equal(arrays, state_dict())
    assert config == CONFIG
    assert class_values == [0, 128, 255]
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert f.metadata()["epoch"] == "3"
        assert f.metadata()["format"] == "scratchseg-unet"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_model_file_loads_in_pytorch(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(path, state_dict(), config=CONFIG, class_values=[0, 1, 2])
    tensors = safetensors.torch.load_file(str(path))
    for name, array in state_dict().items():
        assert torch.equal(tensors[name], torch.from_numpy(array)), name


def test_batch_norm_counters_added_beside_running_means_and_dropped(tmp_path):
    state = {"down.bn1.running_mean": np.zeros(4, np.float32),
             "down.bn1.running_var": np.ones(4, np.float32),
             "head.weight": np.ones((2, 4, 1, 1), np.float32),
             "up.bn2.running_mean": np.zeros(2, np.float32)}
    counted = add_batch_norm_counters(state, 12)
    assert set(counted) - set(state) == {"down.bn1.num_batches_tracked",
                                         "up.bn2.num_batches_tracked"}
    for name in ("down.bn1.num_batches_tracked", "up.bn2.num_batches_tracked"):
        assert counted[name].dtype == np.int64 and counted[name].shape == () \
            and int(counted[name]) == 12
    assert "head.weight" in counted and state.keys() == {
        "down.bn1.running_mean", "down.bn1.running_var", "head.weight",
        "up.bn2.running_mean"}  # the input is not changed
    path = tmp_path / "model.safetensors"
    save_model(path, counted, config=CONFIG, class_values=[0, 1])
    tensors = safetensors.torch.load_file(str(path))
    assert tensors["up.bn2.num_batches_tracked"].dtype == torch.int64
    arrays, _, _ = load_model(path)
    assert drop_batch_norm_counters(arrays).keys() == state.keys()
    assert add_batch_norm_counters({"head.weight": state["head.weight"]}, 3).keys() == \
        {"head.weight"}


def test_non_contiguous_arrays_are_saved_by_value(tmp_path):
    path = tmp_path / "model.safetensors"
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    save_model(path, {"w": transposed}, config=CONFIG, class_values=[0, 1])
    np.testing.assert_array_equal(load_model(path)[0]["w"], transposed)


def test_save_model_rejects_bad_metadata(tmp_path):
    path = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match="format"):
        save_model(
            path, state_dict(), config=CONFIG, class_values=[0], extra_metadata={"format": "other"}
        )
    with pytest.raises(TypeError, match="str"):
        save_model(path, state_dict(), config=CONFIG, class_values=[0], extra_metadata={"epoch": 3})
    with pytest.raises(TypeError, match="config"):
        save_model(path, state_dict(), config={"bad": object()}, class_values=[0])
    assert list(tmp_path.iterdir()) == []


def test_training_state_round_trip(tmp_path):
    path = tmp_path / "state.safetensors"
    rng = np.random.default_rng(5)
    rng.random(3)
    legacy = np.random.Generator(np.random.MT19937(2))
    buffers = {name: array for name, array in state_dict().items() if array.ndim}
    optimizer_state = {
        "lr": 0.01,
        "momentum": 0.99,
        "nesterov": False,
        "weight_decay": 0.0,
        "momentum_buffers": buffers,
    }
    history = [
        {
            "epoch": 0,
            "train_loss": 0.7,
            "val_loss": None,
            "val_miou": float("nan"),
            "lr": np.float32(0.01),
        },
        {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_miou": 0.25, "lr": 0.01},
    ]
    rng_state = {"data": rng.bit_generator.state, "augment": legacy.bit_generator.state}
    save_training_state(
        path,
        optimizer_state=optimizer_state,
        epoch=2,
        step=np.int64(40),
        rng_state=rng_state,
        history=history,
        extra={"best_miou": 0.25},
    )
    state = load_training_state(path)

    assert set(state) == {"optimizer_state", "epoch", "step", "rng_state", "history", "extra"}
    loaded_optimizer = dict(state["optimizer_state"])
    assert_arrays_equal(loaded_optimizer.pop("momentum_buffers"), buffers)
    assert loaded_optimizer == {
        "lr": 0.01,
        "momentum": 0.99,
        "nesterov": False,
        "weight_decay": 0.0,
    }
    assert (state["epoch"], state["step"], state["extra"]) == (2, 40, {"best_miou": 0.25})
    assert state["history"][0]["val_loss"] is None
    assert np.isnan(state["history"][0]["val_miou"])
    assert state["history"][0]["lr"] == np.float32(0.01)
    assert state["history"][1] == history[1]

    resumed = np.random.default_rng()
    resumed.bit_generator.state = state["rng_state"]["data"]
    np.testing.assert_array_equal(resumed.random(5), rng.random(5))
    resumed_legacy = np.random.Generator(np.random.MT19937())
    resumed_legacy.bit_generator.state = state["rng_state"]["augment"]
    np.testing.assert_array_equal(resumed_legacy.random(5), legacy.random(5))


def test_training_state_without_arrays(tmp_path):
    path = tmp_path / "state.safetensors"
    save_training_state(
        path,
        optimizer_state={"lr": 0.1, "momentum_buffers": {}},
        epoch=0,
        step=0,
        rng_state=None,
        history=[],
    )
    state = load_training_state(path)
    assert state["optimizer_state"] == {"lr": 0.1, "momentum_buffers": {}}
    assert state["history"] == [] and state["extra"] is None


def test_training_state_rejects_non_string_keys(tmp_path):
    with pytest.raises(TypeError, match="keys"):
        save_training_state(
            tmp_path / "s", optimizer_state={1: 2}, epoch=0, step=0, rng_state=None, history=[]
        )


def existing_file(tmp_path, name="model.safetensors"):
    path = tmp_path / name
    path.write_bytes(b"previous contents")
    return path


def assert_untouched(tmp_path, path):
    assert path.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_failing_serializer_leaves_existing_file(tmp_path, monkeypatch):
    def write_half_then_fail(arrays, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", write_half_then_fail)
    path = existing_file(tmp_path)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(path, state_dict(), config=CONFIG, class_values=[0, 1])
    assert_untouched(tmp_path, path)
    with pytest.raises(RuntimeError, match="disk full"):
        save_training_state(path, optimizer_state={}, epoch=0, step=0, rng_state=None, history=[])
    assert_untouched(tmp_path, path)


def test_unstorable_array_leaves_existing_file(tmp_path):
    path = existing_file(tmp_path)
    with pytest.raises(TypeError, match="'w' of dtype object"):
        save_model(path, {"w": np.array([object()])}, config=CONFIG, class_values=[0])
    assert_untouched(tmp_path, path)


def test_atomic_path_keeps_extension_and_cleans_up(tmp_path):
    path = existing_file(tmp_path, "plot.png")
    with pytest.raises(KeyError):
        with atomic_path(path) as temp:
            assert temp.parent == tmp_path and temp.suffix == ".png" and temp != path
            temp.write_bytes(b"partial")
            raise KeyError("interrupted")
    assert_untouched(tmp_path, path)
    with atomic_path(path) as temp:
        temp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_atomic_write_helpers(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "metrics.csv", "epoch,loss\n0,0.5\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "metrics.csv").read_text() == "epoch,loss\n0,0.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "metrics.csv"]


def unreadable_files(tmp_path):
    """(path, what the message should mention) for files neither loader may accept."""
    valid = tmp_path / "valid.safetensors"
    save_model(valid, state_dict(), config=CONFIG, class_values=[0, 1])
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(valid.read_bytes()[:-10])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    plain = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(2)}, str(plain))
    return [
        (tmp_path / "missing.safetensors", "cannot read"),
        (truncated, "safetensors"),
        (garbage, "safetensors"),
        (empty, "safetensors"),
        (tmp_path, "safetensors"),
        (plain, "format"),
    ]


def test_load_model_errors_name_the_path(tmp_path):
    for path, what in unreadable_files(tmp_path):
        with pytest.raises(ValueError, match=what) as info:
            load_model(path)
        assert str(path) in str(info.value)


def test_load_training_state_errors_name_the_path(tmp_path):
    for path, what in unreadable_files(tmp_path):
        with pytest.raises(ValueError, match=what) as info:
            load_training_state(path)
        assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="scratchseg-training-state"):
        load_training_state(tmp_path / "valid.safetensors")


def test_load_model_rejects_missing_config(tmp_path):
    path = tmp_path / "model.safetensors"
    metadata = {"format": "scratchseg-unet", "class_values": json.dumps([0, 1])}
    safetensors.numpy.save_file({"w": np.zeros(2)}, str(path), metadata=metadata)
    with pytest.raises(ValueError, match="config") as info:
        load_model(path)
    assert str(path) in str(info.value)
