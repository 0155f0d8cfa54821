"""Training, resume, predict, evaluate and summary through the command line, on tiny settings."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scratchseg.cli import main
from scratchseg.nn import UNet
from scratchseg.tools.torch_unet import TorchUNet
from scratchseg.training.checkpoint import load_model, load_training_state, save_model
from scratchseg.training.loop import Trainer

TINY = ["--num-samples", "6", "--image-size", "40", "--base-channels", "4", "--depth", "2",
        "--tile", "32", "--batch-size", "2", "--tiles-per-epoch", "6", "--warmup-steps", "0",
        "--quiet"]


def _train(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["train", "--out", str(out), *TINY, *extra]) == 0
    return out


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_train_writes_every_output(tmp_path):
    run = _train(tmp_path, "run", "--epochs", "2")
    for name in ("model.safetensors", "checkpoint.safetensors", "metrics.csv", "curves.png",
                 "samples.png"):
        assert (run / name).stat().st_size > 0, name
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "val_pixel_acc", "val_miou",
                            "val_dice", "lr", "seconds"}
    assert 0.0 <= float(rows[-1]["val_miou"]) <= 1.0
    for picture in ("curves.png", "samples.png"):
        with Image.open(run / picture) as image:
            assert image.format == "PNG"
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_model_file_loads_into_pytorch(tmp_path):
    run = _train(tmp_path, "run", "--epochs", "1", "--padding", "valid", "--tile", "8")
    state, config, class_values = load_model(run / "model.safetensors")
    assert class_values == [0, 1, 2, 3] and config["batch_norm"]
    torch_model = TorchUNet(**config)
    tensors = load_file(run / "model.safetensors")
    torch_model.load_state_dict(tensors, strict=True)  # num_batches_tracked included
    steps = load_training_state(run / "checkpoint.safetensors")["step"]
    assert steps == 3  # 6 images: 5 for training in batches of 2
    counters = {k: v for k, v in torch_model.state_dict().items()
                if k.endswith("num_batches_tracked")}
    assert len(counters) == sum(k.endswith("running_mean") for k in state) > 0
    assert all(v.dtype == torch.int64 and v.ndim == 0 and int(v) == steps
               for v in counters.values())
    for name, value in torch_model.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert np.array_equal(value.numpy(), state[name]), name


def test_resume_continues_bit_identically(tmp_path, monkeypatch):
    straight = _train(tmp_path, "straight", "--epochs", "3", "--dropout", "0.2")

    real_save = Trainer.save

    def save_then_interrupt(self, best):
        real_save(self, best)
        if self.epoch == 1:
            raise KeyboardInterrupt  # the user presses Ctrl-C after the first epoch

    monkeypatch.setattr(Trainer, "save", save_then_interrupt)
    interrupted = tmp_path / "interrupted"
    assert main(["train", "--out", str(interrupted), *TINY, "--epochs", "3",
                 "--dropout", "0.2"]) == 130
    assert len(_rows(interrupted)) == 1
    monkeypatch.setattr(Trainer, "save", real_save)
    assert main(["train", "--resume", str(interrupted), "--quiet"]) == 0

    a, _, _ = load_model(straight / "model.safetensors")
    b, _, _ = load_model(interrupted / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in _rows(straight)] == \
        [{k: v for k, v in r.items() if k not in drop} for r in _rows(interrupted)]


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    run = _train(tmp_path, "run", "--epochs", "1")
    before = (run / "model.safetensors").read_bytes()
    assert main(["train", "--out", str(run), *TINY, "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before


def test_diverging_run_stops_with_a_clear_message(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), *TINY, "--epochs", "1",
                 "--no-batch-norm", "--lr", "1e12", "--momentum", "0"])
    assert code == 2
    assert "lower --lr" in capsys.readouterr().err


def _folder(tmp_path, sizes=((40, 48), (44, 40), (40, 40))):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, (h, w) in enumerate(sizes):
        mask = np.zeros((h, w), np.uint8)
        mask[5:20, 8:30] = 255
        mask[25:35, 5:15] = 128
        image = (mask * 0.6 + rng.integers(0, 60, (h, w))).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"img{k}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{k}.png")
    return root


def test_folder_training_predict_and_evaluate(tmp_path, capsys):
    data = _folder(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY, "--epochs", "1",
                 "--weight-map", "--val-fraction", "0.34"]) == 0
    _, _, class_values = load_model(run / "model.safetensors")
    assert class_values == [0, 128, 255]

    out = tmp_path / "pred"
    images = sorted(str(p) for p in (data / "images").iterdir())
    assert main(["predict", "--model", str(run / "model.safetensors"), "--out", str(out),
                 "--overlay", *images]) == 0
    for k, (h, w) in enumerate(((40, 48), (44, 40), (40, 40))):
        with Image.open(out / f"img{k}.png") as mask:
            values = np.asarray(mask)
        assert values.shape == (h, w)
        assert set(np.unique(values)) <= {0, 128, 255}
        with Image.open(out / f"img{k}_overlay.png") as overlay:
            assert overlay.size == (w, h) and overlay.mode == "RGB"

    capsys.readouterr()
    assert main(["evaluate", "--model", str(run / "model.safetensors"), "--data", str(data),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 3
    assert [c["value"] for c in result["per_class"]] == [0, 128, 255]
    assert 0.0 <= result["mean_iou"] <= 1.0
    assert main(["evaluate", "--model", str(run / "model.safetensors"), "--data",
                 str(data)]) == 0
    assert "mean IoU" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["predict", "--model", "nope.safetensors", "--out", "o", "x.png"], "nope.safetensors"),
    (["evaluate", "--model", "nope.safetensors", "--data", "d"], "nope.safetensors"),
    (["train", "--data", "no_such_dir", "--out", "o"], "no_such_dir"),
    (["train", "--resume", "no_such_run"], "no_such_run"),
    (["train"], "--out"),
    (["summary", "--input-size", "570"], "nearest valid sizes: 556 and 572"),
    (["summary", "--input-size", "0"], "--input-size"),
    (["summary", "--batch-size", "0"], "--batch-size"),
    (["train", "--out", "o", "--bogus"], "--bogus"),
    (["train", "--out", "o", "--padding", "wrong"], "--padding"),
    (["train", "--out", "o", "--schedule", "linear"], "--schedule"),
    (["train", "--out", "o", "--epochs", "two"], "--epochs"),
    (["frobnicate"], "frobnicate"),
])
def test_errors_are_one_line_without_traceback(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, value", [
    ("--batch-size", "0"), ("--epochs", "-1"), ("--tiles-per-epoch", "-1"), ("--lr", "nan"),
    ("--lr", "-0.1"), ("--momentum", "1"), ("--weight-decay", "inf"), ("--dropout", "1"),
    ("--tile", "0"), ("--depth", "0"), ("--val-fraction", "1"), ("--num-samples", "0"),
])
def test_out_of_range_train_options_are_refused_up_front(tmp_path, capsys, flag, value):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scratchseg train: error: {flag} must be ")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_help_returns_zero(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--batch-norm" in out
    assert ("epochs to train, 0 = as many as make about 500 SGD steps (on resume: the new "
            "total) (default: 0)") in out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run that has trained its one epoch; the tests below must leave it as it is."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--out", str(run), *TINY, "--epochs", "1"]) == 0
    return run


def _run_files(run):
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def test_resume_into_another_folder_is_refused(finished_run, tmp_path, capsys):
    before = _run_files(finished_run)
    other = tmp_path / "branch"
    assert main(["train", "--resume", str(finished_run), "--out", str(other),
                 "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"drop --out {other}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not other.exists()
    assert _run_files(finished_run) == before


@pytest.mark.parametrize("change, flag", [
    (["--depth", "3"], "--depth"),
    (["--padding", "valid"], "--padding"),
    (["--no-batch-norm"], "--batch-norm"),
    (["--lr", "0.5"], "--lr"),
])
def test_resume_refuses_to_change_the_model_or_the_data(finished_run, capsys, change, flag):
    before = _run_files(finished_run)
    assert main(["train", "--resume", str(finished_run), "--epochs", "2", "--quiet",
                 *change]) == 2
    err = capsys.readouterr().err
    assert f"cannot change {flag} " in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _run_files(finished_run) == before


def test_resume_may_repeat_the_stored_options(finished_run, capsys):
    """Giving an option with the value the run already has is no change: the error is
    only that the run is finished."""
    assert main(["train", "--resume", str(finished_run), "--depth", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot change" not in err and "already finished" in err


@pytest.mark.parametrize("epochs", [[], ["--epochs", "1"]])
def test_resuming_a_finished_run_needs_more_epochs(finished_run, capsys, epochs):
    before = _run_files(finished_run)
    assert main(["train", "--resume", str(finished_run), "--quiet", *epochs]) == 2
    err = capsys.readouterr().err
    assert "already finished its 1 epochs" in err and "--epochs N" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _run_files(finished_run) == before


def test_resume_validates_the_new_epochs(finished_run, capsys):
    assert main(["train", "--resume", str(finished_run), "--epochs", "-1", "--quiet"]) == 2
    assert "--epochs must be an integer >= 0, got -1" in capsys.readouterr().err


def test_predict_refuses_negative_class_values_before_writing(tmp_path, capsys):
    model = UNet(1, 2, 4, 1, "same", seed=0)
    path = tmp_path / "model.safetensors"
    save_model(path, model.state_dict(), config=model.config, class_values=[-1, 0])
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(path), "--out", str(out), str(image)]) == 2
    err = capsys.readouterr().err
    assert "[-1, 0]" in err and "[0, 65535]" in err and "Traceback" not in err
    assert not out.exists()


def test_predict_rejects_a_missing_image(tmp_path, capsys):
    run = _train(tmp_path, "run", "--epochs", "1")
    assert main(["predict", "--model", str(run / "model.safetensors"), "--out",
                 str(tmp_path / "p"), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_summary_prints_the_paper_network(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "572x572 -> output 388x388" in out
    assert "31,030,658" in out


def test_trace_writes_per_layer_rows_and_the_picture(tmp_path):
    run = _train(tmp_path, "run", "--epochs", "1", "--trace")
    with open(run / "trace.csv") as f:
        rows = list(csv.DictReader(f))
    layers = {r["layer"] for r in rows}
    steps = {r["step"] for r in rows}
    # 6 images: 5 for training in batches of 2 -> 3 steps
    assert len(rows) == len(layers) * len(steps) and steps == {"0", "1", "2"}
    assert {"encoder.0.conv1", "decoder.1.up", "head"} <= layers
    relu = [r for r in rows if r["kind"] == "ReLU"]
    assert all(0.0 <= float(r["dead_fraction"]) <= 1.0 for r in relu)
    conv = [r for r in rows if r["kind"] == "Conv2d"]
    assert all(float(r["update_ratio"]) > 0 and float(r["weight_grad_rms"]) > 0 for r in conv)
    with Image.open(run / "gradient_flow.png") as image:
        assert image.format == "PNG"
