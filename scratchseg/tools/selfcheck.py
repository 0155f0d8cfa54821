"""The catalogue behind ``scratchseg gradcheck``: every op and layer on small float64 inputs.

Each case yields one row per gradient it returns (op, gradient, worst
absolute error, worst relative error, pass or fail). The ops run through
scratchseg.ops, so the engine checked is the one in use (``scratchseg.engine``).
"""

import numpy

from scratchseg import ops as F
from scratchseg.backend import backend_name, to_device
from scratchseg.gradcheck import (
    GradientCheckError,
    check_gradients,
    gradients_tuple,
    layer_functions,
)
from scratchseg.nn import layers


def _distinct(rng, shape):
    """Distinct values 0.1 apart, none 0: no max-pool ties, no ReLU kink under eps."""
    return rng.permutation(numpy.prod(shape)).reshape(shape) * 0.1 - 1.05


def _op_cases(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    wt = rng.standard_normal((3, 4, 2, 2))
    b = rng.standard_normal(4)
    logits = rng.standard_normal((2, 3, 4, 5))
    labels = rng.integers(0, 3, (2, 4, 5))
    labels[0, 0, :2] = -1
    class_weight = numpy.array([0.5, 2.0, 1.0])
    weight_map = rng.uniform(0.5, 3.0, (2, 4, 5))
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)

    def loss_forward(z, **kw):
        device = backend_name(z)
        return F.softmax_cross_entropy_forward(z, to_device(labels, device),
                                               to_device(class_weight, device),
                                               to_device(weight_map, device), -1, **kw)

    dice_labels = rng.integers(0, 3, (2, 4, 5))
    dice_weight = rng.uniform(0.5, 3.0, (2, 4, 5))
    dice_weight[0, 0, :2] = 0.0  # ignored pixels

    def dice_forward(z, weight=None):
        device = backend_name(z)
        weight = None if weight is None else to_device(weight, device)
        return F.dice_loss_forward(z, to_device(dice_labels, device), weight=weight)

    return [
        ("conv2d", lambda a, k, c: F.conv2d_forward(a, k, c, stride=1, padding=1),
         F.conv2d_backward, (x, w, b), ("dx", "dw", "db")),
        ("conv2d stride 2", lambda a, k, c: F.conv2d_forward(a, k, c, stride=2, padding=0),
         F.conv2d_backward, (x, w, b), ("dx", "dw", "db")),
        ("conv_transpose2d", lambda a, k, c: F.conv_transpose2d_forward(a, k, c, stride=2),
         F.conv_transpose2d_backward, (x, wt, b), ("dx", "dw", "db")),
        ("conv_transpose2d k3 s2 p1",
         lambda a, k: F.conv_transpose2d_forward(a, k, None, stride=2, padding=1),
         lambda dy, c: F.conv_transpose2d_backward(dy, c)[:2],
         (x, rng.standard_normal((3, 2, 3, 3))), ("dx", "dw")),
        ("max_pool2d", F.max_pool2d_forward, F.max_pool2d_backward,
         (_distinct(rng, (2, 3, 6, 6)),), ("dx",)),
        ("max_pool2d k3 s2", lambda a: F.max_pool2d_forward(a, 3, 2), F.max_pool2d_backward,
         (_distinct(rng, (1, 2, 7, 7)),), ("dx",)),
        ("relu", F.relu_forward, F.relu_backward, (_distinct(rng, (2, 3, 4, 4)),),
         ("dx",)),
        ("concat", F.concat_forward, F.concat_backward,
         (rng.standard_normal((2, 2, 8, 8)), rng.standard_normal((2, 3, 4, 4))),
         ("dskip", "dx")),
        ("dropout", lambda a: F.dropout_forward(a, 0.3, numpy.random.default_rng(1)),
         F.dropout_backward, (x,), ("dx",)),
        ("batch_norm2d",
         lambda a, g, c: F.batch_norm2d_forward(a, g, c, numpy.zeros(3), numpy.ones(3)),
         F.batch_norm2d_backward, (x, gamma, beta), ("dx", "dgamma", "dbeta")),
        ("batch_norm2d eval",
         lambda a, g, c: F.batch_norm2d_forward(a, g, c, numpy.full(3, 0.2),
                                                numpy.full(3, 1.5), training=False),
         F.batch_norm2d_backward, (x, gamma, beta), ("dx", "dgamma", "dbeta")),
        ("softmax_cross_entropy mean", loss_forward, F.softmax_cross_entropy_backward,
         (logits,), ("dlogits",)),
        ("softmax_cross_entropy sum", lambda z: loss_forward(z, reduction="sum"),
         F.softmax_cross_entropy_backward, (logits,), ("dlogits",)),
        ("dice_loss", dice_forward, F.dice_loss_backward, (logits,), ("dlogits",)),
        ("dice_loss weighted", lambda z: dice_forward(z, dice_weight), F.dice_loss_backward,
         (logits,), ("dlogits",)),
        *_detection_op_cases(rng),
    ]


def _detection_op_cases(rng):
    """linear, RoI max-pooling (distinct values: no ties), smooth L1 (every |d| at least 0.1
    from beta) and the sigmoid loss (some anchors ignored)."""
    rois = numpy.array([[0, 0, 0, 7, 6], [1, 1.4, 2.6, 6.5, 7.2], [0, 3, 1, 4, 5],
                        [1, -2, -1, 3, 2], [0, 5, 5, 5, 5]])  # big, fractional, thin, cut, 1x1
    rois_half = numpy.array([[0, 0, 0, 15, 13], [1, 3, 5, 13, 14], [0, 2, 2, 9, 11]], float)

    def roi_forward(boxes, size, scale):
        return lambda a: F.roi_max_pool_forward(a, to_device(boxes, backend_name(a)), size,
                                                scale)

    magnitude = rng.choice([0.2, 0.35, 0.6, 0.8, 1.3, 2.4], (3, 4, 4))
    target = rng.standard_normal((3, 4, 4))
    box_x = target + magnitude * rng.choice([-1.0, 1.0], magnitude.shape)
    box_weight = rng.uniform(0.0, 2.0, magnitude.shape)
    box_weight[0] = 0.0  # unmatched boxes

    def smooth_l1(a, **kw):
        device = backend_name(a)
        return F.smooth_l1_forward(a, to_device(target, device), **kw)

    anchors = rng.standard_normal((2, 3, 5)) * 2
    objectness = rng.integers(-1, 2, anchors.shape)

    def sigmoid_loss(z, **kw):
        return F.sigmoid_cross_entropy_forward(z, to_device(objectness, backend_name(z)), **kw)

    return [
        ("linear", F.linear_forward, F.linear_backward,
         (rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)),
         ("dx", "dw", "db")),
        ("roi_max_pool", roi_forward(rois, (3, 2), 1.0), F.roi_max_pool_backward,
         (_distinct(rng, (2, 2, 8, 9)),), ("dx",)),
        ("roi_max_pool scale 0.5", roi_forward(rois_half, 2, 0.5), F.roi_max_pool_backward,
         (_distinct(rng, (2, 3, 8, 8)),), ("dx",)),
        ("smooth_l1 weighted sum", lambda a: smooth_l1(a, weight=to_device(
            box_weight, backend_name(a))), F.smooth_l1_backward, (box_x,), ("dx",)),
        ("smooth_l1 mean beta 0.5", lambda a: smooth_l1(a, beta=0.5, reduction="mean"),
         F.smooth_l1_backward, (box_x,), ("dx",)),
        ("sigmoid_cross_entropy mean", sigmoid_loss, F.sigmoid_cross_entropy_backward,
         (anchors,), ("dlogits",)),
        ("sigmoid_cross_entropy sum", lambda z: sigmoid_loss(z, reduction="sum"),
         F.sigmoid_cross_entropy_backward, (anchors,), ("dlogits",)),
    ]


def _layer_cases(rng, backend):
    """(name, layer, x, extra forward inputs) on ``backend``."""
    x = rng.standard_normal((2, 3, 6, 6))
    cases = [
        ("Conv2d", layers.Conv2d(3, 4, 3, padding=1, rng=1)),
        ("ConvTranspose2d", layers.ConvTranspose2d(3, 2, rng=2)),
        ("BatchNorm2d", layers.BatchNorm2d(3)),
        ("MaxPool2d", layers.MaxPool2d(2)),
        ("ReLU", layers.ReLU()),
        ("Dropout", layers.Dropout(0.25, rng=3)),
    ]
    for name, layer in cases:
        inputs = _distinct(rng, x.shape) if name in ("MaxPool2d", "ReLU") else x
        yield name, layer.to(backend), to_device(inputs, backend), ()
    labels = rng.integers(0, 3, (2, 6, 6))
    labels[1, 2, :3] = 255
    loss = layers.SoftmaxCrossEntropy(to_device(numpy.array([0.5, 2.0, 1.0]), backend),
                                      ignore_index=255)
    weight_map = to_device(rng.uniform(0.5, 3.0, labels.shape), backend)
    yield ("SoftmaxCrossEntropy", loss, to_device(x, backend),
           (to_device(labels, backend), weight_map))
    yield ("Linear", layers.Linear(5, 3, rng=4).to(backend),
           to_device(rng.standard_normal((4, 5)), backend), ())
    rois = numpy.array([[0, 0, 0, 5, 5], [1, 1.5, 0.5, 4.4, 5.6], [1, 2, 2, 9, 3]])
    yield ("RoIMaxPool", layers.RoIMaxPool(2, 0.5), to_device(_distinct(rng, x.shape), backend),
           (to_device(rois, backend),))


def run_checks(backend="numpy", seed=0):
    """Run every case on ``backend``; return rows (op, gradient, abs, rel, passed, message)."""
    rng = numpy.random.default_rng(seed)
    rows = []
    for op, forward, backward, inputs, grad_names in _op_cases(rng):
        device_inputs = [to_device(a, backend) for a in inputs]
        rows += _rows(op, grad_names, forward, backward, device_inputs)
    for name, layer, x, extra_inputs in _layer_cases(rng, backend):
        if isinstance(layer, layers.Dropout):
            forward, backward, params, names = _reseeded_dropout(layer)
        else:
            forward, backward, params, names = layer_functions(layer, extra_inputs)
        rows += _rows(name, ["dx"] + [f"d{n}" for n in names], forward, backward,
                      [x, *params])
    return rows


def _reseeded_dropout(layer):
    """Dropout draws a new mask per call; a check needs the same mask in every forward."""
    forward, backward, params, names = layer_functions(layer)

    def fixed_forward(*inputs):
        layer.reset_rng()
        return forward(*inputs)

    return fixed_forward, backward, params, names


MODEL_CONFIGS = (
    dict(in_channels=1, num_classes=2, base_channels=2, depth=2, padding="valid"),
    dict(in_channels=2, num_classes=3, base_channels=2, depth=2, padding="same",
         batch_norm=True),
)


def run_model_checks(backend="numpy", seed=0, mode="full"):
    """The whole U-Net in float64 (tiny configurations): one row per layer parameter and dx."""
    from scratchseg.nn import UNet

    rng = numpy.random.default_rng(seed)
    rows = []
    for config in MODEL_CONFIGS:
        model = UNet(**config, seed=seed, backend=backend)
        size = model.valid_input_size(8 if config["padding"] == "same" else 40)
        x = rng.standard_normal((2, config["in_channels"], size, size))
        forward, backward, params, names = layer_functions(model)
        # Zero biases put the pre-activation of an all-dead 3x3 patch exactly at ReLU's
        # kink, where central differences see half the slope: start from random biases.
        params = [p + to_device(rng.normal(0.0, 0.1, p.shape), backend) if name.endswith("bias")
                  else p
                  for name, p in zip(names, params)]
        label = f"UNet {config['padding']} {size}x{size}" + (" bn" if config.get("batch_norm")
                                                              else "")
        grad_names = ["dx"] + [f"d{name}" for name in names]
        for op, grad, a, r, passed, message in _rows(label, grad_names, forward, backward,
                                                    [to_device(x, backend), *params], mode):
            layer, _, param = grad.rpartition(".")
            rows.append((f"{op}: {layer[1:]}" if layer else op, f"d{param}" if layer else grad,
                         a, r, passed, message))
    return rows


def _rows(op, grad_names, forward, backward, inputs, mode="full"):
    """One row per gradient, each checked on its own (the others held fixed), so one
    wrong gradient fails its own row only; a gradient that is identically zero fails
    too (it proves nothing). A failing row keeps its worst errors (nan only where
    the backward gave no usable gradient); its message names the worst element,
    both values and the error there."""
    return [_row(op, name, forward, backward, inputs, k, mode)
            for k, name in enumerate(grad_names)]


def _row(op, name, forward, backward, inputs, k, mode):
    """Check the gradient of input ``k`` alone: the other inputs are constants."""
    def forward_k(x_k):
        return forward(*inputs[:k], x_k, *inputs[k + 1:])

    def backward_k(dy, cache):
        return gradients_tuple(backward(dy, cache), len(inputs))[k]

    try:
        report = check_gradients(forward_k, backward_k, [inputs[k]], names=[name], mode=mode)
    except GradientCheckError as error:
        return (op, name, error.abs_error, error.rel_error, False, str(error))
    (a,), (r,), (scale,) = report.max_abs_error, report.max_rel_error, report.max_abs_gradient
    return (op, name, a, r, scale > 0, "" if scale > 0 else "gradient is identically zero")
