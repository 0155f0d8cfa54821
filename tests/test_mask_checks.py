"""Mask files (read_mask_pages, write_mask, write_labels) and the checks on a set of class masks."""

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import disks
from PIL import Image

from scratchseg.data import SyntheticShapes
from scratchseg.data.masks import (
    MaskStyle,
    check_class_masks,
    mask_png_dtype,
    read_mask_pages,
    write_labels,
    write_mask,
)

STARDIST = Path("/work/dl/sd/stardist/data/images")
GRAY = MaskStyle("gray")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def save(path, array, **options):
    """PNG, GIF, BMP or JPEG through Pillow, TIFF through tifffile, by the extension."""
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **options)
    else:
        Image.fromarray(array).save(path, **options)
    return path


def pillow_open(path):
    """(mode, palette, array) of a file as Pillow reads it."""
    with Image.open(path) as picture:
        return picture.mode, picture.getpalette(), np.asarray(picture)


def only_page(path):
    pages, style = read_mask_pages(path)
    assert len(pages) == 1 and pages[0].dtype == np.int64
    return pages[0], style


def grid_centres(rows, cols, step, offset):
    return [(offset + step * r, offset + step * c) for r in range(rows) for c in range(cols)]


# reading


def test_gray_masks_8_16_bit_and_integer_tiff(tmp_path, rng):
    values = rng.choice([0, 7, 255], size=(5, 6)).astype(np.uint8)
    page, style = only_page(save(tmp_path / "m.png", values))
    assert style == GRAY
    np.testing.assert_array_equal(page, values)
    wide = rng.choice([0, 300, 65535], size=(5, 6)).astype(np.uint16)
    np.testing.assert_array_equal(only_page(save(tmp_path / "m16.png", wide))[0], wide)
    edge = np.array([[0, 65535], [1, 2]], dtype=np.int32)
    np.testing.assert_array_equal(only_page(save(tmp_path / "edge.tif", edge))[0], edge)
    whole = np.array([[0.0, 2.0], [1.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(only_page(save(tmp_path / "whole.tif", whole))[0], whole)


def test_bilevel_and_gray_alpha_masks(tmp_path):
    binary = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(only_page(save(tmp_path / "b.png", binary))[0], binary)
    gray_alpha = Image.fromarray(np.array([[0, 9], [9, 0]], np.uint8)).convert("LA")
    gray_alpha.save(tmp_path / "la.png")
    page, style = only_page(tmp_path / "la.png")
    assert style == GRAY
    np.testing.assert_array_equal(page, [[0, 9], [9, 0]])


@pytest.mark.parametrize("name, values, message", [
    ("frac.tif", np.array([[0.0, 0.5], [1.0, 2.0]], np.float32), "integers, got fractional"),
    ("neg.tif", np.array([[0, -1], [1, 2]], np.int16), r"integers in \[0, 65535\]"),
    ("neg8.tif", np.array([[0, -128]], np.int8), r"integers in \[0, 65535\]"),
    ("big.tif", np.array([[0, 65536], [1, 2]], np.uint32), r"integers in \[0, 65535\]"),
    ("big64.tif", np.array([[0, 2**40]], np.int64), r"integers in \[0, 65535\]"),
    ("negfloat.tif", np.array([[0.0, -3.0]], np.float32), r"integers in \[0, 65535\]"),
])
def test_bad_gray_values_name_the_file(tmp_path, name, values, message):
    with pytest.raises(ValueError, match=f"{name}: mask values must be {message}"):
        read_mask_pages(save(tmp_path / name, values))


@pytest.mark.parametrize("ext", [".jpg", ".JPEG"])
def test_jpeg_mask_is_refused(tmp_path, ext):
    path = save(tmp_path / f"m{ext}", np.zeros((4, 4), np.uint8), format="JPEG")
    expected = (f"{path}: a mask cannot be JPEG: lossy compression invents values along every "
                f"edge; save masks as PNG, TIFF, GIF or BMP")
    with pytest.raises(ValueError) as caught:
        read_mask_pages(path)
    assert str(caught.value) == expected


def test_tiff_stack_gives_pages(tmp_path, rng):
    stack = rng.integers(0, 3, size=(4, 5, 6)).astype(np.uint16)
    pages, style = read_mask_pages(save(tmp_path / "s.tif", stack, photometric="minisblack"))
    assert style == GRAY and len(pages) == 4
    for page, plane in zip(pages, stack):
        np.testing.assert_array_equal(page, plane)
    # tifffile stores a plain (3, H, W) uint8 array as planar RGB: still three mask pages
    three = save(tmp_path / "three.tif", stack[:3].astype(np.uint8),
                 photometric="rgb", planarconfig="separate")
    assert len(read_mask_pages(three)[0]) == 3


def test_other_mask_layouts_name_the_file(tmp_path):
    path = save(tmp_path / "odd.tif", np.zeros((2, 2, 5, 6), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=r"odd.tif: a mask must be .* got shape \(2, 2, 5, 6\)"):
        read_mask_pages(path)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_unreadable_mask_names_it(tmp_path, ext):
    path = tmp_path / f"broken{ext}"
    path.write_bytes(b"this is not an image \x00\x01\x02" * 10)
    with pytest.raises(ValueError, match=f"broken{ext}: cannot read"):
        read_mask_pages(path)


# palette and colour masks, and writing masks back


def palette_picture(indices, colours):
    picture = Image.fromarray(indices)
    picture.putpalette([c for colour in colours for c in colour])
    return picture


def test_palette_mask_round_trips_as_a_palette_png(tmp_path):
    """A VOC-style mask: the values are palette indices, written back with the same colours."""
    colours = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    indices = np.array([[0, 1, 2], [3, 1, 0]], dtype=np.uint8)
    palette_picture(indices, colours).save(tmp_path / "voc.png")
    values, style = only_page(tmp_path / "voc.png")
    assert style == MaskStyle("palette", tuple(colours))
    np.testing.assert_array_equal(values, indices)
    write_mask(tmp_path / "out.png", values[::-1], style)
    mode, palette, written = pillow_open(tmp_path / "out.png")
    assert mode == "P" and palette == [c for colour in colours for c in colour]
    np.testing.assert_array_equal(written, indices[::-1])
    np.testing.assert_array_equal(only_page(tmp_path / "out.png")[0], indices[::-1])


def test_gif_mask_is_a_palette_mask(tmp_path):
    """Carvana's masks: a 0/255 picture saved as GIF holds the indices 0 and 1."""
    picture = np.zeros((6, 7), np.uint8)
    picture[2:4, 2:5] = 255
    values, style = only_page(save(tmp_path / "car_mask.gif", picture))
    assert style.kind == "palette" and style.palette[:2] == ((0, 0, 0), (255, 255, 255))
    np.testing.assert_array_equal(values, picture // 255)


def test_rgb_colour_mask_round_trips(tmp_path, rng):
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [12, 34, 56]], np.uint8)
    picture = colours[rng.integers(0, 4, size=(5, 6))]
    for ext in (".png", ".tif"):
        values, style = only_page(save(tmp_path / f"c{ext}", picture))
        assert style == MaskStyle("rgb")
        r, g, b = picture.astype(np.int64).transpose(2, 0, 1)
        packed = r * 65536 + g * 256 + b
        np.testing.assert_array_equal(values, packed)
    write_mask(tmp_path / "out.png", values, style)
    mode, _, written = pillow_open(tmp_path / "out.png")
    assert mode == "RGB"
    np.testing.assert_array_equal(written, picture)


def test_16_bit_colour_mask_is_refused(tmp_path):
    path = save(tmp_path / "c16.tif", np.full((4, 5, 3), 300, np.uint16), photometric="rgb")
    with pytest.raises(ValueError, match="c16.tif: a colour mask needs 8-bit channels"):
        read_mask_pages(path)


def test_rgb_file_with_equal_channels_is_gray(tmp_path):
    gray = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    values, style = only_page(save(tmp_path / "g.png", np.repeat(gray[..., None], 3, axis=2)))
    assert style == GRAY
    np.testing.assert_array_equal(values, gray)


@pytest.mark.parametrize("dtype, high", [(np.uint8, 255), (np.int64, 255), (np.int32, 65535),
                                         (np.uint16, 65535)])
def test_write_gray_mask_8_or_16_bit_atomically(tmp_path, rng, dtype, high):
    mask = rng.integers(0, high + 1, size=(7, 9)).astype(dtype)
    mask[0, 0] = high
    path = tmp_path / "out.png"
    write_mask(path, mask, GRAY)
    assert pillow_open(path)[0] == ("L" if high < 256 else "I;16")
    np.testing.assert_array_equal(only_page(path)[0], mask)
    write_mask(path, np.zeros((3, 3), dtype), GRAY)  # overwrite in place
    np.testing.assert_array_equal(only_page(path)[0], np.zeros((3, 3)))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize("values, style", [
    (np.zeros((2, 2, 3), np.uint8), GRAY),
    (np.array([[-1, 0]]), GRAY),
    (np.array([[70000, 0]]), GRAY),
    (np.array([[0.5, 1.0]]), GRAY),
    (np.array([[0, 256]]), MaskStyle("palette", ((0, 0, 0),))),
    (np.array([[0, -1]]), MaskStyle("rgb")),
])
def test_write_mask_refuses_and_leaves_nothing(tmp_path, values, style):
    with pytest.raises(ValueError, match="bad.png"):
        write_mask(tmp_path / "bad.png", values, style)
    assert list(tmp_path.iterdir()) == []


def test_mask_style_keeps_its_palette_as_tuples():
    assert MaskStyle("palette", [[0, 0, 0], [255, 0, 0]]) == MaskStyle(
        "palette", ((0, 0, 0), (255, 0, 0)))
    assert MaskStyle("gray", None) == MaskStyle("gray")
    with pytest.raises(ValueError, match="MaskStyle: kind must be one of gray, palette, rgb"):
        MaskStyle("sepia")


def test_write_labels_16_bit(tmp_path):
    labels = disks((30, 30), grid_centres(2, 2, 14, 7), 5)
    write_labels(tmp_path / "l.png", labels)
    assert pillow_open(tmp_path / "l.png")[0] == "I;16"
    np.testing.assert_array_equal(only_page(tmp_path / "l.png")[0], labels)
    sparse = np.array([[0, 70000], [100000, 70000]])
    write_labels(tmp_path / "s.png", sparse)  # ids renumbered 1..N, the same objects
    np.testing.assert_array_equal(only_page(tmp_path / "s.png")[0], [[0, 1], [2, 1]])


def test_write_labels_refuses_too_many_objects(tmp_path):
    labels = np.arange(1, 65537).reshape(256, 256)
    with pytest.raises(ValueError, match="many.png: 65536 objects"):
        write_labels(tmp_path / "many.png", labels)
    with pytest.raises(ValueError, match="neg.png"):
        write_labels(tmp_path / "neg.png", np.array([[-1, 0]]))
    assert list(tmp_path.iterdir()) == []


def test_mask_png_dtype():
    assert mask_png_dtype([0, 255], "x") == np.uint8
    assert mask_png_dtype([0, 256], "x") == np.uint16
    with pytest.raises(ValueError, match="the classes"):
        mask_png_dtype([0, 70000], "the classes")


# the checks on a training set of class masks


def one_page_each(masks):
    return {f"masks/{name}.png": [np.asarray(mask, np.int64)] for name, mask in masks.items()}


def test_synthetic_shapes_masks_pass_every_check():
    shapes = SyntheticShapes(64, size=96, seed=3)
    check_class_masks(one_page_each({f"s{i}": shapes[i].mask for i in range(64)}))


def test_many_classes_in_several_blobs_are_no_instances():
    """Twelve classes, each in three separate disks: classes, however many."""
    centres = grid_centres(6, 6, 16, 8)
    mask = disks((96, 96), centres, 5)
    mask[mask > 0] = (mask[mask > 0] - 1) % 12 + 1
    check_class_masks(one_page_each({"classes": mask}))


def resized_with_interpolation(rng):
    """Binary 0/255 masks shrunk with Pillow's (antialiased) bilinear filter."""
    masks = {}
    for k in range(3):
        mask = np.zeros((100, 100), np.uint8)
        mask[disks((100, 100), [rng.integers(20, 80, 2)], rng.integers(10, 25)) > 0] = 255
        picture = Image.fromarray(mask).resize((37, 37), Image.BILINEAR)
        masks[f"small{k}"] = np.asarray(picture)
    return masks


def saved_as_jpeg(rng):
    """Binary 0/255 masks that went through JPEG before being saved as PNG."""
    masks = {}
    for k in range(3):
        mask = np.zeros((64, 64), np.uint8)
        mask[disks((64, 64), [rng.integers(16, 48, 2)], 12) > 0] = 255
        buffer = io.BytesIO()
        Image.fromarray(mask).save(buffer, format="JPEG")
        with Image.open(buffer) as picture:
            masks[f"jpeg{k}"] = np.asarray(picture)
    return masks


@pytest.mark.parametrize("make", [resized_with_interpolation, saved_as_jpeg])
def test_too_many_values_name_the_files_and_the_fixes(rng, make):
    masks = make(rng)
    masks["clean"] = (disks((64, 64), [(30, 30)], 9) > 0).astype(np.uint8) * 255
    total = len(np.unique(np.concatenate([m.ravel() for m in masks.values()])))
    crowded = sorted(masks, key=lambda name: -len(np.unique(masks[name])))
    assert total > 32
    with pytest.raises(ValueError) as caught:
        check_class_masks(one_page_each(masks))
    message = str(caught.value)
    assert message.startswith(f"masks hold {total} distinct values but at most 32 classes")
    named = ", ".join(f"masks/{name}.png ({len(np.unique(masks[name]))})"
                      for name in crowded[:3])
    assert f"most distinct values in: {named}." in message
    assert "clean" not in message
    for fix in ("JPEG", "nearest-neighbour", "--masks instances", "--max-classes N"):
        assert fix in message
    check_class_masks(one_page_each(masks), max_classes=total)


def test_zero_one_and_zero_255_masks_are_refused():
    disk = disks((40, 40), [(20, 20)], 8) > 0
    masks = {"a": disk * 1, "b": disk * 1, "c": disk * 255, "d": disk * 0}
    with pytest.raises(ValueError) as caught:
        check_class_masks(one_page_each(masks))
    message = str(caught.value)
    assert message.startswith("masks/a.png holds only 0 and 1 but masks/c.png holds only 0 "
                              "and 255")
    assert "save every mask with the same values" in message
    check_class_masks(one_page_each({"a": disk * 1, "b": disk * 1, "d": disk * 0}))
    check_class_masks(one_page_each({"c": disk * 255, "d": disk * 0}))


def test_ignore_value_counts_for_no_check():
    """Background and 31 classes (each in two disks or more) with VOC's 255 border: 33 values,
    32 classes."""
    classes = disks((128, 128), grid_centres(8, 8, 16, 8), 5)
    border = disks((128, 128), grid_centres(8, 8, 16, 8), 7) > 0
    mask = np.where(classes > 0, (classes - 1) % 31 + 1, np.where(border, 255, 0))
    with pytest.raises(ValueError, match="masks hold 33 distinct values"):
        check_class_masks(one_page_each({"voc": mask}))
    check_class_masks(one_page_each({"voc": mask}), ignore_value=255)


def instance_mask(rng, count=20):
    """Touching disks numbered 1..count in a random order, as a labelling tool writes them."""
    centres = grid_centres(4, 5, 18, 10)[:count]
    mask = disks((80, 100), centres, 9)
    order = np.concatenate([[0], rng.permutation(count) + 1])
    return order[mask]


def test_instance_ids_are_refused_with_the_choices(rng):
    masks = {"cells0": instance_mask(rng), "cells1": instance_mask(rng, 12)}
    with pytest.raises(ValueError) as caught:
        check_class_masks(one_page_each(masks))
    message = str(caught.value)
    assert message.startswith("masks/cells0.png: holds 20 nonzero values")
    assert "instance ids" in message
    assert "--masks instances" in message and "--masks classes" in message
    check_class_masks(one_page_each(masks), instances_check=False)


def test_a_few_objects_or_sparse_ids_are_no_instances(rng):
    few = instance_mask(rng, 7)  # fewer than 8 ids: too few to tell
    spread = instance_mask(rng, 10) * 5  # ids 5, 10, .., 50: far from consecutive
    check_class_masks(one_page_each({"few": few, "spread": spread}))


@pytest.mark.skipif(not STARDIST.is_dir(), reason="StarDist example files not here")
def test_stardist_instance_mask_is_refused_as_classes():
    pages, style = read_mask_pages(STARDIST / "mask2d.tif")
    assert style == GRAY
    with pytest.raises(ValueError, match="mask2d.tif: holds 125 nonzero values.*instance ids"):
        check_class_masks({STARDIST / "mask2d.tif": pages})
    with pytest.raises(ValueError, match="masks hold 126 distinct values"):
        check_class_masks({STARDIST / "mask2d.tif": pages}, instances_check=False)
