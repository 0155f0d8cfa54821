"""Training on your own images: run length, validation, best model, losses, class weights,
ignored pixels, normalisation, and the defects users met (each test names the one it guards)."""

import csv
import os
import stat
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

import scratchseg
from scratchseg.cli import main
from scratchseg.data import FolderDataset, Sample
from scratchseg.inference import IntensityWarning
from scratchseg.training import loop
from scratchseg.training.checkpoint import load_training_state
from scratchseg.training.loop import Trainer
from scratchseg.training.objective import class_weights, pixel_weights
from scratchseg.training.options import TrainOptions
from scratchseg.training.split import held_out_regions, split_dataset

SMALL = ["--base-channels", "4", "--depth", "2", "--tile", "16", "--batch-size", "4",
         "--warmup-steps", "0", "--quiet"]


def _nuclei(rng, height, width, count=6):
    """A dark image with bright disks (uint8) and its 0/1 mask."""
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    for _ in range(count):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(3, 7)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    image = 30 + 150 * mask + rng.normal(0, 8, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _folder(root, shapes, *, seed=0, mask_values=(0, 1), image_ext=".png"):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (height, width) in enumerate(shapes):
        image, mask = _nuclei(rng, height, width)
        Image.fromarray(image).save(root / "images" / f"img{i}{image_ext}", quality=95)
        Image.fromarray(np.asarray(mask_values, np.uint8)[mask]).save(
            root / "masks" / f"img{i}.png")
    return root


def _options(data, **kwargs):
    settings = dict(data=str(data), base_channels=4, depth=2, tile=16, batch_size=4,
                    warmup_steps=0)
    return TrainOptions(**{**settings, **kwargs})


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


# -- the length of a run ----------------------------------------------------------------

def test_an_epoch_covers_each_image_area_about_once(tmp_path):
    data = _folder(tmp_path / "data", [(256, 384), (256, 384)])
    trainer = Trainer(_options(data, tile=64, batch_size=8, val_fraction=0.0), tmp_path / "r")
    assert trainer.tile_counts == [24, 24]  # 256 * 384 / 64^2
    assert (trainer.tiles_per_epoch, trainer.steps_per_epoch) == (48, 6)
    assert trainer.epochs == 84  # about 500 steps
    assert trainer.val_every == 6  # about 15 validations
    override = Trainer(_options(data, tile=64, batch_size=8, tiles_per_epoch=20, epochs=3,
                                val_fraction=0.0), tmp_path / "r2")
    assert (override.steps_per_epoch, override.epochs, override.val_every) == (3, 3, 1)


def test_a_small_dataset_still_fills_a_batch(tmp_path):
    data = _folder(tmp_path / "data", [(20, 20)])
    trainer = Trainer(_options(data, batch_size=8, val_fraction=0.0), tmp_path / "r")
    assert trainer.tiles_per_epoch == 8 and trainer.steps_per_epoch == 1


def test_validation_and_files_every_n_epochs_and_after_the_last(tmp_path):
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "5",
                 "--val-every", "2"]) == 0
    assert [r["epoch"] for r in _rows(run)] == ["2", "4", "5"]
    assert load_training_state(run / "checkpoint.safetensors")["epoch"] == 5


def test_the_best_epoch_model_is_kept_beside_the_last(tmp_path, monkeypatch):
    """Defect: validation swung from epoch to epoch and only the last model was kept."""
    scores = iter([0.5, 0.9, 0.7])
    monkeypatch.setattr(loop, "mean_iou", lambda cm: next(scores))
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "3",
                 "--val-every", "1"]) == 0
    steps = load_training_state(run / "checkpoint.safetensors")["step"]
    best = scratchseg.load_model(run / "model_best.safetensors")
    last = scratchseg.load_model(run / "model.safetensors")
    assert scratchseg.inference.model_file(run) == run / "model_best.safetensors"
    from safetensors.numpy import load_file
    counters = [int(v) for k, v in load_file(run / "model_best.safetensors").items()
                if k.endswith("num_batches_tracked")]
    assert set(counters) == {2 * steps // 3}  # written after epoch 2, the best
    assert best.class_values == last.class_values == [0, 1]


# -- validation data ---------------------------------------------------------------------

def test_few_images_validate_on_held_out_regions(tmp_path):
    dataset = FolderDataset(_folder(tmp_path / "data", [(40, 30), (20, 50)]))
    train, val = split_dataset(dataset, 0.2, seed=0)
    assert len(train) == len(val) == 2
    assert [train[i].mask.shape for i in range(2)] == [(32, 30), (20, 40)]
    assert [val[i].mask.shape for i in range(2)] == [(8, 30), (20, 10)]
    assert val[0].name == "img0:val" and train[1].name == "img1:train"
    np.testing.assert_array_equal(np.concatenate([train[0].image, val[0].image], axis=1),
                                  dataset[0].image)
    assert val.num_classes == dataset.num_classes and val.in_channels == 1


def test_many_images_validate_on_held_out_images(tmp_path):
    dataset = FolderDataset(_folder(tmp_path / "data", [(24, 24)] * 10))
    train, val = split_dataset(dataset, 0.2, seed=0)
    assert (len(train), len(val)) == (8, 2)
    assert train[0].mask.shape == (24, 24)


def test_held_out_regions_keep_at_least_a_row_on_each_side():
    dataset = [Sample(np.zeros((1, 2, 2), np.float32), np.zeros((2, 2), np.int64), None, "a")]
    train, val = held_out_regions(dataset, 0.9)
    assert train[0].mask.shape == val[0].mask.shape == (1, 2)


def test_val_data_is_a_separate_folder(tmp_path):
    data = _folder(tmp_path / "data", [(32, 32)] * 2)
    val = _folder(tmp_path / "val", [(32, 32)] * 3, seed=1)
    trainer = Trainer(_options(data, val_data=str(val)), tmp_path / "r")
    assert len(trainer.train_set) == 2 and len(trainer.val_set) == 3
    assert trainer.train_set[0].mask.shape == (32, 32)  # nothing held out of --data


# -- what a step minimises ---------------------------------------------------------------

def test_balanced_class_weights_give_each_class_the_same_total_weight(tmp_path):
    dataset = FolderDataset(_folder(tmp_path / "data", [(40, 40)] * 3))
    weights = class_weights("balanced", dataset)
    counts = sum(np.bincount(dataset[i].mask.ravel(), minlength=2) for i in range(3))
    np.testing.assert_allclose(weights[0] * counts[0], weights[1] * counts[1], rtol=1e-5)
    np.testing.assert_allclose((weights * counts).sum() / counts.sum(), 1.0, rtol=1e-5)
    assert class_weights("none", dataset) is None
    np.testing.assert_array_equal(class_weights("1,4", dataset), [1, 4])
    with pytest.raises(ValueError, match="3 weights but the masks hold 2 classes"):
        class_weights("1,2,3", dataset)


def test_ignored_pixels_weigh_nothing():
    labels = np.array([[0, 1, -1]])
    out, weights = pixel_weights(labels, None, np.array([1.0, 3.0], np.float32))
    np.testing.assert_array_equal(out, [[0, 1, 0]])
    np.testing.assert_array_equal(weights, [[1, 3, 0]])
    assert pixel_weights(np.array([[0, 1]]), None, None)[1] is None


def test_ignore_value_trains_and_counts_in_no_metric(tmp_path):
    data = _folder(tmp_path / "data", [(32, 32)] * 5, mask_values=(0, 255))
    mask = np.asarray(Image.open(data / "masks" / "img0.png"))
    mask = mask.copy()
    mask[:4] = 7  # a "void" band
    Image.fromarray(mask).save(data / "masks" / "img0.png")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1",
                 "--ignore-value", "7"]) == 0
    assert scratchseg.load_model(run).class_values == [0, 255]
    assert main(["evaluate", "--model", str(run), "--data", str(data)]) == 0


@pytest.mark.parametrize("loss", ["dice", "ce+dice"])
def test_dice_losses_train(tmp_path, loss):
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "2",
                 "--loss", loss, "--class-weights", "balanced"]) == 0
    losses = [float(r["train_loss"]) for r in _rows(run)]
    assert all(np.isfinite(losses)) and losses[-1] < (2.0 if loss == "ce+dice" else 1.0)


# -- normalisation -----------------------------------------------------------------------

def test_the_normalisation_travels_with_the_model(tmp_path):
    """Defect: 12-bit images in 16-bit files were divided by 65535 and trained to nothing,
    and a model trained on 8-bit images predicted background on 12-bit ones."""
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "2"]) == 0
    model = scratchseg.load_model(run)
    assert model.reading["normalize"] == "percentile"
    image8 = np.asarray(Image.open(data / "images" / "img0.png"))
    image12 = image8.astype(np.uint16) * 16
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntensityWarning)
        np.testing.assert_array_equal(model.predict(image8), model.predict(image12))


def test_predicting_far_outside_the_training_range_warns_once_per_image(tmp_path):
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1",
                 "--normalize", "none"]) == 0
    image12 = np.asarray(Image.open(data / "images" / "img0.png")).astype(np.uint16) * 16
    tifffile.imwrite(tmp_path / "a.tif", image12)
    tifffile.imwrite(tmp_path / "b.tif", image12)
    with pytest.warns(IntensityWarning) as caught:
        list(scratchseg.inference.predict_files(run, [tmp_path / "a.tif", tmp_path / "b.tif"],
                                                tmp_path / "out"))
    assert len(caught) == 2 and "a.tif" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntensityWarning)
        scratchseg.load_model(run).predict(np.asarray(Image.open(data / "images" / "img1.png")))


# -- defects users met -------------------------------------------------------------------

def test_jpeg_images_train_and_evaluate(tmp_path):
    """Defect: .jpg images were ignored by train and evaluate ("no matching image")."""
    data = _folder(tmp_path / "data", [(32, 32)] * 5, image_ext=".jpg")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1"]) == 0
    assert main(["evaluate", "--model", str(run), "--data", str(data)]) == 0


def test_mask_suffix_pairs_carvana_style_names(tmp_path):
    """Defect: x.jpg with x_mask.gif could not be paired."""
    data = _folder(tmp_path / "data", [(32, 32)] * 5, image_ext=".jpg")
    for mask in sorted((data / "masks").iterdir()):
        Image.open(mask).save(mask.with_name(f"{mask.stem}_mask.gif"))
        mask.unlink()
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1",
                 "--mask-suffix", "_mask"]) == 0
    assert main(["evaluate", "--model", str(run), "--data", str(data)]) == 0  # the run's suffix


def test_macos_resource_files_are_skipped(tmp_path, capsys):
    """Defect: macOS ._x.png files stopped evaluate."""
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1"]) == 0
    for folder in ("images", "masks"):
        (data / folder / "._img0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert main(["evaluate", "--model", str(run), "--data", str(data)]) == 0
    assert "images 5" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    data = _folder(root / "data", [(32, 32)] * 5)
    run = root / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1"]) == 0
    return run, data


def test_predict_refuses_to_overwrite_its_input(trained_run, capsys):
    """Defect: predict --out . could overwrite its own input image."""
    run, data = trained_run
    image = data / "images" / "img0.png"
    before = image.read_bytes()
    assert main(["predict", "--model", str(run), "--out", str(image.parent), str(image)]) == 2
    assert "would overwrite this input image" in capsys.readouterr().err
    assert image.read_bytes() == before


def test_predict_refuses_inputs_that_share_a_stem(trained_run, tmp_path, capsys):
    """Defect: two inputs with the same stem overwrote each other's output."""
    run, data = trained_run
    other = tmp_path / "other"
    other.mkdir()
    copy = other / "img0.png"
    copy.write_bytes((data / "images" / "img0.png").read_bytes())
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run), "--out", str(out),
                 str(data / "images" / "img0.png"), str(copy)]) == 2
    assert "share the stem 'img0'" in capsys.readouterr().err
    assert not out.exists()


def test_predict_lists_what_it_wrote_before_an_error(trained_run, tmp_path, capsys):
    """Defect: on an error predict did not list the files it had already written."""
    run, data = trained_run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run), "--out", str(out), "--quiet",
                 str(data / "images" / "img0.png"), str(broken)]) == 2
    captured = capsys.readouterr()
    assert str(out / "img0.png") in captured.out
    assert "broken.png" in captured.err and "1 file(s) listed above" in captured.err


def test_predict_shows_progress(trained_run, tmp_path, capsys):
    """Defect: predict showed no progress."""
    run, data = trained_run
    images = [str(p) for p in sorted((data / "images").iterdir())]
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "out"), *images]) == 0
    assert "5/5" in capsys.readouterr().err


def test_predict_takes_a_run_folder_as_model(trained_run, tmp_path, capsys):
    """Defect: predict --model RUN_DIR said "No such device (os error 19)"."""
    run, data = trained_run
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "out"), "--quiet",
                 str(data / "images" / "img0.png")]) == 0
    assert main(["predict", "--model", str(tmp_path), "--out", str(tmp_path / "o"),
                 str(data / "images" / "img0.png")]) == 2
    assert "folder without model_best.safetensors or model.safetensors" in \
        capsys.readouterr().err


def test_the_channel_error_names_the_file(trained_run, tmp_path, capsys):
    """Defect: the channel error named no file."""
    run, _ = trained_run
    rgb = tmp_path / "colour.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(rgb)
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "o"), str(rgb)]) == 2
    err = capsys.readouterr().err
    assert "colour.png" in err and "1-channel" in err


def test_load_model_predicts_what_the_command_writes(trained_run, tmp_path):
    run, data = trained_run
    image_path = data / "images" / "img0.png"
    assert main(["predict", "--model", str(run), "--out", str(tmp_path), "--quiet",
                 str(image_path)]) == 0
    written = np.asarray(Image.open(tmp_path / "img0.png"))
    image = np.asarray(Image.open(image_path))
    model = scratchseg.load_model(run)
    np.testing.assert_array_equal(model.predict(image), written)
    np.testing.assert_array_equal(model.predict(image[None]), written)
    probabilities = model.probabilities(image)
    assert probabilities.shape == (2, 32, 32)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1, rtol=1e-5)


def test_model_files_are_readable_by_others(trained_run):
    """Defect: model files were written with mode 0600."""
    run, _ = trained_run
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "model_best.safetensors", "checkpoint.safetensors"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask, name


def test_resume_works_from_another_folder(tmp_path, monkeypatch):
    """Defect: --resume failed outside the first working directory (relative data path)."""
    _folder(tmp_path / "data", [(32, 32)] * 5)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "data", "--out", "run", *SMALL, "--epochs", "1"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 0
    assert len(_rows(tmp_path / "run")) == 2


def test_a_huge_learning_rate_stops_with_one_clear_message(tmp_path, capfd):
    """Defect: --lr 1000 printed seven raw NumPy warnings and no hint."""
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *SMALL,
                 "--epochs", "3", "--lr", "1000"])
    err = capfd.readouterr().err
    assert code == 2 and "lower --lr" in err
    assert "Warning" not in err, err


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "summary", "gradcheck",
                                     "bench"])
def test_help_shows_the_defaults(command, capsys):
    """Defect: --help showed no defaults."""
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default:" in out and "(default: None)" not in out


def test_palette_masks_come_back_as_palette_pngs(tmp_path):
    """Defect: palette-PNG masks came back as grayscale 0/1/2, which looks black."""
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    colours = [0, 0, 0, 200, 30, 30] + [0] * (256 * 3 - 6)
    for mask_path in (data / "masks").iterdir():
        mask = Image.fromarray(np.asarray(Image.open(mask_path)))
        mask.putpalette(colours)
        mask.save(mask_path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1"]) == 0
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run), "--out", str(out), "--quiet",
                 str(data / "images" / "img0.png")]) == 0
    with Image.open(out / "img0.png") as written:
        assert written.mode == "P"
        assert written.getpalette()[:6] == colours[:6]


def test_rgb_colour_masks_come_back_in_their_colours(tmp_path):
    data = _folder(tmp_path / "data", [(32, 32)] * 5)
    colours = np.array([[10, 20, 30], [250, 128, 0]], np.uint8)
    for mask_path in (data / "masks").iterdir():
        Image.fromarray(colours[np.asarray(Image.open(mask_path))]).save(mask_path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL, "--epochs", "1"]) == 0
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run), "--out", str(out), "--quiet",
                 str(data / "images" / "img0.png")]) == 0
    written = np.asarray(Image.open(out / "img0.png"))
    assert written.shape == (32, 32, 3)
    assert {tuple(c) for c in written.reshape(-1, 3)} <= {(10, 20, 30), (250, 128, 0)}


def test_export_writes_an_onnx_file_that_runs(trained_run, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime")
    run, data = trained_run
    target = tmp_path / "model.onnx"
    assert main(["export", "--model", str(run), "--onnx", str(target)]) == 0
    model = scratchseg.load_model(run)
    image = model.prepare(np.asarray(Image.open(data / "images" / "img0.png")))
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": image[None]})
    with scratchseg.no_grad():
        expected = model.network.forward(image[None])
    assert np.abs(logits - expected).max() <= 1e-4


def test_a_tiff_stack_trains_page_by_page_and_predicts_a_mask_per_page(tmp_path):
    """ISBI 2012's layout: train-volume.tif with train-labels.tif, one sample per page."""
    rng = np.random.default_rng(0)
    pages = [_nuclei(rng, 32, 32) for _ in range(4)]
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    volume = tmp_path / "data" / "images" / "train.tif"
    tifffile.imwrite(volume, np.stack([image for image, _ in pages]), photometric="minisblack")
    tifffile.imwrite(tmp_path / "data" / "masks" / "train.tif",
                     np.stack([mask * 255 for _, mask in pages]), photometric="minisblack")
    dataset = FolderDataset(tmp_path / "data")
    assert dataset.names == ["train[0]", "train[1]", "train[2]", "train[3]"]
    assert dataset.in_channels == 1 and dataset.class_values == [0, 255]
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), *SMALL,
                 "--epochs", "1"]) == 0
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run), "--out", str(out), "--quiet", str(volume)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"train_{i:03d}.png" for i in range(4)]
    assert set(np.unique(np.asarray(Image.open(out / "train_002.png")))) <= {0, 255}
