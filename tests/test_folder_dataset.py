"""FolderDataset, read_image, read_mask and write_mask_png on real PNG and TIFF files."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from scratchseg.data import FolderDataset, read_image, read_mask, write_mask_png


def save(path, array):
    """PNG through Pillow, TIFF through tifffile, by the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)
    return path


def make_folder(root, pairs):
    """pairs: {stem: (image array, image ext, mask array, mask ext)}."""
    for stem, (image, image_ext, mask, mask_ext) in pairs.items():
        if image is not None:
            save(root / "images" / f"{stem}{image_ext}", image)
        if mask is not None:
            save(root / "masks" / f"{stem}{mask_ext}", mask)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("ext", [".png", ".tif", ".TIFF"])
def test_read_gray_uint8(tmp_path, rng, ext):
    array = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
    image = read_image(save(tmp_path / f"a{ext}", array))
    assert image.shape == (1, 5, 7) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], array / 255, rtol=1e-6)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_gray_uint16(tmp_path, rng, ext):
    array = rng.integers(0, 65536, size=(4, 6), dtype=np.uint16)
    image = read_image(save(tmp_path / f"a{ext}", array))
    assert image.shape == (1, 4, 6) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], array / 65535, rtol=1e-6)
    assert image.max() <= 1.0


def test_read_float_tiff_unscaled(tmp_path, rng):
    array = (rng.random((3, 5)) * 7 - 2).astype(np.float32)
    image = read_image(save(tmp_path / "f.tif", array))
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image[0], array)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_rgb_channels_first(tmp_path, rng, ext):
    array = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    image = read_image(save(tmp_path / f"rgb{ext}", array))
    assert image.shape == (3, 4, 6)
    np.testing.assert_allclose(image, array.transpose(2, 0, 1) / 255, rtol=1e-6)


def test_read_rgba_drops_alpha(tmp_path, rng):
    array = rng.integers(0, 256, size=(4, 6, 4), dtype=np.uint8)
    image = read_image(save(tmp_path / "rgba.png", array))
    assert image.shape == (3, 4, 6)
    np.testing.assert_allclose(image, array[..., :3].transpose(2, 0, 1) / 255, rtol=1e-6)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_unreadable_file_names_it(tmp_path, ext):
    path = tmp_path / f"broken{ext}"
    path.write_bytes(b"this is not an image \x00\x01\x02" * 10)
    with pytest.raises(ValueError, match=f"broken{ext}"):
        read_image(path)
    with pytest.raises(ValueError, match=f"broken{ext}"):
        read_mask(path)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="absent.png"):
        read_image(tmp_path / "absent.png")


def test_read_mask_values_and_errors(tmp_path, rng):
    values = rng.choice([0, 7, 255], size=(5, 6)).astype(np.uint8)
    mask = read_mask(save(tmp_path / "m.png", values))
    assert mask.dtype == np.int64
    np.testing.assert_array_equal(mask, values)
    wide = rng.choice([0, 300, 65535], size=(5, 6)).astype(np.uint16)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "m16.png", wide)), wide)
    whole = np.array([[0.0, 2.0], [1.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "whole.tif", whole)), whole)
    fractional = np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="frac.tif"):
        read_mask(save(tmp_path / "frac.tif", fractional))
    rgb = rng.integers(0, 2, size=(5, 6, 3), dtype=np.uint8) * 255
    with pytest.raises(ValueError, match="rgb.png"):
        read_mask(save(tmp_path / "rgb.png", rgb))


@pytest.mark.parametrize("name, values", [
    ("neg.tif", np.array([[0, -1], [1, 2]], dtype=np.int16)),
    ("neg8.tif", np.array([[0, -128]], dtype=np.int8)),
    ("big.tif", np.array([[0, 65536], [1, 2]], dtype=np.uint32)),
    ("big64.tif", np.array([[0, 2**40]], dtype=np.int64)),
    ("negfloat.tif", np.array([[0.0, -3.0]], dtype=np.float32)),
])
def test_read_mask_refuses_values_outside_16_bits(tmp_path, name, values):
    path = save(tmp_path / name, values)
    with pytest.raises(ValueError, match=rf"{name}: mask values must be integers in "
                                         rf"\[0, 65535\]"):
        read_mask(path)


def test_read_mask_accepts_the_16_bit_extremes_in_wide_types(tmp_path):
    values = np.array([[0, 65535], [1, 2]], dtype=np.int32)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "edge.tif", values)), values)


def test_dataset_refuses_a_negative_mask_naming_it(tmp_path):
    image = np.zeros((2, 3), np.uint8)
    good = np.array([[0, 1, 0], [1, 0, 1]], dtype=np.int16)
    root = make_folder(tmp_path, {"a": (image, ".png", good, ".tif"),
                                  "b": (image, ".png", -good, ".tif")})
    with pytest.raises(ValueError, match="b.tif"):
        FolderDataset(root)


def test_dataset_with_too_many_mask_values_names_the_files(tmp_path):
    image = np.zeros((20, 20), np.uint8)
    wide = np.arange(400, dtype=np.uint16).reshape(20, 20) * 7  # 400 distinct values
    binary = np.zeros((20, 20), np.uint16)
    binary[:10] = 1
    root = make_folder(tmp_path, {"few": (image, ".png", binary, ".png"),
                                  "many": (image, ".png", wide, ".png")})
    with pytest.raises(ValueError, match="at most 256 classes") as caught:
        FolderDataset(root)
    message = str(caught.value)
    assert "many.png (400)" in message  # the file with the most distinct values first
    assert message.index("many.png") < message.index("few.png (2)")
    assert "401 distinct values" in message  # 0..2793 by 7, plus the binary mask's 1


def test_palette_mask_gives_indices(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    picture = Image.fromarray(indices, mode="P")
    picture.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    picture.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), indices)


def test_dataset_binary_masks_map_to_classes(tmp_path, rng):
    pairs = {}
    for stem, ext in (("b", ".png"), ("a", ".tif"), ("c", ".png")):
        image = rng.integers(0, 256, size=(6, 8), dtype=np.uint8)
        mask = rng.choice([0, 255], size=(6, 8)).astype(np.uint8)
        pairs[stem] = (image, ext, mask, ext)
    ds = FolderDataset(make_folder(tmp_path, pairs))
    assert len(ds) == 3
    assert ds.class_values == [0, 255] and ds.num_classes == 2 and ds.in_channels == 1
    names = [ds[i].name for i in range(3)]
    assert names == ["a", "b", "c"]  # sorted by stem
    for i, stem in enumerate(names):
        sample = ds[i]
        image, _, mask, _ = pairs[stem]
        assert sample.image.shape == (1, 6, 8) and sample.image.dtype == np.float32
        np.testing.assert_allclose(sample.image[0], image / 255, rtol=1e-6)
        assert sample.mask.dtype == np.int64
        np.testing.assert_array_equal(sample.mask, (mask == 255).astype(np.int64))


def test_dataset_many_values_and_given_class_values(tmp_path, rng):
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
    with pytest.raises(ValueError, match="s1.png"):
        FolderDataset(root, class_values=[3, 10, 40])


def test_dataset_rgb_images(tmp_path, rng):
    pairs = {s: (rng.integers(0, 256, size=(4, 5, c), dtype=np.uint8), ".png",
                 np.array([[0, 1, 1, 0, 1]] * 4, dtype=np.uint8), ".png")
             for s, c in (("x", 3), ("y", 4))}
    ds = FolderDataset(make_folder(tmp_path, pairs))
    assert ds.in_channels == 3
    assert ds[0].image.shape == (3, 4, 5) and ds[1].image.shape == (3, 4, 5)


def test_mixed_channel_counts_error(tmp_path, rng):
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    pairs = {"gray": (np.zeros((2, 2), np.uint8), ".png", mask, ".png"),
             "rgb": (np.zeros((2, 2, 3), np.uint8), ".png", mask, ".png")}
    with pytest.raises(ValueError, match="channel"):
        FolderDataset(make_folder(tmp_path, pairs))


def test_mismatched_mask_size_names_both_files(tmp_path):
    pairs = {"one": (np.zeros((4, 6), np.uint8), ".png", np.zeros((4, 5), np.uint8), ".tif")}
    pairs["two"] = (np.zeros((4, 6), np.uint8), ".png", np.ones((4, 6), np.uint8), ".png")
    with pytest.raises(ValueError) as info:
        FolderDataset(make_folder(tmp_path, pairs))
    message = str(info.value)
    assert "one.png" in message and "one.tif" in message


def test_image_without_mask_names_the_file(tmp_path):
    mask = np.array([[0, 1]], dtype=np.uint8)
    pairs = {"ok": (np.zeros((1, 2), np.uint8), ".png", mask, ".png"),
             "lonely": (np.zeros((1, 2), np.uint8), ".png", None, None)}
    with pytest.raises(ValueError, match="lonely.png"):
        FolderDataset(make_folder(tmp_path, pairs))


def test_mask_without_image_names_the_file(tmp_path):
    mask = np.array([[0, 1]], dtype=np.uint8)
    pairs = {"ok": (np.zeros((1, 2), np.uint8), ".png", mask, ".png"),
             "orphan": (None, None, mask, ".tiff")}
    with pytest.raises(ValueError, match="orphan.tiff"):
        FolderDataset(make_folder(tmp_path, pairs))


def test_rgb_and_fractional_masks_rejected_by_dataset(tmp_path):
    image = np.zeros((2, 3), np.uint8)
    root = make_folder(tmp_path / "rgb", {"a": (image, ".png", np.zeros((2, 3, 3), np.uint8),
                                                ".png")})
    with pytest.raises(ValueError, match="a.png"):
        FolderDataset(root)
    fractional = np.array([[0, 1, 0.25], [1, 0, 1]], dtype=np.float32)
    root = make_folder(tmp_path / "frac", {"b": (image, ".png", fractional, ".tif")})
    with pytest.raises(ValueError, match="b.tif"):
        FolderDataset(root)


def test_unreadable_file_in_dataset_names_it(tmp_path):
    mask = np.array([[0, 1]], dtype=np.uint8)
    root = make_folder(tmp_path, {"good": (np.zeros((1, 2), np.uint8), ".png", mask, ".png")})
    (root / "images" / "junk.png").write_bytes(b"\x89PNG garbage garbage garbage")
    save(root / "masks" / "junk.png", mask)
    with pytest.raises(ValueError, match="junk.png"):
        FolderDataset(root)


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError):
        FolderDataset(tmp_path / "nowhere")
    (tmp_path / "only" / "images").mkdir(parents=True)
    save(tmp_path / "only" / "images" / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="masks"):
        FolderDataset(tmp_path / "only")


@pytest.mark.parametrize("dtype, high", [(np.uint8, 255), (np.int64, 255), (np.int32, 65535),
                                         (np.uint16, 65535)])
def test_write_mask_png_round_trip(tmp_path, rng, dtype, high):
    mask = rng.integers(0, high + 1, size=(7, 9)).astype(dtype)
    mask[0, 0] = high
    path = tmp_path / "out.png"
    write_mask_png(path, mask)
    with Image.open(path) as picture:
        bits16 = picture.mode.startswith("I")
    assert bits16 == (high > 255)  # 8-bit when the values fit
    np.testing.assert_array_equal(read_mask(path), mask.astype(np.int64))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    write_mask_png(path, np.zeros((3, 3), dtype))  # overwrite in place
    np.testing.assert_array_equal(read_mask(path), np.zeros((3, 3)))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_write_mask_png_rejects_bad_masks_and_leaves_nothing(tmp_path):
    for bad in (np.zeros((2, 2, 3), np.uint8), np.array([[-1, 0]]), np.array([[70000, 0]]),
                np.array([[0.5, 1.0]])):
        with pytest.raises(ValueError):
            write_mask_png(tmp_path / "bad.png", bad)
    assert list(tmp_path.iterdir()) == []
