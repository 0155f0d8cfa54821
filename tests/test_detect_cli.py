"""`scratchseg detect train | predict | evaluate`: the three detectors from the command line,
resume, COCO files in and out, mAP against pycocotools, and clear errors."""

import contextlib
import io
import json

import numpy as np
import pytest
import tifffile

from scratchseg.cli import main
from scratchseg.detection.data import CocoDataset, SyntheticBoxes, write_coco
from scratchseg.detection.inference import evaluate_detection, load_detector
from scratchseg.detection.train import CHECKPOINT_FILE
from scratchseg.training.checkpoint import load_training_state

TINY = ["--num-samples", "6", "--val-samples", "3", "--size", "40", "--rois-per-image", "16",
        "--quiet"]


def _train(out, *extra):
    return main(["detect", "train", "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("fast") / "run"
    assert _train(run, "--model", "fast-rcnn", "--steps", "4", "--val-every", "2") == 0
    return run


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory):
    """Synthetic scenes written as COCO: train.json (8 images), test.json (4), TIFF images."""
    root = tmp_path_factory.mktemp("coco")
    write_coco(root / "train.json", list(SyntheticBoxes(8, 40, 1)), SyntheticBoxes.class_names)
    write_coco(root / "test.json", list(SyntheticBoxes(4, 40, 2)), SyntheticBoxes.class_names)
    return root


def test_a_run_writes_models_metrics_pictures_and_checkpoint(fast_run):
    names = {p.name for p in fast_run.iterdir()}
    assert {"model.safetensors", "model_best.safetensors", "metrics.csv", "detections.png",
            CHECKPOINT_FILE} <= names
    rows = (fast_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,train_loss,val_map50") and len(rows) == 3
    detector = load_detector(fast_run)
    assert detector.network.kind == "fast-rcnn"
    assert detector.class_names == ["background", "ellipse", "rectangle", "triangle"]


@pytest.mark.parametrize("model", ["rcnn", "faster-rcnn"])
def test_the_other_detectors_train_from_the_command_line(model, tmp_path):
    assert _train(tmp_path / "run", "--model", model, "--steps", "2") == 0
    assert load_detector(tmp_path / "run").network.kind == model


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path):
    assert _train(tmp_path / "whole", "--model", "faster-rcnn", "--steps", "4") == 0
    assert _train(tmp_path / "half", "--model", "faster-rcnn", "--steps", "2") == 0
    assert main(["detect", "train", "--resume", str(tmp_path / "half"), "--steps", "4",
                 "--quiet"]) == 0
    whole = load_training_state(tmp_path / "whole" / CHECKPOINT_FILE)
    half = load_training_state(tmp_path / "half" / CHECKPOINT_FILE)
    assert half["step"] == whole["step"] == 4
    for name, array in whole["extra"]["model"].items():
        np.testing.assert_array_equal(half["extra"]["model"][name], array, err_msg=name)


def test_resume_refuses_what_it_cannot_continue(fast_run, tmp_path, capsys):
    assert main(["detect", "train", "--resume", str(fast_run), "--model", "rcnn"]) == 2
    assert "--model (the run has 'fast-rcnn'" in capsys.readouterr().err
    assert main(["detect", "train", "--resume", str(fast_run), "--quiet"]) == 2
    assert "already finished its 4 steps" in capsys.readouterr().err
    assert main(["detect", "train", "--out", str(fast_run), *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["detect", "evaluate", "--model", str(fast_run), "--samples", "0"]) == 2
    assert "--samples must be an integer >= 1" in capsys.readouterr().err


def test_predict_draws_boxes_and_lists_them(fast_run, tmp_path, capsys):
    image = SyntheticBoxes(1, 40, 3)[0].image
    tifffile.imwrite(tmp_path / "scene.tif", image[0])
    out = tmp_path / "out"
    assert main(["detect", "predict", "--model", str(fast_run), "--out", str(out),
                 "--score-threshold", "0", "--quiet", str(tmp_path / "scene.tif")]) == 0
    assert "scene_detections.png" in capsys.readouterr().out
    from PIL import Image

    assert Image.open(out / "scene_detections.png").size[0] >= 256
    listed = json.loads((out / "detections.json").read_text())
    assert listed and set(listed[0]) == {"image", "box", "label", "score"}
    assert {row["label"] for row in listed} <= {"ellipse", "rectangle", "triangle"}


def test_an_8_bit_image_for_a_model_of_0_to_1_scenes_warns(fast_run, tmp_path):
    """The synthetic scenes are used as drawn (0..1); a PNG of 0..255 would detect nothing
    meaningful, and predict says so."""
    from PIL import Image

    from scratchseg.inference import IntensityWarning

    image = SyntheticBoxes(1, 40, 3)[0].image
    Image.fromarray((image[0] * 255).astype(np.uint8)).save(tmp_path / "scene.png")
    with pytest.warns(IntensityWarning, match="scene.png"):
        main(["detect", "predict", "--model", str(fast_run), "--out", str(tmp_path / "out"),
              "--quiet", str(tmp_path / "scene.png")])


def test_evaluate_prints_map_and_the_time_of_each_stage(fast_run, capsys):
    assert main(["detect", "evaluate", "--model", str(fast_run), "--samples", "5",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "mAP@0.5" in text and "proposals" in text and "triangle" in text
    assert main(["detect", "evaluate", "--model", str(fast_run), "--samples", "5", "--quiet",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 5 and set(result["seconds_per_image"]) == {
        "proposals", "cnn", "heads"}


def test_coco_json_trains_and_evaluate_agrees_with_pycocotools(coco_files, tmp_path):
    """The same detections scored by `detect evaluate` and by pycocotools' COCOeval."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from scratchseg.detection.data import write_coco_detections

    run = tmp_path / "run"
    assert main(["detect", "train", "--out", str(run), "--data",
                 str(coco_files / "train.json"), "--val-data", str(coco_files / "test.json"),
                 "--normalize", "none", "--steps", "30", "--rois-per-image", "16",
                 "--model", "fast-rcnn", "--quiet"]) == 0
    ours = evaluate_detection(run, str(coco_files / "test.json"))
    detector, test = load_detector(run), CocoDataset(coco_files / "test.json", normalize="none")
    found = [(s.image_id, tuple(detector.detect(s.image)[0])) for s in test]
    write_coco_detections(tmp_path / "found.json", found, test.category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(coco_files / "test.json"))
        evaluation = COCOeval(truth, truth.loadRes(str(tmp_path / "found.json")), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert ours["map50"] > 0.01  # some detections match: the comparison means something
    assert ours["map"] == pytest.approx(evaluation.stats[0], abs=1e-12)
    assert ours["map50"] == pytest.approx(evaluation.stats[1], abs=1e-12)
    assert ours["map75"] == pytest.approx(evaluation.stats[2], abs=1e-12)


@pytest.mark.parametrize("argv, message", [
    (["detect", "train", "--data", "missing.json", "--out", "r"], "missing.json"),
    (["detect", "train", "--model", "yolo", "--out", "r"], "invalid choice"),
    (["detect", "train", "--steps", "0", "--out", "r"], "--steps must be an integer >= 1"),
    (["detect", "train"], "--out RUN_DIR is required"),
    (["detect", "evaluate", "--model", "nothing.safetensors"], "model file not found"),
    (["detect", "evaluate", "--model", "."], "without model_best"),
    (["detect", "predict", "--model", "RUN", "--out", "o", "nowhere.png"], ""),
])
def test_bad_input_is_one_clear_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_unet_file_is_not_a_detector(tmp_path, capsys):
    from scratchseg.nn import UNet
    from scratchseg.training.checkpoint import save_model

    model = UNet(1, 2, 2, 1, "same")
    save_model(tmp_path / "unet.safetensors", model.state_dict(), config=model.config,
               class_values=[0, 1])
    assert main(["detect", "evaluate", "--model", str(tmp_path / "unet.safetensors")]) == 2
    assert "expected a 'scratchseg-detector' file" in capsys.readouterr().err


def test_a_coco_file_without_val_data_holds_out_every_fifth_image(tmp_path):
    from scratchseg.detection.options import DetectOptions
    from scratchseg.detection.train import load_datasets

    for count, sizes in ((7, (6, 1)), (3, (3, 3))):  # under 5 images: validate on them all
        path = tmp_path / f"{count}.json"
        write_coco(path, list(SyntheticBoxes(count, 40, 1)), SyntheticBoxes.class_names)
        train, val = load_datasets(DetectOptions(data=str(path), normalize="none"))
        assert (len(train), len(val)) == sizes
        assert train.class_names == val.class_names == SyntheticBoxes.class_names
        names = {s.name for s in train}, {s.name for s in val}
        assert (names[0] & names[1]) == (names[1] if count < 5 else set())
