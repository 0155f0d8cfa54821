"""`scratchseg gradcheck`: a table of every op and layer, and a non-zero exit on a failure."""

import re

import pytest

from scratchseg import backend, selfcheck
from scratchseg.cli import main

OPS = ["conv2d", "conv_transpose2d", "max_pool2d", "relu", "concat", "dropout", "batch_norm2d",
       "softmax_cross_entropy"]
LAYERS = ["Conv2d", "ConvTranspose2d", "BatchNorm2d", "MaxPool2d", "ReLU", "Dropout"]


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
    assert re.search(r"\b1 failed\b", out)
    failing = [name for name, result in _table_rows(out) if result == "FAIL"]
    assert failing == ["relu"]
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
    assert {name for name, result in _table_rows(out) if result == "FAIL"} == {"batch_norm2d"}
    assert "'dbeta'" in out


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
