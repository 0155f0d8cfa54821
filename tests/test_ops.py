"""scratchseg.ops: the one dispatch point between the reference ops and the CPU engine."""

import numpy as np
import pytest

import scratchseg
from scratchseg import fast, functional, ops
from scratchseg.ops import conv2d_backward, conv2d_forward


def test_the_default_engine_is_fast_and_the_variable_chooses(monkeypatch):
    x = np.zeros((1, 1, 4, 4))
    monkeypatch.delenv("SCRATCHSEG_ENGINE", raising=False)
    assert ops.current_engine() == "fast" and ops.engine_for(x) is fast
    monkeypatch.setenv("SCRATCHSEG_ENGINE", "reference")
    assert ops.engine_for(x) is functional
    with scratchseg.engine("fast"):  # the context manager wins over the variable
        assert ops.engine_for(x) is fast
    assert ops.engine_for(x) is functional


def test_an_unknown_engine_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown engine 'gpu'.*'fast', 'reference'"):
        with scratchseg.engine("gpu"):
            pass
    monkeypatch.setenv("SCRATCHSEG_ENGINE", "fastest")
    with pytest.raises(ValueError, match=r"SCRATCHSEG_ENGINE: unknown engine 'fastest'"):
        conv2d_forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)))


def test_cupy_arrays_always_run_the_reference():
    cupy_like = type("ndarray", (), {"__module__": "cupy._core.core"})()
    for name in ("fast", "reference"):
        with scratchseg.engine(name):
            assert ops.engine_for(cupy_like) is functional


@pytest.mark.parametrize("forward_engine, backward_engine",
                         [("fast", "reference"), ("reference", "fast")])
def test_a_backward_runs_on_the_engine_its_forward_ran_on(forward_engine, backward_engine, rng):
    x, w = rng.standard_normal((1, 4, 96, 96)), rng.standard_normal((8, 4, 3, 3))
    dy = rng.standard_normal((1, 8, 96, 96))
    module = ops.ENGINES[forward_engine]
    _, own_cache = module.conv2d_forward(x, w, padding=1)
    expected = module.conv2d_backward(dy, own_cache)
    with scratchseg.engine(forward_engine):
        _, cache = conv2d_forward(x, w, padding=1)
    with scratchseg.engine(backward_engine):
        got = conv2d_backward(dy, cache)
    for g, e in zip(got, expected):  # bitwise: the same engine's arithmetic
        assert (g is None and e is None) or np.array_equal(g, e)


def test_ops_offers_every_reference_op_under_its_name():
    for name in set(functional.__all__) - {"im2col", "col2im"}:
        assert getattr(ops, name).__name__ == name
        assert getattr(ops, name).__doc__ == getattr(functional, name).__doc__


def test_the_layers_and_the_unet_call_ops_only_through_scratchseg_ops():
    from pathlib import Path

    package = Path(scratchseg.__file__).parent
    for path in sorted((package / "nn").glob("*.py")):
        text = path.read_text()
        assert "scratchseg.functional import" not in text.replace(
            "scratchseg.functional._checks import", ""), path.name
        assert "scratchseg.fast import" not in text, path.name
