"""Numerical gradient checking against central differences.

For a forward ``y = f(x_1, ..., x_m)`` and a fixed random upstream gradient
``dy``, the scalar ``L = sum(y * dy)`` has gradient ``dL/dx_k = backward(dy)[k]``.
Central differences approximate it:
``(L(x + eps e) - L(x - eps e)) / (2 eps) = <dL/dx, e> + O(eps^2)``.

``mode="full"`` takes e = every unit vector (exact but one pair of forwards
per element); ``mode="random"`` takes one random direction per input and
compares the directional derivative (Chainer's and PyTorch's fast mode).
"""

from dataclasses import dataclass, field

import numpy

from scratchseg.backend import get_array_module, to_numpy

MODES = ("full", "random")


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with central differences.

    ``abs_error`` and ``rel_error`` are the input's worst errors (as a passing
    report gives them), nan where no comparison was made (a missing or
    misshapen gradient).
    """

    def __init__(self, message, abs_error=float("nan"), rel_error=float("nan")):
        super().__init__(message)
        self.abs_error, self.rel_error = abs_error, rel_error


@dataclass
class GradientReport:
    """Per checked input: the worst absolute and relative error, and the largest
    |numerical gradient| (0 means the check compared zeros and proved nothing)."""

    names: list = field(default_factory=list)
    max_abs_error: list = field(default_factory=list)
    max_rel_error: list = field(default_factory=list)
    max_abs_gradient: list = field(default_factory=list)

    def rows(self):
        return list(zip(self.names, self.max_abs_error, self.max_rel_error))


def gradients_tuple(grads, count):
    """A backward's result as a tuple of ``count`` gradients (a lone array is one);
    GradientCheckError when it returns another number."""
    grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
    if len(grads) != count:
        raise GradientCheckError(f"backward returned {len(grads)} gradients for {count} inputs")
    return grads


def check_gradients(forward, backward, inputs, *, mode="full", eps=1e-6, atol=1e-5, rtol=1e-3,
                    seed=0, names=None):
    """Compare ``backward``'s gradients with central differences of ``forward``.

    ``forward(*inputs) -> (y, cache)`` and ``backward(dy, cache) -> grads``
    (one per input, in order). Inputs are cast to float64 on their device. A
    gradient passes where ``|analytic - numeric| <= atol + rtol * |numeric|``;
    the first input that fails raises GradientCheckError naming it, the worst
    element and both values. Returns a GradientReport.
    """
    if mode not in MODES:
        raise ValueError(f"check_gradients: mode must be one of {MODES}, got {mode!r}")
    xp = get_array_module(*inputs)
    inputs = [xp.array(a, dtype=xp.float64) for a in inputs]
    names = list(names) if names is not None else [f"input{k}" for k in range(len(inputs))]
    if len(names) != len(inputs):
        raise ValueError(f"check_gradients: {len(inputs)} inputs but {len(names)} names")
    rng = numpy.random.default_rng(seed)

    y, cache = forward(*inputs)
    dy = xp.asarray(rng.standard_normal(numpy.shape(y)))
    grads = gradients_tuple(backward(dy, cache), len(inputs))

    def objective():
        return float((forward(*inputs)[0] * dy).sum())

    report = GradientReport()
    for name, x, grad in zip(names, inputs, grads):
        if grad is None:
            raise GradientCheckError(f"backward returned None for input {name!r}")
        if tuple(grad.shape) != tuple(x.shape):
            raise GradientCheckError(f"gradient of {name!r} has shape {tuple(grad.shape)}, "
                                     f"input has {tuple(x.shape)}")
        if mode == "full":
            numeric = _full_differences(objective, x, eps)
            analytic = to_numpy(grad).astype(numpy.float64)
        else:
            direction = xp.asarray(rng.standard_normal(x.shape))
            numeric = numpy.array([_directional_difference(objective, x, direction, eps)])
            analytic = numpy.array([float((grad * direction).sum())])
        _compare(name, analytic, numeric, atol, rtol, mode, report)
    return report


def _full_differences(objective, x, eps):
    """dL/dx element by element: one pair of perturbed forwards per element."""
    numeric = numpy.empty(x.shape)
    flat = x.reshape(-1)  # a view: perturbing it perturbs the input
    for i in range(flat.size):
        original = float(flat[i])
        flat[i] = original + eps
        plus = objective()
        flat[i] = original - eps
        minus = objective()
        flat[i] = original
        numeric.flat[i] = (plus - minus) / (2 * eps)
    return numeric


def _directional_difference(objective, x, direction, eps):
    """<dL/dx, d> from one pair of forwards perturbed along d."""
    original = x.copy()
    x += eps * direction
    plus = objective()
    x[...] = original - eps * direction
    minus = objective()
    x[...] = original
    return (plus - minus) / (2 * eps)


def _compare(name, analytic, numeric, atol, rtol, mode, report):
    abs_error = numpy.abs(analytic - numeric)
    rel_error = abs_error / numpy.maximum(numpy.abs(numeric), atol)
    excess = abs_error - (atol + rtol * numpy.abs(numeric))
    worst = numpy.unravel_index(int(numpy.argmax(excess)), excess.shape) if excess.size else ()
    if excess.size and excess[worst] > 0:
        where = "a random direction"
        if mode == "full":
            where = f"element {tuple(int(i) for i in worst)}"
        raise GradientCheckError(
            f"gradient of {name!r} is wrong at {where}: analytic {analytic[worst]:.6g}, "
            f"numerical {numeric[worst]:.6g} (abs error {abs_error[worst]:.3g}, "
            f"allowed {atol + rtol * abs(numeric[worst]):.3g})",
            abs_error=float(abs_error.max()), rel_error=float(rel_error.max()))
    report.names.append(name)
    report.max_abs_error.append(float(abs_error.max(initial=0.0)))
    report.max_rel_error.append(float(rel_error.max(initial=0.0)))
    report.max_abs_gradient.append(float(numpy.abs(numeric).max(initial=0.0)))


def layer_functions(layer, extra_inputs=()):
    """Adapt a layer (or model) to ``check_gradients``: inputs are (x, *parameters).

    The layer is cast to float64. ``forward(x, *params)`` copies the perturbed
    parameters into the layer before running it; ``backward`` returns dx and
    then every parameter's gradient, in ``parameters()`` order.
    """
    layer.astype("float64")
    params = _named_params(layer)

    def forward(x, *values):
        for (_, param), value in zip(params, values):
            param[...] = value
        return layer.forward(x, *extra_inputs), None

    def backward(dy, _cache):
        layer.zero_grad()
        dx = layer.backward(dy)
        return (dx, *(grad for _, grad in _named_grads(layer)))

    names = [name for name, _ in params]
    return forward, backward, [value.copy() for _, value in params], names


def _named_params(layer):
    return layer.parameters() if hasattr(layer, "parameters") else list(layer.params.items())


def _named_grads(layer):
    return layer.gradients() if hasattr(layer, "gradients") else list(layer.grads.items())
