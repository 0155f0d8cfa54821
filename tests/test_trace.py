"""The gradient-flow tracer measures what the layers really pass, without changing results."""

import math

import numpy as np

from scratchseg.nn import UNet
from scratchseg.nn.optim import SGD
from scratchseg.training.trace import GradientFlowTracer


def _step(model, optimizer, x, dy):
    model.zero_grad()
    y = model.forward(x)
    dx = model.backward(dy)
    optimizer.step()
    return y, dx


def test_tracer_records_true_norms_and_leaves_results_unchanged():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((2, 2, 16, 16)).astype(np.float32)
    plain = UNet(base_channels=2, depth=2, padding="same", seed=1)
    traced = UNet(base_channels=2, depth=2, padding="same", seed=1)
    tracer = GradientFlowTracer(traced)
    before = traced.head.params["weight"].copy()
    y_plain, dx_plain = _step(plain, SGD(plain, lr=0.1, momentum=0.0), x, dy)
    tracer.before_step()
    y_traced, dx_traced = _step(traced, SGD(traced, lr=0.1, momentum=0.0), x, dy)
    tracer.after_step(0)
    assert np.array_equal(y_plain, y_traced) and np.array_equal(dx_plain, dx_traced)

    rows = {r["layer"]: r for r in tracer.rows}
    assert math.isclose(rows["head"]["activation_rms"], float(np.sqrt((y_traced ** 2).mean())),
                        rel_tol=1e-6)
    assert math.isclose(rows["encoder.0.conv1"]["grad_rms"],
                        float(np.sqrt((dx_traced.astype(np.float64) ** 2).mean())), rel_tol=1e-6)
    after = traced.head.params["weight"]
    bias_moved = traced.head.params["bias"]
    expected = math.sqrt((np.sum((after - before) ** 2) + np.sum(bias_moved ** 2))
                         / np.sum(before ** 2))
    assert math.isclose(rows["head"]["update_ratio"], expected, rel_tol=1e-5)
    relu = rows["encoder.0.relu1"]
    assert 0.0 < relu["dead_fraction"] < 1.0
    assert rows["encoder.0.conv1"]["dead_fraction"] is None


def test_plot_has_integer_step_ticks_and_unclipped_titles(tmp_path, monkeypatch):
    import scratchseg.training.trace as trace

    figures = []

    class RecordedFigure(trace.Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(trace, "Figure", RecordedFigure)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((2, 2, 16, 16)).astype(np.float32)
    model = UNet(base_channels=2, depth=2, padding="same", seed=1)
    optimizer = SGD(model, lr=0.1, momentum=0.0)
    tracer = GradientFlowTracer(model)
    for step in (10, 11):                       # two steps: the default locator would give 0.5s
        tracer.before_step()
        _step(model, optimizer, x, dy)
        tracer.after_step(step)
    tracer.plot(tmp_path / "gradient_flow.png")
    assert (tmp_path / "gradient_flow.png").stat().st_size > 0

    (figure,) = figures
    renderer = figure.canvas.get_renderer()
    heat, profile, relu = figure.axes[:3]       # then the colorbar's axes
    for axes in (heat, relu):
        low, high = axes.get_xlim()
        shown = [(tick, label.get_text()) for tick, label in
                 zip(axes.get_xticks(), axes.get_xticklabels()) if low <= tick <= high]
        assert shown and all(float(tick).is_integer() for tick, _ in shown), shown
        assert {text for _, text in shown} == {"10", "11"}, shown   # the steps themselves
    width, height = figure.canvas.get_width_height()
    for axes in (heat, profile, relu):
        box = axes.title.get_window_extent(renderer)
        # a margin of 5 pixels: the old third title ended 2 pixels from the edge, cut off
        assert 5 <= box.x0 and box.x1 <= width - 5 and box.y1 <= height, axes.get_title()
