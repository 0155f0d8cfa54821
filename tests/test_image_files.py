"""read_pages and read_image on real files: each format, TIFF axes, stacks, errors."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from scratchseg.data.images import read_image, read_pages
from scratchseg.data.normalize import normalize_image

STARDIST = Path("/work/dl/sd/stardist/data/images")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pillow_save(path, array, **options):
    Image.fromarray(array).save(path, **options)
    return path


def tiff_save(path, array, **options):
    tifffile.imwrite(path, array, **options)
    return path


def axes_of(path):
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].axes


def pillow_open(path):
    """(mode, array) of a file as Pillow reads it."""
    with Image.open(path) as picture:
        return picture.mode, np.asarray(picture)


def only_page(path, channels=None):
    pages = read_pages(path, channels)
    assert len(pages) == 1 and pages[0].dtype == np.float32
    return pages[0]


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".TIFF"])
def test_gray_8_bit_values_as_stored(tmp_path, rng, ext):
    array = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
    save = tiff_save if ext.lower().startswith(".tif") else pillow_save
    np.testing.assert_array_equal(only_page(save(tmp_path / f"a{ext}", array)), array[None])


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_gray_16_bit_values_as_stored(tmp_path, rng, ext):
    array = rng.integers(0, 65536, size=(4, 6), dtype=np.uint16)
    save = tiff_save if ext == ".tif" else pillow_save
    page = only_page(save(tmp_path / f"a{ext}", array))
    np.testing.assert_array_equal(page, array[None])
    assert page.max() > 1  # no scaling by bit depth any more


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_signed_and_float_tiff_kept_as_stored(tmp_path, rng, dtype):
    array = (rng.normal(0, 1000, size=(3, 5))).astype(dtype)
    assert array.min() < 0
    np.testing.assert_array_equal(only_page(tiff_save(tmp_path / "s.tif", array)), array[None])


@pytest.mark.parametrize("ext, kind", [(".png", "rgb"), (".bmp", "rgb"), (".tif", "rgb"),
                                       (".png", "rgba"), (".tif", "rgba")])
def test_colour_channels_first_alpha_dropped(tmp_path, rng, ext, kind):
    array = rng.integers(0, 256, size=(4, 6, 3 if kind == "rgb" else 4), dtype=np.uint8)
    save = tiff_save if ext == ".tif" else pillow_save
    page = only_page(save(tmp_path / f"{kind}{ext}", array))
    np.testing.assert_array_equal(page, array[..., :3].transpose(2, 0, 1))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_as_pillow_decodes_it(tmp_path, rng, mode):
    shape = (16, 16) if mode == "L" else (16, 16, 3)
    path = pillow_save(tmp_path / "a.jpg", rng.integers(0, 256, size=shape, dtype=np.uint8))
    decoded = pillow_open(path)[1]
    page = only_page(path)
    assert page.shape == ((1,) if mode == "L" else (3,)) + (16, 16)
    np.testing.assert_array_equal(page, decoded[None] if mode == "L"
                                  else decoded.transpose(2, 0, 1))


def test_palette_picture_becomes_rgb(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    colours = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]
    picture = Image.fromarray(indices)
    picture.putpalette([c for colour in colours for c in colour])
    for ext in (".png", ".gif", ".bmp"):
        picture.save(tmp_path / f"p{ext}")
        page = only_page(tmp_path / f"p{ext}")
        np.testing.assert_array_equal(page, np.array(colours)[indices].transpose(2, 0, 1))


def test_gray_palette_picture_stays_one_channel(tmp_path):
    """A grayscale GIF is a palette of grays: one channel of the gray levels, not indices."""
    array = np.array([[0, 40, 200], [255, 40, 0]], dtype=np.uint8)
    path = pillow_save(tmp_path / "g.gif", array)
    assert pillow_open(path)[0] == "P"
    np.testing.assert_array_equal(only_page(path), array[None])


def test_channel_axes_give_one_image(tmp_path, rng):
    stack = rng.integers(0, 4000, size=(3, 5, 6), dtype=np.uint16)
    path = tiff_save(tmp_path / "cyx.tif", stack, photometric="minisblack",
                     metadata={"axes": "CYX"})
    assert axes_of(path) == "CYX"
    np.testing.assert_array_equal(only_page(path), stack)
    planar = tiff_save(tmp_path / "syx.tif", stack.astype(np.uint8),
                       photometric="rgb", planarconfig="separate")
    assert axes_of(planar) == "SYX"
    assert only_page(planar).shape == (3, 5, 6)


@pytest.mark.parametrize("axes", ["ZYX", "TYX"])
def test_page_axes_give_pages(tmp_path, rng, axes):
    stack = rng.integers(0, 255, size=(3, 5, 6), dtype=np.uint8)
    path = tiff_save(tmp_path / "z.tif", stack, photometric="minisblack",
                     metadata={"axes": axes})
    pages = read_pages(path, channels=3)  # the axes say pages, whatever was asked
    assert len(pages) == 3
    for page, plane in zip(pages, stack):
        np.testing.assert_array_equal(page, plane[None])


def test_unnamed_stack_is_pages_unless_that_many_channels_are_asked(tmp_path, rng):
    stack = rng.integers(0, 255, size=(3, 5, 6), dtype=np.uint8)
    path = tiff_save(tmp_path / "q.tif", stack, photometric="minisblack")
    assert axes_of(path) == "QYX"
    assert [p.shape for p in read_pages(path)] == [(1, 5, 6)] * 3
    assert [p.shape for p in read_pages(path, channels=2)] == [(1, 5, 6)] * 3
    np.testing.assert_array_equal(only_page(path, channels=3), stack)


def test_four_dimensional_stacks_give_pages(tmp_path, rng):
    last = rng.integers(0, 255, size=(2, 5, 6, 3), dtype=np.uint8)
    pages = read_pages(tiff_save(tmp_path / "last.tif", last, photometric="rgb"))
    assert len(pages) == 2
    np.testing.assert_array_equal(pages[1], last[1].transpose(2, 0, 1))
    first = rng.integers(0, 255, size=(2, 3, 5, 6), dtype=np.uint16)
    pages = read_pages(tiff_save(tmp_path / "first.tif", first, photometric="minisblack"))
    assert [p.shape for p in pages] == [(3, 5, 6)] * 2
    np.testing.assert_array_equal(pages[0], first[0])
    single = rng.integers(0, 255, size=(4, 1, 5, 6), dtype=np.uint8)
    pages = read_pages(tiff_save(tmp_path / "one.tif", single, photometric="minisblack"))
    assert [p.shape for p in pages] == [(1, 5, 6)] * 4


@pytest.mark.parametrize("shape", [(2, 5, 8, 9), (2, 2, 3, 8, 9)])
def test_other_layouts_name_the_file_and_shape(tmp_path, shape):
    path = tiff_save(tmp_path / "odd.tif", np.zeros(shape, np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=rf"odd.tif: expected .* got shape \({shape[0]}, "):
        read_pages(path)


def test_multi_frame_gif_is_refused(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 80, 160)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="anim.gif: holds 3 frames"):
        read_pages(tmp_path / "anim.gif")


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_unreadable_file_names_it(tmp_path, ext):
    path = tmp_path / f"broken{ext}"
    path.write_bytes(b"this is not an image \x00\x01\x02" * 10)
    with pytest.raises(ValueError, match=f"broken{ext}: cannot read"):
        read_pages(path)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="absent.png: file not found"):
        read_image(tmp_path / "absent.png")


def test_read_image_normalises(tmp_path, rng):
    array = rng.integers(0, 4096, size=(9, 11), dtype=np.uint16)
    path = tiff_save(tmp_path / "a.tif", array)
    raw = array[None].astype(np.float32)
    np.testing.assert_array_equal(read_image(path), normalize_image(raw))
    np.testing.assert_array_equal(read_image(path, normalize="minmax"),
                                  normalize_image(raw, "minmax"))
    np.testing.assert_array_equal(read_image(path, normalize="none"), raw)


def test_read_image_refuses_a_stack(tmp_path):
    path = tiff_save(tmp_path / "vol.tif", np.zeros((5, 4, 4), np.uint8),
                     photometric="minisblack", metadata={"axes": "ZYX"})
    with pytest.raises(ValueError, match="vol.tif: holds 5 pages.*page by page"):
        read_image(path)


@pytest.mark.skipif(not STARDIST.is_dir(), reason="StarDist example files not here")
def test_stardist_nuclei_image():
    raw = tifffile.imread(STARDIST / "img2d.tif")
    image = read_image(STARDIST / "img2d.tif", normalize="none")
    assert image.shape == (1, 512, 512)
    np.testing.assert_array_equal(image[0], raw)
    assert image.max() == 235
    assert len(read_pages(STARDIST / "img3d.tif")) == 31
