"""Model files and training state on disk, written atomically.

A model file is a safetensors file (``safetensors.torch.load_file`` reads it into
PyTorch tensors) whose string metadata holds ``format = "scratchseg-unet"``, the
architecture ``config`` and the ``class_values`` as JSON. Training adds PyTorch's
``<bn>.num_batches_tracked`` beside every batch norm's running statistics
(``add_batch_norm_counters``) so PyTorch loads the file with ``strict=True``;
scratchseg's layers keep no such counter and drop it on loading. A training-state file
is a safetensors file too: every array of the state (momentum buffers, a
Mersenne-Twister key) is a tensor and the rest of the state (scalars, RNG
state, metrics history) is JSON in the metadata, so nothing is pickled.

Every writer goes through ``scratchseg.fileio.atomic_path``, so a failed run never
leaves a half-written file.
"""

import json
import os

import numpy
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from scratchseg.backend import to_numpy
from scratchseg.fileio import atomic_path

MODEL_FORMAT = "scratchseg-unet"
TRAINING_STATE_FORMAT = "scratchseg-training-state"
_TENSOR_REF = "__tensor__"
_RUNNING_MEAN, _BATCH_NORM_COUNTER = ".running_mean", ".num_batches_tracked"


def _json_default(value):
    """Let JSON take NumPy scalars (numpy.float32, numpy.int64, ...) as Python numbers."""
    if isinstance(value, numpy.generic):
        return value.item()
    raise TypeError(f"{type(value).__module__}.{type(value).__name__} is not JSON-serialisable")


def _dumps(value, what):
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot store {what} as JSON: {err}") from err


def _host_arrays(arrays):
    """Named arrays as C-contiguous host arrays (what safetensors stores), dtypes kept."""
    host = {}
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"array names must be strings, got {name!r}")
        host[name] = numpy.asarray(to_numpy(array), order="C")
        if host[name].dtype.kind not in "biuf":
            raise TypeError(
                f"cannot store array {name!r} of dtype {host[name].dtype}: "
                "bool, integer and floating-point arrays only"
            )
    return host


def _read(path, expected_format):
    """Arrays and metadata of a scratchseg safetensors file, or a ValueError naming ``path``."""
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, SafetensorError) as err:
        raise ValueError(f"cannot read {path}: not a readable safetensors file ({err})") from err
    _check_format(path, metadata, expected_format)
    return arrays, metadata


def _check_format(path, metadata, expected_format):
    found = metadata.get("format")
    if found != expected_format:
        raise ValueError(
            f"cannot read {path}: expected a {expected_format!r} file, "
            f"found metadata format {found!r}"
        )


def _loads(path, metadata, key):
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError) as err:
        raise ValueError(f"cannot read {path}: metadata {key!r} is missing or not JSON") from err


def save_model(path, state_dict, *, config, class_values, extra_metadata=None,
               model_format=MODEL_FORMAT):
    """Write a model's ``state_dict`` (name -> array, dtypes kept) and its metadata to a
    safetensors file at ``path``, atomically. ``extra_metadata`` maps str -> str;
    ``model_format`` tells a U-Net's file from a detector's."""
    metadata = {
        "format": model_format,
        "config": _dumps(config, "config"),
        "class_values": _dumps(list(class_values), "class_values"),
    }
    for key, value in (extra_metadata or {}).items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(f"extra_metadata must map str to str, got {key!r}: {value!r}")
        if key in metadata:
            raise ValueError(f"extra_metadata may not override the reserved key {key!r}")
        metadata[key] = value
    arrays = _host_arrays(state_dict)
    with atomic_path(path) as temp:
        save_file(arrays, temp, metadata=metadata)


def load_model(path, model_format=MODEL_FORMAT):
    """Read a file written by ``save_model``: ``(state_dict, config, class_values)`` with
    the arrays as NumPy arrays in the file's order. A ValueError says what is wrong."""
    arrays, metadata = _read(path, model_format)
    return arrays, _loads(path, metadata, "config"), _loads(path, metadata, "class_values")


def model_metadata(path, model_format=MODEL_FORMAT):
    """The string metadata of a model file: format, config, class_values and any extra keys."""
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise ValueError(f"cannot read {path}: not a readable safetensors file ({err})") from err
    _check_format(path, metadata, model_format)
    return metadata


def add_batch_norm_counters(state_dict, count):
    """``state_dict`` plus PyTorch's ``<bn>.num_batches_tracked`` beside every
    ``<bn>.running_mean``: an int64 scalar holding ``count``.

    PyTorch's BatchNorm2d adds 1 per training forward and reads the counter only
    when its momentum is None (a cumulative average); the trainer stores its
    number of SGD steps, one forward each, what PyTorch's counter would hold.
    """
    counters = {name[:-len(_RUNNING_MEAN)] + _BATCH_NORM_COUNTER: numpy.array(count, numpy.int64)
                for name in state_dict if name.endswith(_RUNNING_MEAN)}
    return {**state_dict, **counters}


def drop_batch_norm_counters(state_dict):
    """``state_dict`` without the ``num_batches_tracked`` entries (scratchseg keeps none)."""
    return {name: array for name, array in state_dict.items()
            if not name.endswith(_BATCH_NORM_COUNTER)}


def _split_arrays(tree, prefix, arrays):
    """Copy of a nested dict/list ``tree`` with every NumPy array moved into ``arrays``
    under its path (``prefix/key/...``) and replaced by ``{"__tensor__": path}``."""
    if isinstance(tree, numpy.ndarray):
        if prefix in arrays:
            raise ValueError(f"training state: two arrays would share the name {prefix!r}")
        arrays[prefix] = tree
        return {_TENSOR_REF: prefix}
    if isinstance(tree, dict):
        for key in tree:
            if not isinstance(key, str):
                raise TypeError(f"training state keys must be strings, got {key!r} in {prefix}")
        return {key: _split_arrays(value, f"{prefix}/{key}", arrays) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split_arrays(value, f"{prefix}/{i}", arrays) for i, value in enumerate(tree)]
    return tree


def _join_arrays(tree, arrays):
    """Inverse of ``_split_arrays``."""
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR_REF}:
            return arrays[tree[_TENSOR_REF]]
        return {key: _join_arrays(value, arrays) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_join_arrays(value, arrays) for value in tree]
    return tree


def save_training_state(path, *, optimizer_state, epoch, step, rng_state, history, extra=None):
    """Write what an exact resume needs to ``path``, atomically.

    Nested dicts (string keys) and lists of JSON values and NumPy arrays round-trip
    exactly; tuples come back as lists, NumPy scalars as Python numbers.
    """
    state = {
        "optimizer_state": optimizer_state,
        "epoch": epoch,
        "step": step,
        "rng_state": rng_state,
        "history": history,
        "extra": extra,
    }
    arrays = {}
    metadata = {
        "format": TRAINING_STATE_FORMAT,
        "state": _dumps(_split_arrays(state, "state", arrays), "the training state"),
    }
    arrays = _host_arrays(arrays)
    with atomic_path(path) as temp:
        save_file(arrays, temp, metadata=metadata)


def load_training_state(path):
    """Read a file written by ``save_training_state``: a dict with keys optimizer_state,
    epoch, step, rng_state, history and extra."""
    arrays, metadata = _read(path, TRAINING_STATE_FORMAT)
    try:
        return _join_arrays(_loads(path, metadata, "state"), arrays)
    except KeyError as err:
        raise ValueError(f"cannot read {path}: tensor {err} is missing") from err
