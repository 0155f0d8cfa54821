"""Training curves, sample figures, the class palette and overlays."""

import numpy as np
import pytest
from PIL import Image

from scratchseg.training.plots import (
    colorize,
    outline_overlay,
    overlay,
    palette,
    plot_curves,
    plot_samples,
)


def history(num_epochs=4, with_validation=True):
    rows = []
    for epoch in range(num_epochs):
        validated = with_validation and epoch % 2 == 1
        rows.append(
            {
                "epoch": epoch,
                "train_loss": 1.0 / (epoch + 1),
                "val_loss": 1.2 / (epoch + 1) if validated else None,
                "val_pixel_acc": 0.8 + 0.02 * epoch if validated else float("nan"),
                "val_miou": np.float32(0.5) if validated else None,
                "val_dice": 0.6 if validated else None,
                "lr": 0.01 * 0.5**epoch,
                "seconds": 1.5,
            }
        )
    return rows


def assert_only_png(folder, name):
    assert [p.name for p in folder.iterdir()] == [name]
    with Image.open(folder / name) as picture:
        assert picture.format == "PNG"
        assert picture.size[0] > 0 and picture.size[1] > 0


@pytest.mark.parametrize("with_validation", [True, False])
def test_plot_curves_writes_a_png(tmp_path, with_validation):
    plot_curves(history(with_validation=with_validation), tmp_path / "curves.png")
    assert_only_png(tmp_path, "curves.png")
    with Image.open(tmp_path / "curves.png") as picture:
        width = picture.size[0]
    assert width == (1500 if with_validation else 1000), "one 500-pixel panel per plot"


def test_plot_curves_single_epoch_and_overwrite(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    plot_curves(history(num_epochs=1), path)
    assert_only_png(tmp_path, "curves.png")


def test_plot_curves_rejects_empty_history(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_curves([], tmp_path / "curves.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_samples_writes_a_png(tmp_path, channels):
    rng = np.random.default_rng(0)
    images = rng.random((2, channels, 20, 20)).astype(np.float32)
    truths = rng.integers(0, 3, (2, 12, 12))
    predictions = rng.integers(0, 3, (2, 12, 12))
    plot_samples(images, truths, predictions, tmp_path / "samples.png", num_classes=3)
    assert_only_png(tmp_path, "samples.png")


def test_plot_samples_rejects_unequal_lengths(tmp_path):
    masks = np.zeros((2, 4, 4), np.int64)
    with pytest.raises(ValueError, match="as many"):
        plot_samples(np.zeros((3, 1, 4, 4)), masks, masks, tmp_path / "s.png", num_classes=2)
    assert list(tmp_path.iterdir()) == []


def test_palette_is_fixed_and_distinct():
    colours = palette(300)
    assert colours.dtype == np.uint8 and colours.shape == (300, 3)
    assert len({tuple(c) for c in colours}) == 300
    assert colours[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    np.testing.assert_array_equal(palette(5), colours[:5])


def test_colorize():
    mask = np.array([[0, 1, 2], [2, 1, 0]])
    rgb = colorize(mask, 3)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb, palette(3)[mask])
    np.testing.assert_array_equal(colorize(mask, 3), rgb)
    ignored = colorize(np.array([[0, 255, -1]]), 3)
    assert ignored[0, 1].tolist() == ignored[0, 2].tolist() == [255, 255, 255]
    with pytest.raises(TypeError, match="integer"):
        colorize(mask.astype(np.float32), 3)
    with pytest.raises(ValueError, match="shape"):
        colorize(mask[None], 3)


def test_overlay_tints_foreground_only():
    image = np.full((1, 2, 2), 0.5, np.float32)
    image[0, 0, 0] = 1.0
    mask = np.array([[0, 1], [0, 1]])
    blended = overlay(image, mask, num_classes=2, alpha=0.5)
    assert blended.dtype == np.uint8 and blended.shape == (2, 2, 3)
    assert blended[0, 0].tolist() == [255, 255, 255]
    assert blended[1, 0].tolist() == [0, 0, 0]
    assert blended[0, 1].tolist() == [64, 0, 0]
    rgb = np.zeros((3, 2, 2), np.uint8)
    rgb[1] = 200
    assert overlay(rgb, mask, 2, alpha=0.0)[:, :, 1].tolist() == [[200, 200], [200, 200]]
    with pytest.raises(ValueError, match="same size"):
        overlay(image, np.zeros((3, 3), np.int64), 2)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, mask, 2, alpha=1.5)


def test_samples_add_a_column_of_outlined_objects(tmp_path):
    image = np.zeros((1, 16, 16), np.float32)
    mask = np.zeros((16, 16), np.int64)
    mask[2:7, 2:7], mask[8:14, 8:14] = 1, 2
    objects = (mask > 0).astype(np.int32) + (mask == 2)
    plot_samples([image], [mask], [mask], tmp_path / "three.png", 3)
    plot_samples([image], [mask], [mask], tmp_path / "four.png", 3, objects=[objects])
    with Image.open(tmp_path / "three.png") as three, Image.open(tmp_path / "four.png") as four:
        assert four.width > three.width * 1.2 and four.height == three.height
    outlined = outline_overlay(image, objects)
    assert (outlined[2, 2:7] != 0).any() and (outlined[4, 4] == 0).all()  # edge, not inside
