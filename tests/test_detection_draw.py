"""Detection pictures: size, dtype, box colours on the outlines, the PNG file."""

import numpy as np
import pytest
from PIL import Image

from scratchseg.detection.draw import class_colour, draw_detections, save_detections_png


def test_shape_dtype_and_enlargement():
    image = np.random.default_rng(0).random((1, 40, 64)).astype(np.float32)
    picture = draw_detections(image, np.zeros((0, 4)), np.zeros(0, np.int64))
    assert picture.dtype == np.uint8 and picture.shape == (280, 448, 3)  # 7x: 40 * 7 >= 256
    assert np.all(picture[..., 0] == picture[..., 1])  # gray stays gray
    rgb = np.zeros((3, 300, 400), np.float32)
    rgb[0] = 1.0
    picture = draw_detections(rgb, np.zeros((0, 4)), np.zeros(0, np.int64))
    assert picture.shape == (300, 400, 3)
    assert tuple(picture[0, 0]) == (255, 0, 0)


def test_box_colour_on_its_outline():
    image = np.zeros((1, 64, 64), np.float32)
    boxes = np.array([[10, 20, 30, 40], [40, 2, 60, 12]], np.float32)
    labels = np.array([1, 2])
    picture = draw_detections(image, boxes, labels, np.array([0.93, 0.5]),
                              ["background", "ellipse", "rectangle"])
    for (x1, y1, x2, y2), label in zip(boxes.astype(int) * 4, labels):  # 64 px enlarged 4x
        colour = np.array(class_colour(label))
        for y, x in [((y1 + y2) // 2, x1), ((y1 + y2) // 2, x2 - 1), (y2 - 1, (x1 + x2) // 2)]:
            np.testing.assert_array_equal(picture[y, x], colour)
        assert tuple(picture[(y1 + y2) // 2, (x1 + x2) // 2]) == (0, 0, 0)  # inside: image
    assert class_colour(1) != class_colour(2)


def test_score_threshold_hides_boxes():
    image = np.zeros((1, 64, 64), np.float32)
    picture = draw_detections(image, [[10, 20, 30, 40]], [1], [0.2], score_threshold=0.5)
    assert not picture.any()


def test_bad_image_is_a_clear_error():
    with pytest.raises(ValueError, match=r"image must be \(1 or 3, H, W\)"):
        draw_detections(np.zeros((2, 8, 8)), [[0, 0, 1, 1]], [1])
    with pytest.raises(ValueError, match="1 boxes, 2 labels"):
        draw_detections(np.zeros((1, 8, 8)), [[0, 0, 1, 1]], [1, 2])


def test_png_is_written(tmp_path):
    path = tmp_path / "detections.png"
    image = np.random.default_rng(1).random((1, 32, 32)).astype(np.float32)
    save_detections_png(path, image, [[4, 4, 20, 20]], [3], [0.8], ["bg", "a", "b", "c"])
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == (256, 256) and saved.mode == "RGB"
    assert [p.name for p in tmp_path.iterdir()] == ["detections.png"]
