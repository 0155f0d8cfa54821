"""ONNX export (scratchseg.export) and the PyTorch loader of model files
(scratchseg.tools.torch_unet.load_torch_unet), each against scratchseg's own forward in
eval mode under no_grad."""

import itertools
import json

import numpy as np
import pytest
import safetensors.numpy

import scratchseg
from scratchseg.export import export_onnx
from scratchseg.nn import UNet
from scratchseg.training.checkpoint import add_batch_norm_counters, save_model

TOLERANCE = 1e-4
CLASS_VALUES = [0, 128, 255]

# padding, batch norm, input channels, depth: every combination
CONFIGS = [dict(padding=padding, batch_norm=batch_norm, in_channels=channels, depth=depth)
           for padding, batch_norm, channels, depth
           in itertools.product(("same", "valid"), (True, False), (1, 3), (2, 3))]


@pytest.fixture
def onnx():
    return pytest.importorskip("onnx")


@pytest.fixture
def ort():
    """onnxruntime (the tests that need it need onnx too: they export first)."""
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def _config_id(config):
    return "{padding}-{bn}-c{in_channels}-d{depth}".format(
        bn="bn" if config["batch_norm"] else "nobn", **config)


def random_unet(seed=0, num_classes=3, base_channels=4, dropout=0.0, **config):
    """A UNet in eval mode with random biases and batch-norm parameters and statistics (the
    initial ones are zeros and ones, which would hide a swapped or missing tensor)."""
    model = UNet(num_classes=num_classes, base_channels=base_channels, dropout=dropout,
                 seed=seed, **config)
    rng = np.random.default_rng(seed + 100)
    for _, layer in model.named_layers():
        for name, array in list(layer.params.items()) + list(layer.buffers.items()):
            if name == "bias":
                array[...] = rng.normal(0.0, 0.1, array.shape)
            elif name == "weight" and array.ndim == 1:  # batch norm's gamma
                array[...] = rng.uniform(0.5, 1.5, array.shape)
            elif name == "running_mean":
                array[...] = rng.normal(0.0, 0.5, array.shape)
            elif name == "running_var":
                array[...] = rng.uniform(0.5, 2.0, array.shape)
    return model.eval()


def save_trained_format(model, path, class_values=CLASS_VALUES, steps=5, **extra_metadata):
    """Write ``model`` as the trainer does (scratchseg/training/loop.py: Trainer.save)."""
    save_model(path, add_batch_norm_counters(model.state_dict(), steps), config=model.config,
               class_values=class_values[:model.config["num_classes"]],
               extra_metadata=extra_metadata or None)
    return path


def forward(model, x):
    with scratchseg.no_grad():
        return model.forward(x)


def input_shapes(model, batch=2):
    """Two inputs of different batch sizes and non-square edges the model takes."""
    step = 2 ** model.config["depth"]
    h = model.valid_input_size(8 if model.config["padding"] == "same" else 1)
    return [(batch, h, h + step), (batch + 1, h + 3 * step, h + step)]


def run_onnx(ort, path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": x})[0]


def export(tmp_path, model, **kwargs):
    source = save_trained_format(model, tmp_path / "model.safetensors")
    out = tmp_path / "model.onnx"
    export_onnx(source, out, **kwargs)
    return out


def assert_onnx_matches(ort, path, model, rng):
    worst = 0.0
    for n, h, w in input_shapes(model):
        x = rng.standard_normal((n, model.config["in_channels"], h, w)).astype(np.float32)
        expected = forward(model, x)
        actual = run_onnx(ort, path, x)
        assert actual.shape == expected.shape and actual.dtype == np.float32
        worst = max(worst, float(np.abs(actual - expected).max()))
    assert worst <= TOLERANCE, worst
    return worst


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_onnx_matches_scratchseg_forward(tmp_path, ort, config):
    model = random_unet(**config)
    path = export(tmp_path, model)
    worst = assert_onnx_matches(ort, path, model, np.random.default_rng(1))
    print(f"{_config_id(config)}: max |onnx - scratchseg| = {worst:.2e}")


def test_dropout_is_the_identity_and_other_opsets(tmp_path, onnx, ort):
    model = random_unet(padding="valid", batch_norm=True, in_channels=1, depth=2, dropout=0.5)
    for opset in (13, 17, 20):
        path = export(tmp_path, model, opset=opset)
        assert onnx.load(str(path)).opset_import[0].version == opset
        assert_onnx_matches(ort, path, model, np.random.default_rng(opset))
    assert "Dropout" not in {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_graph_interface_is_dynamic(tmp_path, onnx, padding):
    model = random_unet(padding=padding, batch_norm=True, in_channels=3, depth=2)
    graph = onnx.load(str(export(tmp_path, model))).graph
    (image,), (logits,) = graph.input, graph.output
    assert image.name == "image" and logits.name == "logits"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in (image, logits)]
    out_edges = ["H", "W"] if padding == "same" else ["H_out", "W_out"]
    assert dims == [["N", 3, "H", "W"], ["N", 3, *out_edges]]
    # the weights travel under scratchseg's (and PyTorch's) names
    names = {tensor.name for tensor in graph.initializer}
    assert set(model.state_dict()) <= names
    assert {node.op_type for node in graph.node} >= {"Conv", "BatchNormalization", "Relu",
                                                     "MaxPool", "ConvTranspose", "Concat"}
    assert ("Slice" in {node.op_type for node in graph.node}) == (padding == "valid")


def test_metadata_travels(tmp_path, onnx, ort):
    model = random_unet(padding="same", batch_norm=False, in_channels=1, depth=2)
    source = save_trained_format(model, tmp_path / "model.safetensors",
                                 normalize=json.dumps({"mean": [0.5], "std": [0.25]}))
    out = tmp_path / "model.onnx"
    export_onnx(source, out)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["class_values"]) == CLASS_VALUES
    assert json.loads(props["config"]) == model.config
    assert props["format"] == "scratchseg-unet"
    assert json.loads(props["normalize"]) == {"mean": [0.5], "std": [0.25]}
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["class_values"]) == \
        CLASS_VALUES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.safetensors"]


def _bad_model_files(tmp_path):
    """(path, what the message should mention) for files export_onnx must refuse."""
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    plain = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(2, np.float32)}, str(plain))
    model = random_unet(padding="same", batch_norm=False, in_channels=1, depth=2)
    mismatched = tmp_path / "mismatched.safetensors"  # the tensors of another config
    save_model(mismatched, model.state_dict(), config={**model.config, "depth": 3},
               class_values=CLASS_VALUES)
    unknown_key = tmp_path / "unknown_key.safetensors"
    save_model(unknown_key, model.state_dict(), config={**model.config, "width": 2},
               class_values=CLASS_VALUES)
    return [(tmp_path / "missing.safetensors", "cannot read"), (garbage, "safetensors"),
            (plain, "format"), (mismatched, "load_state_dict"), (unknown_key, "config")]


def test_export_errors_name_the_path(tmp_path, onnx):
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"previous contents")
    for path, what in _bad_model_files(tmp_path):
        with pytest.raises(ValueError, match=what) as info:
            export_onnx(path, out)
        assert str(path) in str(info.value)
    good = save_trained_format(random_unet(padding="same", batch_norm=False, in_channels=1,
                                           depth=2), tmp_path / "good.safetensors")
    for opset in (12, 10_000, "17", True):
        with pytest.raises(ValueError, match="opset"):
            export_onnx(good, out, opset=opset)
    # nothing written, nothing left behind
    assert out.read_bytes() == b"previous contents"
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]


# -- the PyTorch module from a model file ---------------------------------------------------


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[-1]], ids=_config_id)
def test_load_torch_unet_matches_scratchseg(tmp_path, config):
    """A file in the trainer's format (batch-norm counters included) loads with strict=True
    and gives scratchseg's logits; tests/test_train_cli.py checks the raw tensors."""
    torch = pytest.importorskip("torch")
    from scratchseg.tools.torch_unet import load_torch_unet

    model = random_unet(dropout=0.3, **config)
    path = save_trained_format(model, tmp_path / "model.safetensors", steps=7)
    theirs = load_torch_unet(path)
    assert not theirs.training
    counters = [v for k, v in theirs.state_dict().items() if k.endswith("num_batches_tracked")]
    blocks = 2 * config["depth"] + 1  # encoder, bottleneck, decoder: two batch norms each
    assert len(counters) == (2 * blocks if config["batch_norm"] else 0)
    assert all(int(v) == 7 for v in counters)
    rng = np.random.default_rng(3)
    for n, h, w in input_shapes(model):
        x = rng.standard_normal((n, config["in_channels"], h, w)).astype(np.float32)
        with torch.no_grad():
            actual = theirs(torch.from_numpy(x)).numpy()
        expected = forward(model, x)
        assert actual.dtype == np.float32
        assert float(np.abs(actual - expected).max()) <= TOLERANCE


def test_load_torch_unet_without_counters_and_errors(tmp_path):
    pytest.importorskip("torch")
    from scratchseg.tools.torch_unet import load_torch_unet

    model = random_unet(padding="valid", batch_norm=True, in_channels=1, depth=2)
    path = tmp_path / "no_counters.safetensors"
    save_model(path, model.state_dict(), config=model.config, class_values=[0, 1, 2])
    theirs = load_torch_unet(path)
    assert all(int(v) == 0 for k, v in theirs.state_dict().items()
               if k.endswith("num_batches_tracked"))
    for path, what in _bad_model_files(tmp_path):
        with pytest.raises(ValueError, match=what) as info:
            load_torch_unet(path)
        assert str(path) in str(info.value)
