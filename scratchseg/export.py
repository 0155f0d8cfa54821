"""ONNX export of a trained U-Net, built node by node from scratchseg's own layers.

``export_onnx(model_path, out_path)`` reads a model file (``model.safetensors``),
walks the U-Net in forward order and writes one ONNX node per layer with
``onnx.helper``: Conv, BatchNormalization (eval: the running statistics and the
layer's eps), Relu, MaxPool (floor mode), ConvTranspose, a Slice for the
crop of each skip and a Concat ``[skip, up]`` on the channels. Dropout is the
identity at inference and leaves no node. The weights are stored under their
scratchseg (and PyTorch) names, ``encoder.0.conv1.weight``, ...

The graph takes ``image`` (N, C, H, W) float32 and returns ``logits``
(N, classes, H', W'); N, H and W are dynamic for both paddings. With
``padding="same"`` H' = H and W' = W, for H and W multiples of 2**depth. With
``padding="valid"`` the crops still have static offsets: below a skip's level
the network maps an edge n (at that level's scale) to n - c, c independent of
n, so the up-convolution returns the skip's edge less 2c and the crop is
``[c, -c)`` whatever the input size. Any edge the valid network takes
(``UNet.valid_input_size``) works; other edges give wrong shapes or a runtime
error, as the graph does not check them.

Every string metadata entry of the model file (``format``, ``config``,
``class_values``, and whatever later versions add, such as normalisation
settings) is copied into the ONNX model's ``metadata_props``. The file is checked
with ``onnx.checker.check_model`` and written atomically. ONNX files over 2 GB
(external data) are not supported; the paper's network is about 124 MB.
"""

import os

import numpy

from scratchseg.fileio import atomic_path
from scratchseg.functional._checks import pair
from scratchseg.nn import UNet
from scratchseg.nn.layers import BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, MaxPool2d, ReLU
from scratchseg.training.checkpoint import drop_batch_norm_counters, load_model, model_metadata

MIN_OPSET = 13
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def _import_onnx():
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: pip install 'scratchseg[export]'"
                          ) from err
    return onnx


def _load(model_path):
    """(model in eval mode, every string metadata entry) or a ValueError naming the path.

    The model is built as ``scratchseg.inference.load_model`` builds it, without
    that module's imaging dependencies."""
    state, config, _ = load_model(model_path)  # its errors name the path
    try:
        model = UNet(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot export {model_path}: its config {config} does not fit the "
                         f"UNet: {err}") from err
    try:
        model.load_state_dict(drop_batch_norm_counters(state))
    except ValueError as err:
        raise ValueError(f"cannot export {model_path}: {err}") from err
    return model.eval(), model_metadata(model_path)


class _Graph:
    """The nodes and initializers of the graph being built, with unique value names."""

    def __init__(self, onnx):
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes, self.initializers = [], []

    def weight(self, name, array):
        self.initializers.append(
            self.numpy_helper.from_array(numpy.asarray(array, dtype=numpy.float32), name))
        return name

    def ints(self, name, values):
        self.initializers.append(
            self.numpy_helper.from_array(numpy.asarray(values, dtype=numpy.int64), name))
        return name

    def node(self, op, inputs, name, output=None, **attributes):
        """Append a node called ``name``; its output value is ``output`` or ``name``."""
        output = output or name
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attributes))
        return output


def _layer(graph, name, layer, x, output=None):
    """Emit the node of one leaf layer on value ``x``; returns the name of its output
    (``name`` unless ``output`` names it)."""
    params = layer.params
    if isinstance(layer, (Conv2d, ConvTranspose2d)):
        weight = graph.weight(f"{name}.weight", params["weight"])
        inputs = [x, weight]
        if "bias" in params:
            inputs.append(graph.weight(f"{name}.bias", params["bias"]))
        ph, pw = pair(layer.padding, "padding", type(layer).__name__)
        op = "Conv" if isinstance(layer, Conv2d) else "ConvTranspose"
        return graph.node(op, inputs, name, output,
                          kernel_shape=list(params["weight"].shape[2:]),
                          strides=list(pair(layer.stride, "stride", type(layer).__name__)),
                          pads=[ph, pw, ph, pw])
    if isinstance(layer, BatchNorm2d):
        inputs = [x, graph.weight(f"{name}.weight", params["weight"]),
                  graph.weight(f"{name}.bias", params["bias"]),
                  graph.weight(f"{name}.running_mean", layer.buffers["running_mean"]),
                  graph.weight(f"{name}.running_var", layer.buffers["running_var"])]
        return graph.node("BatchNormalization", inputs, name, output, epsilon=float(layer.eps))
    if isinstance(layer, ReLU):
        return graph.node("Relu", [x], name, output)
    if isinstance(layer, Dropout):
        return x  # the identity at inference
    if isinstance(layer, MaxPool2d):
        kernel = pair(layer.kernel_size, "kernel_size", "MaxPool2d")
        stride = kernel if layer.stride is None else pair(layer.stride, "stride", "MaxPool2d")
        return graph.node("MaxPool", [x], name, output, kernel_shape=list(kernel),
                          strides=list(stride))
    raise TypeError(f"export_onnx: no ONNX translation for layer {name} "
                    f"({type(layer).__name__})")


def _block(graph, prefix, layers, x):
    for name, layer in layers:
        x = _layer(graph, f"{prefix}.{name}", layer, x)
    return x


def _edge(layer, n):
    """The edge a layer returns for edge ``n`` (the U-Net's maps are traced as squares)."""
    what = type(layer).__name__
    if isinstance(layer, MaxPool2d):
        k = pair(layer.kernel_size, "kernel_size", what)[0]
        stride = k if layer.stride is None else pair(layer.stride, "stride", what)[0]
        return (n - k) // stride + 1
    if isinstance(layer, (Conv2d, ConvTranspose2d)):
        k = layer.params["weight"].shape[2]
        stride = pair(layer.stride, "stride", what)[0]
        padding = pair(layer.padding, "padding", what)[0]
        if isinstance(layer, Conv2d):
            return (n + 2 * padding - k) // stride + 1
        return (n - 1) * stride - 2 * padding + k
    return n


def _crops(model):
    """Per decoder block (forward order), (top, bottom): the rows cut off the skip's top and
    bottom (left and right alike) by the center crop, the same for every valid input size."""

    def trace(n):
        skips = []
        for block, pool in zip(model.encoder, model.pools):
            for layer in block.children.values():
                n = _edge(layer, n)
            skips.append(n)
            n = _edge(pool, n)
        for layer in model.bottleneck.children.values():
            n = _edge(layer, n)
        crops = []
        for block, skip in zip(model.decoder, reversed(skips)):
            n = _edge(block.up, n)
            crops.append(((skip - n) // 2, skip - n - (skip - n) // 2))
            for layer in block.convs.children.values():
                n = _edge(layer, n)
        return crops

    first = model.valid_input_size(1)
    crops = trace(first)
    if trace(model.valid_input_size(first + 1)) != crops:  # cannot happen for this U-Net
        raise ValueError("export_onnx: the skips' crops depend on the input size")
    return crops


def _build_graph(onnx, model):
    graph = _Graph(onnx)
    x, skips = INPUT_NAME, []
    for k, (block, pool) in enumerate(zip(model.encoder, model.pools)):
        x = _block(graph, f"encoder.{k}", block.children.items(), x)
        skips.append(x)
        x = _layer(graph, f"pool.{k}", pool, x)
    x = _block(graph, "bottleneck", model.bottleneck.children.items(), x)
    if model.dropout is not None:
        x = _layer(graph, "dropout", model.dropout, x)
    for k, (block, skip, (top, bottom)) in enumerate(
            zip(model.decoder, reversed(skips), _crops(model))):
        prefix = f"decoder.{k}"
        x = _layer(graph, f"{prefix}.up", block.up, x)
        if top or bottom:  # valid padding: the center crop of the skip, [top, -bottom)
            end = -bottom if bottom else numpy.iinfo(numpy.int64).max
            skip = graph.node("Slice", [skip, graph.ints(f"{prefix}.crop.starts", [top, top]),
                                        graph.ints(f"{prefix}.crop.ends", [end, end]),
                                        graph.ints(f"{prefix}.crop.axes", [2, 3])],
                              f"{prefix}.crop")
        x = graph.node("Concat", [skip, x], f"{prefix}.concat", axis=1)
        x = _block(graph, prefix, block.convs.children.items(), x)
    _layer(graph, "head", model.head, x, output=OUTPUT_NAME)
    return graph


def export_onnx(model_path, out_path, *, opset=17):
    """Write the model file ``model_path`` as an ONNX model to ``out_path`` (atomically).

    ``image`` (N, C, H, W) float32 in, ``logits`` (N, classes, H', W') out, N, H
    and W dynamic; see the module docstring for the sizes each padding takes.
    A missing or unreadable file, or one that is not a scratchseg model, is a
    ValueError naming ``model_path``; ``opset`` must be at least 13.
    """
    onnx = _import_onnx()
    latest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"export_onnx: opset must be an int from {MIN_OPSET} to {latest}, "
                         f"got {opset!r}")
    model, metadata = _load(model_path)
    config = model.config
    graph = _build_graph(onnx, model)

    same = config["padding"] == "same"
    image = onnx.helper.make_tensor_value_info(
        INPUT_NAME, onnx.TensorProto.FLOAT, ["N", config["in_channels"], "H", "W"])
    logits = onnx.helper.make_tensor_value_info(
        OUTPUT_NAME, onnx.TensorProto.FLOAT,
        ["N", config["num_classes"], "H" if same else "H_out", "W" if same else "W_out"])
    onnx_graph = onnx.helper.make_graph(graph.nodes, "scratchseg_unet", [image], [logits],
                                        initializer=graph.initializers)
    opsets = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(
        onnx_graph, opset_imports=opsets, producer_name="scratchseg",
        ir_version=onnx.helper.find_min_ir_version_for(opsets),
        doc_string=f"scratchseg U-Net exported from {os.path.basename(os.fspath(model_path))}")
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out_path) as temp:
        onnx.save_model(proto, os.fspath(temp))
    return out_path
