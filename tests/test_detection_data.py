"""Detection data: boxes from instance maps, synthetic boxes, COCO files, the nuclei conversion."""

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from scratchseg.data import FolderDataset
from scratchseg.detection.data import (
    MIN_VISIBLE_PIXELS,
    CocoDataset,
    DetectionSample,
    SyntheticBoxes,
    boxes_from_instances,
    write_coco,
    write_coco_detections,
)

ROOT = Path(__file__).resolve().parents[1]
NUCLEI = ROOT / "docs" / "data" / "nuclei"


def brute_force_boxes(instances, class_map):
    boxes, labels = [], []
    for value in sorted(set(instances.ravel().tolist()) - {0}):
        rows, cols = np.nonzero(instances == value)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        classes, counts = np.unique(class_map[instances == value], return_counts=True)
        labels.append(classes[np.argmax(counts)])
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


@given(seed=st.integers(0, 2**32 - 1), ids=st.integers(1, 9), zero=st.booleans())
def test_boxes_from_instances_match_a_loop(seed, ids, zero):
    rng = np.random.default_rng(seed)
    values = rng.choice(np.r_[0 if zero else 1, rng.choice(1000, ids, replace=False) + 1], 30)
    instances = values[rng.integers(0, len(values), size=(9, 11))].astype(np.int32)
    class_map = rng.integers(1, 4, size=instances.shape)
    boxes, labels = boxes_from_instances(instances, class_map)
    expected_boxes, expected_labels = brute_force_boxes(instances, class_map)
    np.testing.assert_array_equal(boxes, expected_boxes)
    np.testing.assert_array_equal(labels, expected_labels)
    assert boxes.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(boxes_from_instances(instances)[1], np.ones(len(boxes)))


def test_boxes_from_instances_edges():
    boxes, labels = boxes_from_instances(np.zeros((4, 5), np.int32))
    assert boxes.shape == (0, 4) and labels.shape == (0,)
    instances = np.zeros((6, 8), np.int64)
    instances[1:3, 3:6] = 7  # columns 3..5, rows 1..2
    np.testing.assert_array_equal(boxes_from_instances(instances)[0], [[3, 1, 6, 3]])
    with pytest.raises(ValueError, match="object 7's pixels are mostly class 0"):
        boxes_from_instances(instances, np.zeros_like(instances))
    with pytest.raises(ValueError, match="class_map must be an integer map"):
        boxes_from_instances(instances, np.zeros((6, 7), np.int64))
    with pytest.raises(TypeError, match="boxes_from_instances: instances must be an integer"):
        boxes_from_instances(instances.astype(float))


def test_synthetic_boxes_are_deterministic_and_tight():
    dataset = SyntheticBoxes(6, seed=3)
    assert dataset.class_names == ["background", "ellipse", "rectangle", "triangle"]
    assert (dataset.num_classes, dataset.in_channels, len(dataset)) == (3, 1, 6)
    again, other = SyntheticBoxes(6, seed=3), SyntheticBoxes(6, seed=4)
    for index in range(len(dataset)):
        sample, scene = dataset[index], dataset.scenes[index]
        np.testing.assert_array_equal(sample.boxes, again[index].boxes)
        np.testing.assert_array_equal(sample.image, again[index].image)
        assert sample.image.shape == (1, 64, 64) and sample.image_id == index
        assert sample.crowd.dtype == bool and not sample.crowd.any()
        ids, counts = np.unique(scene.instances[scene.instances > 0], return_counts=True)
        kept = ids[counts >= MIN_VISIBLE_PIXELS]
        assert len(sample.boxes) == len(kept)
        for box, label, value in zip(sample.boxes.astype(int), sample.labels, kept):
            x1, y1, x2, y2 = box
            pixels = scene.instances == value
            assert pixels[y1:y2, x1:x2].sum() == pixels.sum()  # every pixel inside
            for edge in (pixels[y1], pixels[y2 - 1], pixels[:, x1], pixels[:, x2 - 1]):
                assert edge.any()  # and each edge touches the object
            assert np.all(scene.mask[pixels] == label)
    assert any(not np.array_equal(dataset[i].image, other[i].image) for i in range(6))
    assert SyntheticBoxes(2, num_objects=(5, 5), radius=(4, 6))[0].boxes.shape[0] >= 4


def test_synthetic_boxes_drop_objects_of_few_pixels():
    dataset = SyntheticBoxes(4, seed=0, radius=(1.5, 3.0), num_objects=(3, 6))
    dropped = 0
    for index in range(len(dataset)):
        instances = dataset.scenes[index].instances
        counts = np.bincount(instances.ravel())[1:]
        visible = counts[counts > 0]
        assert len(dataset[index].boxes) == np.count_nonzero(visible >= MIN_VISIBLE_PIXELS)
        dropped += np.count_nonzero(visible < MIN_VISIBLE_PIXELS)
    assert dropped > 0


def coco_samples():
    samples = list(SyntheticBoxes(3, seed=1))
    first = samples[0]
    crowd = np.zeros(len(first.boxes), bool)
    crowd[0] = True
    samples[0] = first._replace(crowd=crowd)
    empty = DetectionSample(samples[1].image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                            "empty one", 17, np.zeros(0, bool))
    return samples + [empty]


def test_coco_round_trip(tmp_path):
    samples = coco_samples()
    write_coco(tmp_path / "gt.json", samples, SyntheticBoxes.class_names)
    dataset = CocoDataset(tmp_path / "gt.json", normalize="none")
    assert dataset.class_names == SyntheticBoxes.class_names and dataset.num_classes == 3
    assert dataset.category_ids == {1: 1, 2: 2, 3: 3} and dataset.in_channels == 1
    assert len(dataset) == len(samples)
    for ours, back in zip(samples, dataset):
        np.testing.assert_array_equal(back.image, ours.image)
        np.testing.assert_array_equal(back.boxes, ours.boxes)
        np.testing.assert_array_equal(back.labels, ours.labels)
        np.testing.assert_array_equal(back.crowd, ours.crowd)
        assert back.image_id == ours.image_id and back.boxes.dtype == np.float32
    assert [s.name for s in dataset] == [s.name for s in samples[:3]] + ["empty_one"]


def test_coco_rgb_round_trip_and_category_ids(tmp_path):
    rng = np.random.default_rng(0)
    samples = [DetectionSample(rng.random((3, 12, 10)).astype(np.float32),
                               np.array([[1.5, 2, 7.25, 9]], np.float32), np.array([2]),
                               "rgb", 5, np.zeros(1, bool))]
    write_coco(tmp_path / "gt.json", samples, ["background", "a", "b"])
    content = json.loads((tmp_path / "gt.json").read_text())
    content["categories"] = [{"id": 30, "name": "b"}, {"id": 4, "name": "a"}]
    content["annotations"][0]["category_id"] = 30
    (tmp_path / "gt.json").write_text(json.dumps(content))
    back = CocoDataset(tmp_path / "gt.json", normalize="none")
    assert back.class_names == ["background", "a", "b"] and back.category_ids == {1: 4, 2: 30}
    np.testing.assert_array_equal(back[0].image, samples[0].image)
    np.testing.assert_array_equal(back[0].boxes, samples[0].boxes)
    assert back[0].labels.tolist() == [2]


def test_write_coco_detections(tmp_path):
    path = tmp_path / "results.json"
    write_coco_detections(path, {7: ([[1, 2, 4, 8]], [0.5], [2]), 9: ([], [], [])}, {1: 3, 2: 5})
    assert json.loads(path.read_text()) == [
        {"image_id": 7, "category_id": 5, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.5}]


def good_json(tmp_path):
    """A valid COCO file with two 8x6 PNG images in tmp_path; returns (path, content)."""
    for name in ("a.png", "b.png"):
        Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(tmp_path / name)
    content = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6},
                          {"id": 2, "file_name": "b.png", "width": 8, "height": 6}],
               "annotations": [{"id": 11, "image_id": 1, "category_id": 3,
                                "bbox": [1, 1, 3, 2]},
                               {"id": 12, "image_id": 2, "category_id": 3,
                                "bbox": [0, 0, 8, 6], "iscrowd": 1}],
               "categories": [{"id": 3, "name": "cell"}]}
    return tmp_path / "gt.json", content


def broken(content, change):
    content = copy.deepcopy(content)
    change(content)
    return content


BAD_CASES = [
    (lambda c: c.pop("annotations"), r"expected a list under 'annotations', got missing"),
    (lambda c: c["images"][1].pop("file_name"), r"images\[1\] \(id 2\) has no 'file_name'"),
    (lambda c: c["annotations"][1].pop("bbox"), r"annotations\[1\] \(id 12\) has no 'bbox'"),
    (lambda c: c["annotations"][0].update(image_id=5),
     r"annotations\[0\] \(id 11\): image_id 5 is not among the images"),
    (lambda c: c["annotations"][1].update(category_id=4),
     r"annotations\[1\] \(id 12\): category_id 4 is not among the categories \[3\]"),
    (lambda c: c["annotations"][0].update(bbox=[1, 1, 0, 2]),
     r"annotations\[0\] \(id 11\): bbox \[1, 1, 0, 2\] needs finite values and a positive"),
    (lambda c: c["annotations"][0].update(bbox=[1, 1, float("nan"), 2]),
     r"annotations\[0\] \(id 11\): bbox \[1, 1, nan, 2\] needs finite"),
    (lambda c: c["annotations"][0].update(bbox=[1, 1, "x", 2]),
     r"annotations\[0\] \(id 11\): bbox must be 4 numbers"),
    (lambda c: c["annotations"][0].update(bbox=[5, 1, 4.5, 2]),
     r"annotations\[0\] \(id 11\): bbox \[5, 1, 4.5, 2\] reaches outside its 8x6 image"),
    (lambda c: c["annotations"][0].update(bbox=[-1.5, 1, 2, 2]), r"reaches outside"),
    (lambda c: c["images"][1].update(id=1), r"images\[1\] \(id 1\) repeats the id of images\[0\]"),
    (lambda c: c["images"][0].update(width=9),
     r"images\[0\] \(id 1, a.png\) is 9x6 in the JSON but .*a.png is 8x6"),
    (lambda c: c["images"][1].update(height=0), r"images\[1\] \(id 2\): width and height must"),
]


@pytest.mark.parametrize("change, message", BAD_CASES)
def test_bad_coco_files_are_clear_errors(tmp_path, change, message):
    path, content = good_json(tmp_path)
    path.write_text(json.dumps(broken(content, change)))
    with pytest.raises(ValueError, match=message) as error:
        CocoDataset(path)
    assert str(error.value).startswith(f"{path}: ")


def test_missing_images_and_unreadable_json(tmp_path):
    path, content = good_json(tmp_path)
    content["images"] += [{"id": i, "file_name": f"gone{i}.png", "width": 8, "height": 6}
                          for i in range(3, 10)]
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=rf"{path}: 7 of 9 image files are missing from "
                                         rf"{tmp_path}: gone3.png, gone4.png, .*gone7.png \.\.\."):
        CocoDataset(path)
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match=rf"{path}: cannot read it as COCO JSON"):
        CocoDataset(path)
    with pytest.raises(ValueError, match="cannot read it as COCO JSON"):
        CocoDataset(tmp_path / "none.json")


def test_good_file_keeps_images_without_annotations(tmp_path):
    path, content = good_json(tmp_path)
    content["annotations"] = content["annotations"][:1]
    content["annotations"][0]["bbox"] = [-0.5, 1, 9, 2]  # within a pixel: clipped
    path.write_text(json.dumps(content))
    dataset = CocoDataset(path)
    assert dataset.class_names == ["background", "cell"] and dataset.category_ids == {1: 3}
    np.testing.assert_array_equal(dataset[0].boxes, [[0, 1, 8, 3]])
    assert dataset[1].boxes.shape == (0, 4) and dataset[1].labels.dtype == np.int64
    assert dataset[0].image.shape == (1, 6, 8) and dataset[0].image.dtype == np.float32


def test_nuclei_conversion(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "prepare_nuclei_coco", ROOT / "benchmarks" / "detection" / "prepare_nuclei_coco.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path)])
    for split, count in (("train", 106), ("test", 32)):
        coco = CocoDataset(tmp_path / f"{split}.json")
        folder = FolderDataset(NUCLEI / split, masks="instances")
        assert coco.class_names == ["background", "nucleus"] and len(coco) == len(folder) == 2
        assert sum(len(s.boxes) for s in coco) == count
        for sample, original in zip(coco, folder):
            assert sample.name == original.name
            np.testing.assert_array_equal(sample.image, original.image)
            np.testing.assert_array_equal(sample.boxes,
                                          boxes_from_instances(original.instances)[0])
