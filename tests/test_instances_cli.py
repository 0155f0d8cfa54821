"""Instance segmentation through the command line: --target boundary, predict --instances,
evaluate --instances."""

import json

import numpy as np
import pytest
from PIL import Image

import scratchseg
from scratchseg.cli import main
from scratchseg.data import SyntheticShapes, write_labels
from scratchseg.data.targets import BoundaryTargets, boundary_target
from scratchseg.inference import TrainedModel
from scratchseg.nn import UNet

SMALL = ["--base-channels", "4", "--depth", "2", "--tile", "32", "--batch-size", "4",
         "--warmup-steps", "0", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A folder of synthetic images with their instance ids as 16-bit masks."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    dataset = SyntheticShapes(6, 64, seed=5)
    for i in range(len(dataset)):
        sample = dataset[i]
        Image.fromarray((sample.image[0] * 255).astype(np.uint8)).save(
            root / "images" / f"s{i}.png")
        write_labels(root / "masks" / f"s{i}.png", sample.instances)
    return root


@pytest.fixture(scope="module")
def boundary_run(labelled, tmp_path_factory):
    run = tmp_path_factory.mktemp("boundary") / "run"
    assert main(["train", "--data", str(labelled), "--out", str(run), *SMALL,
                 "--masks", "instances", "--target", "boundary"]) == 0
    return run


def test_a_boundary_model_learns_three_classes(boundary_run):
    model = scratchseg.load_model(boundary_run)
    assert model.class_values == [0, 1, 2]
    assert model.reading["target"] == "boundary" and model.network.config["num_classes"] == 3


def test_the_boundary_target_needs_instance_masks(labelled, tmp_path, capsys):
    assert main(["train", "--data", str(labelled), "--out", str(tmp_path / "r"), *SMALL,
                 "--masks", "classes", "--target", "boundary"]) == 2
    assert "--masks instances" in capsys.readouterr().err


def test_boundary_targets_wrap_a_dataset():
    dataset = SyntheticShapes(2, 48, seed=1)
    wrapped = BoundaryTargets(dataset)
    np.testing.assert_array_equal(wrapped[1].mask, boundary_target(dataset[1].instances))
    assert (wrapped.num_classes, wrapped.in_channels, len(wrapped)) == (3, 1, 2)


def test_predict_writes_16_bit_labels_and_outlines(boundary_run, labelled, tmp_path, capsys):
    out = tmp_path / "out"
    image = labelled / "images" / "s0.png"
    assert main(["predict", "--model", str(boundary_run), "--out", str(out), "--quiet",
                 "--instances", "--overlay", "--min-size", "3", str(image)]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["s0.png", "s0_instances.png",
                                                       "s0_overlay.png"]
    with Image.open(out / "s0_instances.png") as labels:
        assert labels.mode in ("I;16", "I") and labels.size == (64, 64)
        ids = np.unique(np.asarray(labels))
    assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))  # 1..K consecutive


def test_instances_follow_the_models_target():
    classes = np.zeros((12, 20), np.int64)
    classes[2:10, 2:18] = 2  # one foreground blob: boundary ring ...
    classes[4:8, 4:8], classes[4:8, 12:16] = 1, 1  # ... around two interiors
    network = UNet(1, 3, 4, 1, "same", seed=0)
    boundary = TrainedModel(network, [0, 1, 2], {"target": "boundary"})
    semantic = TrainedModel(network, [0, 1, 2], {"target": "semantic"})
    assert boundary.instances(classes).max() == 2  # the watershed splits at the seeds
    assert semantic.instances(np.minimum(classes, 1)).max() == 1  # components do not
    assert boundary.instances(classes, min_size=10**6).max() == 0
    touching = np.zeros((6, 10), np.int64)
    touching[1:5, 1:5], touching[1:5, 5:9] = 1, 2  # two classes side by side
    assert semantic.instances(touching).max() == 2  # one object per class's component


def test_evaluate_instances_reports_every_threshold(boundary_run, labelled, capsys):
    assert main(["evaluate", "--model", str(boundary_run), "--data", str(labelled),
                 "--instances", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["threshold"] for row in result["per_threshold"]] == \
        [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert result["n_images"] == 6 and len(result["images"]) == 6
    assert result["images"][0]["name"] == "s0"
    assert result["n_true"] == sum(len(np.unique(np.asarray(Image.open(p)))) - 1
                                   for p in sorted((labelled / "masks").iterdir()))
    for key in ("mean_ap", "pq", "sq", "rq"):
        assert 0.0 <= result[key] <= 1.0
    assert main(["evaluate", "--model", str(boundary_run), "--data", str(labelled),
                 "--instances"]) == 0
    table = capsys.readouterr().out
    assert "mean AP (DSB 2018)" in table and "0.95" in table
    assert main(["evaluate", "--model", str(boundary_run), "--data", str(labelled)]) == 0
