"""Gradient-flow tracing: per layer and step, how large the signals are going forward and back.

For every layer the tracer records, at each training step,

- ``activation_rms``: RMS of the layer's output, sqrt(mean(y^2));
- ``grad_rms``: RMS of the gradient it passes down, sqrt(mean(dx^2)) (None for the
  first layer when the backward skips the input's gradient);
- ``weight_grad_rms``: RMS of its parameter gradients (layers with parameters);
- ``update_ratio``: ||w_after - w_before|| / ||w_before||, the relative size of the SGD step;
- ``dead_fraction``: for a ReLU, the share of outputs that are exactly 0.

Gradients that shrink layer by layer towards the input are vanishing; ones that
grow are exploding; a ReLU whose dead fraction nears 1 has stopped learning.
The tracer wraps each layer's ``forward`` and ``backward`` on the instance
(PyTorch's hooks, by hand), so the model's code is unchanged.
"""

import csv
import math
from pathlib import Path

import numpy
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from scratchseg.fileio import atomic_path, atomic_write_text

COLUMNS = ("step", "layer", "kind", "activation_rms", "grad_rms", "weight_grad_rms",
           "update_ratio", "dead_fraction")


def _rms(array):
    return math.sqrt(float((array.astype("float64") ** 2).mean())) if array.size else 0.0


def _norm(array):
    return math.sqrt(float((array.astype("float64") ** 2).sum()))


class GradientFlowTracer:
    """Attach to a model; call ``before_step()`` before and ``after_step(step)`` after each step."""

    def __init__(self, model):
        self.model = model
        self.rows = []
        self._current, self._before = {}, {}
        self.layers = list(model.named_layers())
        for name, layer in self.layers:
            self._wrap(name, layer)

    def _wrap(self, name, layer):
        forward, backward = layer.forward, layer.backward
        stats = self._current

        def traced_forward(*args, **kwargs):
            y = forward(*args, **kwargs)
            entry = stats.setdefault(name, {})
            entry["activation_rms"] = _rms(y)
            if type(layer).__name__ == "ReLU":
                entry["dead_fraction"] = float((y == 0).mean())
            return y

        def traced_backward(dy, *args):
            dx = backward(dy, *args)
            if dx is not None:  # None: the network's input, which needs no gradient
                stats.setdefault(name, {})["grad_rms"] = _rms(dx)
            return dx

        layer.forward, layer.backward = traced_forward, traced_backward

    def before_step(self):
        """Forget the last step's numbers and remember the weights before the update."""
        self._current.clear()
        self._before = {(name, key): value.copy() for name, layer in self.layers
                        for key, value in layer.params.items()}

    def after_step(self, step):
        """Record one row per layer for ``step`` (after the optimizer's update)."""
        for name, layer in self.layers:
            entry = self._current.get(name, {})
            row = dict.fromkeys(COLUMNS)
            row.update(step=step, layer=name, kind=type(layer).__name__, **entry)
            if layer.params:
                row["weight_grad_rms"] = math.sqrt(
                    sum(_rms(g) ** 2 * g.size for g in layer.grads.values())
                    / sum(g.size for g in layer.grads.values()))
                moved = sum(_norm(value - self._before[(name, key)]) ** 2
                            for key, value in layer.params.items())
                size = sum(_norm(self._before[(name, key)]) ** 2 for key in layer.params)
                row["update_ratio"] = math.sqrt(moved / size) if size else None
            self.rows.append(row)

    def load_csv(self, path):
        """Continue the rows of an earlier trace (on resume)."""
        with open(path, newline="") as f:
            self.rows = [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def write_csv(self, path):
        lines = [",".join(COLUMNS)]
        for row in self.rows:
            lines.append(",".join("" if row[c] is None else
                                  (f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]))
                                  for c in COLUMNS))
        atomic_write_text(path, "\n".join(lines) + "\n")

    def plot(self, path):
        """gradient_flow.png: gradient RMS per layer over steps, the last step's profile,
        and the dead-ReLU fractions."""
        names = [name for name, _ in self.layers]
        steps = sorted({row["step"] for row in self.rows})
        if not steps:
            return
        grid = numpy.full((len(names), len(steps)), numpy.nan)
        dead = {}
        column = {s: k for k, s in enumerate(steps)}
        row_of = {n: k for k, n in enumerate(names)}
        for row in self.rows:
            if row["grad_rms"] not in (None, "") and row["layer"] in row_of:
                grid[row_of[row["layer"]], column[row["step"]]] = max(float(row["grad_rms"]),
                                                                      1e-30)
            if row["dead_fraction"] not in (None, ""):
                dead.setdefault(row["layer"], []).append((row["step"],
                                                          float(row["dead_fraction"])))

        figure = Figure(figsize=(13, max(6, 0.2 * len(names) + 2)), layout="constrained")
        FigureCanvasAgg(figure)
        heat, profile, relu = figure.subplots(1, 3, width_ratios=(3, 2, 2))
        image = heat.imshow(numpy.log10(grid), aspect="auto", interpolation="nearest",
                            cmap="viridis")
        heat.set_yticks(range(len(names)), names, fontsize=6)
        # columns are the recorded steps in order: integer ticks, labelled with the step
        heat.xaxis.set_major_locator(MaxNLocator(integer=True))
        heat.xaxis.set_major_formatter(FuncFormatter(
            lambda x, _: str(steps[round(x)]) if 0 <= round(x) < len(steps) else ""))
        heat.set_xlabel("training step")
        heat.set_title("log10 RMS of the gradient passed down")
        figure.colorbar(image, ax=heat)

        last = [r for r in self.rows if r["step"] == steps[-1]]
        for key, label in (("grad_rms", "gradient"), ("activation_rms", "activation")):
            values = [float(r[key]) if r[key] not in (None, "") else numpy.nan for r in last]
            profile.semilogx(values, range(len(values)), marker="o", markersize=3, label=label)
        profile.set_yticks(range(len(last)), [r["layer"] for r in last], fontsize=6)
        profile.invert_yaxis()
        profile.set_title(f"RMS per layer at step {steps[-1]}")
        profile.legend()

        for layer, points in dead.items():
            relu.plot(*zip(*points), label=layer, linewidth=0.8,
                      marker="o" if len(points) == 1 else None, markersize=3)
        relu.set_ylim(0, 1)
        relu.xaxis.set_major_locator(MaxNLocator(integer=True))
        relu.set_xlabel("training step")
        relu.set_title("dead ReLUs (share of 0s)")
        if len(dead) <= 12:
            relu.legend(fontsize=6)
        with atomic_path(Path(path)) as temp:
            figure.savefig(temp, dpi=100)


def _parse(value):
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value \
        else number

