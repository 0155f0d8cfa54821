"""`scratchseg gradcheck`: a table of every op and layer, and a non-zero exit on a failure."""

import re

import pytest

from scratchseg import backend
from scratchseg.cli import main
from scratchseg.tools import selfcheck

OPS = ["conv2d", "conv_transpose2d", "max_pool2d", "relu", "concat", "dropout", "batch_norm2d",
       "softmax_cross_entropy"]
LAYERS = ["Conv2d", "ConvTranspose2d", "BatchNorm2d", "MaxPool2d", "ReLU", "Dropout",
          "SoftmaxCrossEntropy"]


def _table_rows(out):
    """(first column, result) for every row of the printed table."""
    rows = []
    for line in out.splitlines():
        if line.rstrip().endswith("pass") or "FAIL" in line:
            rows.append((line.split()[0], "pass" if line.rstrip().endswith("pass") else "FAIL"))
    return rows


def test_gradcheck_passes_and_lists_every_op(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\b0 failed\b", out)
    rows = _table_rows(out)
    names = {name for name, _ in rows}
    for name in OPS + LAYERS:
        assert name in names, f"{name} missing from the gradcheck table"
    assert all(result == "pass" for _, result in rows)
    passed = int(re.search(r"(\d+) passed", out).group(1))
    assert passed == len(rows) >= len(OPS) + len(LAYERS)
    for grad in ("dx", "dw", "db", "dgamma", "dbeta", "dlogits", "dskip", "dweight", "dbias"):
        assert re.search(rf"\s{grad}\s", out), f"gradient {grad} missing from the table"


def test_gradcheck_exits_non_zero_on_a_wrong_backward(capsys, monkeypatch):
    def relu_backward_without_mask(dy, cache):
        return dy

    monkeypatch.setattr(selfcheck.F, "relu_backward", relu_backward_without_mask)
    assert main(["gradcheck", "--seed", "3"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"\b2 failed\b", out)
    failing = [name for name, result in _table_rows(out) if result == "FAIL"]
    assert failing == ["relu", "ReLU"]  # the op, and the layer that runs it
    fail_line = next(line for line in out.splitlines() if "FAIL" in line)
    assert "'dx'" in fail_line and "analytic" in fail_line and "numerical" in fail_line


def test_gradcheck_reports_a_planted_batch_norm_bug(capsys, monkeypatch):
    original = selfcheck.F.batch_norm2d_backward

    def dbeta_off(dy, cache):
        dx, dgamma, dbeta = original(dy, cache)
        return dx, dgamma, dbeta * 1.02

    monkeypatch.setattr(selfcheck.F, "batch_norm2d_backward", dbeta_off)
    assert main(["gradcheck"]) != 0
    out = capsys.readouterr().out
    assert ({name for name, result in _table_rows(out) if result == "FAIL"}
            == {"batch_norm2d", "BatchNorm2d"})
    assert "'dbeta'" in out


def _op_rows(out, op):
    """(gradient, max abs err, result) of every row of ``op`` in the first table."""
    lines = out.splitlines()
    ops_end = lines[0].index("gradient")  # the op column's width, from the header
    rows = []
    for line in lines[2:lines.index("")]:
        if line[:ops_end].strip() == op:
            grad, abs_err, _, result = line[ops_end:].split()[:4]
            rows.append((grad, abs_err, result))
    return rows


def test_a_wrong_bias_gradient_fails_its_own_row_only(capsys, monkeypatch):
    """One row per gradient even when one is wrong: dx and dw keep their passing rows and
    figures, db fails on its own row with its worst element and both values."""
    original = selfcheck.F.conv2d_backward

    def db_off(dy, cache, *options):
        dx, dw, db = original(dy, cache, *options)
        return dx, dw, db * 1.1

    monkeypatch.setattr(selfcheck.F, "conv2d_backward", db_off)
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    rows = _op_rows(out, "conv2d") + _op_rows(out, "conv2d stride 2")
    assert [(grad, result) for grad, _, result in rows] == [
        ("dx", "pass"), ("dw", "pass"), ("db", "FAIL"),  # conv2d
        ("dx", "pass"), ("dw", "pass"), ("db", "FAIL"),  # conv2d stride 2
    ]
    assert all(float(abs_err) < 1e-6 for _, abs_err, result in rows if result == "pass")
    # a failing row keeps its figures: db is 10% off, far above the 1e-5 tolerance
    assert all(float(abs_err) > 1e-3 for _, abs_err, result in rows if result == "FAIL")
    fail_lines = [line for line in out.splitlines() if "FAIL" in line]
    assert len(fail_lines) == 3  # the two ops' rows and the Conv2d layer's bias
    assert all(("'db'" in line or "'dbias'" in line) and "analytic" in line
               and "numerical" in line for line in fail_lines)
    assert re.search(r"\b3 failed\b", out)


def test_the_loss_is_checked_with_weights_and_ignored_pixels(capsys, monkeypatch):
    """The SoftmaxCrossEntropy row uses class weights, a weight map and ignore_index: a
    backward that ignores the weight map fails it."""
    from scratchseg import ops

    original = ops.softmax_cross_entropy_backward

    def unweighted(dloss, cache):
        engine, (probs, labels, scaled_weight) = cache  # scratchseg.ops: (engine, its cache)
        return original(dloss, (engine, (probs, labels,
                                         (scaled_weight > 0) / (scaled_weight > 0).sum())))

    assert main(["gradcheck"]) == 0
    assert ("dx", "pass") in [(g, r) for g, _, r in _op_rows(capsys.readouterr().out,
                                                              "SoftmaxCrossEntropy")]
    monkeypatch.setattr(ops, "softmax_cross_entropy_backward", unweighted)
    assert main(["gradcheck"]) == 1
    rows = _op_rows(capsys.readouterr().out, "SoftmaxCrossEntropy")
    assert [(g, r) for g, _, r in rows] == [("dx", "FAIL")]


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy can run here")
def test_gradcheck_on_an_unusable_backend_is_a_clean_error(capsys):
    assert main(["gradcheck", "--backend", "cupy"]) == 2
    assert "error" in capsys.readouterr().err


def test_gradcheck_model_prints_every_unet_layer(capsys):
    assert main(["gradcheck", "--model", "--mode", "random"]) == 0
    out = capsys.readouterr().out
    assert "The whole U-Net (random mode)" in out
    for layer in ("encoder.0.conv1", "bottleneck.conv2", "decoder.1.up", "decoder.1.bn2",
                  "head"):
        assert layer in out
    assert " 0 failed" in out
