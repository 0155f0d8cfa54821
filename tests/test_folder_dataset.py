"""FolderDataset on real folders: pairing, stacks, channels, mask styles and modes, the checks."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import disks
from PIL import Image

from scratchseg.data import (
    IGNORE_INDEX,
    FolderDataset,
    MaskStyle,
    SyntheticShapes,
    normalize_image,
)

STARDIST = Path("/work/dl/sd/stardist/data/images")


def save(path, array, **options):
    """PNG, JPEG, GIF, BMP through Pillow, TIFF through tifffile, by the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **options)
    else:
        Image.fromarray(array).save(path, **options)
    return path


def make_folder(root, pairs, mask_suffix=""):
    """pairs: {stem: (image array, image ext, mask array, mask ext)}; None leaves one out."""
    for stem, (image, image_ext, mask, mask_ext) in pairs.items():
        if image is not None:
            save(root / "images" / f"{stem}{image_ext}", image)
        if mask is not None:
            save(root / "masks" / f"{stem}{mask_suffix}{mask_ext}", mask)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def binary(rng, shape=(6, 8), high=255):
    mask = rng.choice([0, high], size=shape).astype(np.uint8)
    mask[0, :2] = [0, high]
    return mask


def test_binary_masks_map_to_classes_and_images_are_normalised(tmp_path, rng):
    pairs = {}
    for stem, ext in (("b", ".png"), ("a", ".tif"), ("c", ".png")):
        image = rng.integers(0, 4096, size=(6, 8)).astype(np.uint16)
        pairs[stem] = (image, ext, binary(rng), ext)
    ds = FolderDataset(make_folder(tmp_path, pairs))
    assert len(ds) == 3 and ds.normalize == "percentile"
    assert ds.class_values == [0, 255] and ds.num_classes == 2 and ds.in_channels == 1
    assert ds.mask_style == MaskStyle("gray") and ds.instances is None
    assert [ds[i].name for i in range(3)] == ["a", "b", "c"]  # sorted by stem
    assert ds.image_files == [tmp_path / "images" / n for n in ("a.tif", "b.png", "c.png")]
    for i, stem in enumerate(["a", "b", "c"]):
        image, _, mask, _ = pairs[stem]
        sample = ds[i]
        assert sample.image.dtype == np.float32 and sample.instances is None
        np.testing.assert_array_equal(sample.image,
                                      normalize_image(image[None].astype(np.float32)))
        np.testing.assert_array_equal(sample.mask, (mask == 255).astype(np.int64))


@pytest.mark.parametrize("mode", ["none", "minmax"])
def test_normalize_option(tmp_path, rng, mode):
    image = np.array([[-300, 0, 5], [7, 1000, 3]], dtype=np.int16)
    root = make_folder(tmp_path, {"a": (image, ".tif", binary(rng, (2, 3), 1), ".png")})
    ds = FolderDataset(root, normalize=mode)
    expected = image if mode == "none" else (image + 300) / 1300
    np.testing.assert_allclose(ds[0].image[0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="normalize"):
        FolderDataset(root, normalize="zscore")


def test_many_values_and_given_class_values(tmp_path, rng):
    masks = [rng.choice([3, 10, 40], size=(4, 5)).astype(np.uint8) for _ in range(2)]
    masks[1][0, 0] = 77  # a value only one mask holds
    pairs = {f"s{k}": (np.zeros((4, 5), np.uint8), ".png", m, ".png")
             for k, m in enumerate(masks)}
    root = make_folder(tmp_path, pairs)
    ds = FolderDataset(root)
    assert ds.class_values == [3, 10, 40, 77] and ds.num_classes == 4
    lookup = {3: 0, 10: 1, 40: 2, 77: 3}
    for i in range(2):
        np.testing.assert_array_equal(ds[i].mask, np.vectorize(lookup.get)(masks[i]))
    given = FolderDataset(root, class_values=[77, 40, 10, 3, 99])
    assert given.class_values == [77, 40, 10, 3, 99] and given.num_classes == 5
    np.testing.assert_array_equal(given[1].mask,
                                  np.vectorize({77: 0, 40: 1, 10: 2, 3: 3}.get)(masks[1]))
    with pytest.raises(ValueError, match=r"s1.png: mask value\(s\) \[77\]"):
        FolderDataset(root, class_values=[3, 10, 40])


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".gif", ".tif"])
def test_each_image_format(tmp_path, rng, ext):
    image = rng.integers(0, 256, size=(6, 8), dtype=np.uint8)
    ds = FolderDataset(make_folder(tmp_path, {"a": (image, ext, binary(rng), ".png")}),
                       normalize="none")
    assert ds[0].image.shape == (1, 6, 8)
    if ext != ".jpg":
        np.testing.assert_array_equal(ds[0].image[0], image)


def test_rgb_and_rgba_images(tmp_path, rng):
    pairs = {s: (rng.integers(0, 256, size=(4, 5, c), dtype=np.uint8), ".png",
                 binary(rng, (4, 5)), ".png") for s, c in (("x", 3), ("y", 4))}
    ds = FolderDataset(make_folder(tmp_path, pairs))
    assert ds.in_channels == 3
    assert ds[0].image.shape == (3, 4, 5) and ds[1].image.shape == (3, 4, 5)


def test_mixed_channel_counts_name_a_file_of_each(tmp_path, rng):
    mask = binary(rng, (2, 2))
    pairs = {"a": (np.zeros((2, 2), np.uint8), ".png", mask, ".png"),
             "b": (np.zeros((2, 2, 3), np.uint8), ".png", mask, ".png")}
    with pytest.raises(ValueError, match=r"images/b.png has 3 channels but .*images/a.png has 1"):
        FolderDataset(make_folder(tmp_path, pairs))


def test_mismatched_mask_size_names_both_files(tmp_path, rng):
    pairs = {"one": (np.zeros((4, 6), np.uint8), ".png", binary(rng, (4, 5)), ".tif"),
             "two": (np.zeros((4, 6), np.uint8), ".png", binary(rng, (4, 6)), ".png")}
    with pytest.raises(ValueError, match=r"one.tif: mask is 5x4 but .*one.png is 6x4"):
        FolderDataset(make_folder(tmp_path, pairs))


def test_missing_partners_name_the_file_and_stem(tmp_path, rng):
    mask = binary(rng, (1, 2))
    pairs = {"ok": (np.zeros((1, 2), np.uint8), ".png", mask, ".png"),
             "lonely": (np.zeros((1, 2), np.uint8), ".png", None, None)}
    with pytest.raises(ValueError, match="lonely.png: no mask with the stem 'lonely'"):
        FolderDataset(make_folder(tmp_path / "a", pairs))
    pairs["lonely"] = (None, None, mask, ".tiff")
    with pytest.raises(ValueError, match="lonely.tiff: no image with the stem 'lonely'"):
        FolderDataset(make_folder(tmp_path / "b", pairs))


def test_mask_suffix_pairs_carvana_style_files(tmp_path, rng):
    """Carvana: images/car.jpg with masks/car_mask.gif."""
    pairs = {f"car{k}": (rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8), ".jpg",
                         binary(rng), ".gif") for k in range(2)}
    root = make_folder(tmp_path, pairs, mask_suffix="_mask")
    ds = FolderDataset(root, mask_suffix="_mask")
    assert len(ds) == 2 and ds.in_channels == 3 and ds.class_values == [0, 1]
    assert ds.mask_style.kind == "palette"
    np.testing.assert_array_equal(ds[1].mask, pairs["car1"][2] // 255)
    with pytest.raises(ValueError, match=r"car0.jpg: no mask with the stem 'car0'.*"
                                         r"car0_mask.gif would pair with --mask-suffix _mask"):
        FolderDataset(root)
    with pytest.raises(ValueError, match="no mask with the stem 'car0-m'"):
        FolderDataset(root, mask_suffix="-m")


def test_hidden_and_other_files_are_skipped(tmp_path, rng):
    mask = binary(rng)
    root = make_folder(tmp_path, {"a": (np.zeros((6, 8), np.uint8), ".png", mask, ".png")})
    for folder in ("images", "masks"):
        (root / folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        (root / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (root / folder / "notes.txt").write_text("labelled by hand")
    assert len(FolderDataset(root)) == 1


def test_two_images_with_one_stem_name_both(tmp_path, rng):
    root = make_folder(tmp_path, {"a": (np.zeros((6, 8), np.uint8), ".png", binary(rng),
                                        ".png")})
    save(root / "images" / "a.tif", np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match=r"a.png and .*a.tif share the stem 'a'"):
        FolderDataset(root)


def test_jpeg_mask_is_refused(tmp_path, rng):
    root = make_folder(tmp_path, {"a": (np.zeros((6, 8), np.uint8), ".png", binary(rng),
                                        ".jpg")})
    with pytest.raises(ValueError, match="a.jpg: a mask cannot be JPEG: lossy compression"):
        FolderDataset(root)


def test_stack_with_a_mask_stack_gives_one_sample_per_page(tmp_path, rng):
    """ISBI 2012: train-volume.tif and its labels, renamed to the same stem."""
    volume = rng.integers(0, 256, size=(4, 6, 8), dtype=np.uint8)
    labels = np.stack([binary(rng) for _ in range(4)])
    root = tmp_path
    save(root / "images" / "volume.tif", volume, photometric="minisblack")
    save(root / "masks" / "volume.tif", labels, photometric="minisblack")
    ds = FolderDataset(root, normalize="none")
    assert [s.name for s in ds] == [f"volume[{i}]" for i in range(4)]
    assert ds.in_channels == 1 and ds.class_values == [0, 255]
    for i in range(4):
        np.testing.assert_array_equal(ds[i].image[0], volume[i])
        np.testing.assert_array_equal(ds[i].mask, labels[i] // 255)
    save(root / "masks" / "volume.tif", labels[:3], photometric="minisblack")
    with pytest.raises(ValueError, match=r"volume.tif holds 4 pages but .*volume.tif holds 3"):
        FolderDataset(root)


def test_stack_with_one_mask_page_is_one_multichannel_image(tmp_path, rng):
    channels = rng.integers(0, 256, size=(3, 6, 8), dtype=np.uint8)
    root = make_folder(tmp_path, {"a": (None, None, binary(rng), ".png")})
    save(root / "images" / "a.tif", channels, photometric="minisblack")
    ds = FolderDataset(root, normalize="none")
    assert len(ds) == 1 and ds.in_channels == 3 and ds.names == ["a"]
    np.testing.assert_array_equal(ds[0].image, channels)
    save(root / "images" / "a.tif", channels, photometric="minisblack", metadata={"axes": "ZYX"})
    with pytest.raises(ValueError, match="holds 3 pages but"):
        FolderDataset(root)  # the axes say pages: three pages cannot share one mask


def test_palette_masks_give_the_dataset_their_style(tmp_path, rng):
    colours = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    root = make_folder(tmp_path, {s: (np.zeros((4, 5), np.uint8), ".png", None, None)
                                  for s in ("a", "b")})
    for stem in ("a", "b"):
        picture = Image.fromarray(rng.integers(0, 3, size=(4, 5)).astype(np.uint8))
        picture.putpalette([c for colour in colours for c in colour])
        picture.save(root / "masks" / f"{stem}.png")
    ds = FolderDataset(root)
    assert ds.mask_style == MaskStyle("palette", tuple(colours)) and ds.class_values == [0, 1, 2]
    save(root / "masks" / "b.png", binary(rng, (4, 5)))
    with pytest.raises(ValueError, match=r"b.png is a gray mask but .*a.png is a palette mask"):
        FolderDataset(root)


def test_rgb_colour_masks(tmp_path, rng):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    indices = rng.integers(0, 3, size=(5, 6))
    root = make_folder(tmp_path, {"a": (np.zeros((5, 6), np.uint8), ".png",
                                        colours[indices], ".png")})
    ds = FolderDataset(root)
    assert ds.mask_style == MaskStyle("rgb") and ds.class_values == [0, 255, 255 << 16]
    np.testing.assert_array_equal(ds[0].mask, np.array([0, 2, 1])[indices])


def test_ignore_value_gives_the_ignore_index(tmp_path, rng):
    mask = binary(rng, (6, 8), 1)
    mask[-1] = 255
    root = make_folder(tmp_path, {"a": (np.zeros((6, 8), np.uint8), ".png", mask, ".png")})
    ds = FolderDataset(root, ignore_value=255)
    assert ds.class_values == [0, 1]
    expected = np.where(mask == 255, IGNORE_INDEX, mask.astype(np.int64))
    np.testing.assert_array_equal(ds[0].mask, expected)
    assert FolderDataset(root).class_values == [0, 1, 255]
    given = FolderDataset(root, class_values=[0, 1], ignore_value=255)
    np.testing.assert_array_equal(given[0].mask, ds[0].mask)
    with pytest.raises(ValueError, match="ignore_value 255 is also a class"):
        FolderDataset(root, class_values=[0, 1, 255], ignore_value=255)


def instance_mask(count=20):
    centres = [(10 + 18 * (k // 5), 10 + 18 * (k % 5)) for k in range(count)]
    return disks((80, 100), centres, 9).astype(np.uint16)


def test_instance_masks_refused_by_auto_kept_by_instances(tmp_path, rng):
    mask = instance_mask()
    mask[0, :4] = 99  # an ignored scribble
    root = make_folder(tmp_path, {"cells": (rng.integers(0, 256, size=(80, 100), dtype=np.uint8),
                                            ".png", mask, ".tif")})
    with pytest.raises(ValueError, match=r"cells.tif: holds 21 nonzero values.*--masks instances"):
        FolderDataset(root)
    ds = FolderDataset(root, masks="instances", ignore_value=99)
    assert ds.class_values == [0, 1] and ds.num_classes == 2
    sample = ds[0]
    assert sample.instances.dtype == np.int32
    np.testing.assert_array_equal(sample.instances, np.where(mask == 99, 0, mask))
    np.testing.assert_array_equal(sample.mask, np.where(mask == 99, IGNORE_INDEX, mask > 0))
    classes = FolderDataset(root, masks="classes")  # 22 values: the user says they are classes
    assert classes.num_classes == 22 and classes.instances is None
    with pytest.raises(ValueError, match="masks='instances' has the classes"):
        FolderDataset(root, masks="instances", class_values=[0, 1, 2])
    with pytest.raises(ValueError, match="masks must be one of auto, classes, instances"):
        FolderDataset(root, masks="objects")


def test_checks_run_on_the_dataset(tmp_path, rng):
    wide = np.arange(400, dtype=np.uint16).reshape(20, 20) * 7  # 400 distinct values
    pairs = {"few": (np.zeros((20, 20), np.uint8), ".png", binary(rng, (20, 20), 1), ".png"),
             "many": (np.zeros((20, 20), np.uint8), ".png", wide, ".png")}
    root = make_folder(tmp_path / "many", pairs)
    with pytest.raises(ValueError, match=r"masks hold 401 distinct values.*many.png \(400\)"):
        FolderDataset(root)
    assert FolderDataset(root, max_classes=401).num_classes == 401
    pairs["many"] = (np.zeros((20, 20), np.uint8), ".png", binary(rng, (20, 20), 255), ".png")
    with pytest.raises(ValueError, match=r"few.png holds only 0 and 1 but .*many.png holds only"):
        FolderDataset(make_folder(tmp_path / "mixed", pairs))
    with pytest.raises(ValueError, match="single value"):
        FolderDataset(make_folder(tmp_path / "one", {"a": (np.zeros((2, 2), np.uint8), ".png",
                                                           np.zeros((2, 2), np.uint8), ".png")}))


def test_synthetic_shapes_written_as_files_load_as_four_classes(tmp_path):
    shapes = SyntheticShapes(12, size=64, seed=1)
    for i in range(12):
        sample = shapes[i]
        save(tmp_path / "images" / f"s{i:02d}.tif", sample.image[0])
        save(tmp_path / "masks" / f"s{i:02d}.png", sample.mask.astype(np.uint8))
    ds = FolderDataset(tmp_path)
    assert ds.class_values == [0, 1, 2, 3] and len(ds) == 12
    np.testing.assert_array_equal(ds[5].mask, shapes[5].mask)


@pytest.mark.skipif(not STARDIST.is_dir(), reason="StarDist example files not here")
def test_stardist_nuclei_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    shutil.copy(STARDIST / "img2d.tif", tmp_path / "images" / "nuclei.tif")
    shutil.copy(STARDIST / "mask2d.tif", tmp_path / "masks" / "nuclei.tif")
    with pytest.raises(ValueError, match="nuclei.tif: holds 125 nonzero values.*instance ids"):
        FolderDataset(tmp_path)
    ds = FolderDataset(tmp_path, masks="instances")
    sample = ds[0]
    assert sample.image.shape == (1, 512, 512) and ds.class_values == [0, 1]
    assert len(np.unique(sample.instances)) == 126
    np.testing.assert_array_equal(sample.mask, sample.instances > 0)


def test_missing_folders_and_unreadable_files(tmp_path, rng):
    with pytest.raises(ValueError, match="nowhere/images: folder not found"):
        FolderDataset(tmp_path / "nowhere")
    save(tmp_path / "only" / "images" / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="masks: folder not found"):
        FolderDataset(tmp_path / "only")
    root = make_folder(tmp_path / "junk", {"good": (np.zeros((1, 2), np.uint8), ".png",
                                                    binary(rng, (1, 2)), ".png")})
    (root / "images" / "junk.png").write_bytes(b"\x89PNG garbage garbage garbage")
    save(root / "masks" / "junk.png", binary(rng, (1, 2)))
    with pytest.raises(ValueError, match="junk.png: cannot read"):
        FolderDataset(root)
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(ValueError, match="images: no images"):
        FolderDataset(tmp_path / "empty")
