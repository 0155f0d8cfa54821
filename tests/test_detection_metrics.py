"""COCO average precision: hand-computed cases and pycocotools' COCOeval as the oracle."""

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.detection.data import DetectionSample
from scratchseg.detection.evaluate import RECALL_POINTS, average_precision, coco_iou


def truth(boxes, labels, crowd=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool)
    return DetectionSample(np.zeros((1, 8, 8), np.float32), boxes,
                           np.asarray(labels, np.int64), "x", 0, crowd)


def found(boxes, scores, labels):
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float64),
            np.asarray(labels, np.int64))


def xywh(box):
    box = np.asarray(box, np.float64)
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def quiet(call, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args)


def cocoeval(ground_truth, detections, num_classes, max_detections=100):
    """(stats[0:3], precision (T, R, K)) of pycocotools' COCOeval, images ids 1..N.

    summarize's stats[0] uses 100 detections whatever maxDets says (stats[1:3] use
    maxDets[2]), so for another max_detections it is the mean of the precision array,
    as summarize computes it. Skips the test where pycocotools is not installed."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1, "width": 100, "height": 100} for i in range(len(ground_truth))]
    categories = [{"id": k, "name": str(k)} for k in range(1, num_classes + 1)]
    annotations = []
    for i, sample in enumerate(ground_truth):
        for box, label, crowd in zip(sample.boxes, sample.labels, sample.crowd):
            bbox = xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(label), "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": int(crowd)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
    quiet(gt.createIndex)
    results = [{"image_id": i + 1, "category_id": int(label), "bbox": xywh(box),
                "score": float(score)}
               for i, (boxes, scores, labels) in enumerate(detections)
               for box, score, label in zip(boxes, scores, labels)]
    if results:
        dt = quiet(gt.loadRes, results)
    else:  # loadRes cannot take an empty list
        dt = COCO()
        dt.dataset = {"images": images, "annotations": [], "categories": categories}
        quiet(dt.createIndex)
    evaluation = COCOeval(gt, dt, "bbox")
    if max_detections != 100:
        evaluation.params.maxDets = [max_detections] * 3
    quiet(evaluation.evaluate)
    quiet(evaluation.accumulate)
    quiet(evaluation.summarize)
    precision = evaluation.eval["precision"][:, :, :, 0, 2]
    stats = evaluation.stats[:3].copy()
    if max_detections != 100:
        valid = precision[precision > -1]
        stats[0] = np.mean(valid) if valid.size else -1
    return stats, precision


def random_case(rng, num_images, num_classes, integer, tied, crowded, many):
    """Ground truth and jittered detections plus false positives; see the module tests."""
    def draw_boxes(count, low=0.0, high=60.0):
        xy = rng.uniform(low, high, size=(count, 2))
        wh = rng.uniform(2.0, 30.0, size=(count, 2))
        boxes = np.hstack([xy, xy + wh])
        return np.round(boxes) if integer else boxes

    ground_truth, detections = [], []
    for image in range(num_images):
        count = int(rng.integers(0, 6))
        boxes = draw_boxes(count)
        labels = rng.integers(1, num_classes + 1, size=count)
        crowd = rng.random(count) < (0.2 if crowded else 0.0)
        ground_truth.append(truth(boxes, labels, crowd))
        copies = np.repeat(np.arange(count), rng.integers(0, 3, size=count))
        size = (boxes[copies, 2:] - boxes[copies, :2]) if count else np.zeros((0, 2))
        shift = rng.normal(0, 0.15, size=(len(copies), 4)) * np.tile(size, 2)
        jittered = boxes[copies] + (np.round(shift) if integer else shift)
        jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 1)
        wrong = rng.random(len(copies)) < 0.1
        det_labels = np.where(wrong, rng.integers(1, num_classes + 1, size=len(copies)),
                              labels[copies])
        extra = int(rng.integers(0, 4)) + (110 if many and image == 0 else 0)
        det_boxes = np.vstack([jittered, draw_boxes(extra)])
        det_labels = np.concatenate([det_labels, rng.integers(1, num_classes + 1, size=extra)])
        total = len(det_boxes)
        scores = rng.choice([0.25, 0.5, 0.75], size=total) if tied else rng.random(total)
        detections.append(found(det_boxes, scores, det_labels))
    return ground_truth, detections


def assert_matches_cocoeval(ground_truth, detections, num_classes, max_detections=100):
    result = average_precision(ground_truth, detections, num_classes,
                               max_detections=max_detections)
    stats, precision = cocoeval(ground_truth, detections, num_classes, max_detections)
    ours = np.array([result["map"], result["map50"], result["map75"]])
    expected = np.where(stats == -1, np.nan, stats)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(result["precision"], np.where(precision == -1, np.nan, precision),
                               rtol=0, atol=1e-12, equal_nan=True)
    for k in range(num_classes):
        valid = precision[:, :, k] > -1
        ap = precision[:, :, k].mean() if valid.all() else np.nan
        ap50 = precision[0, :, k].mean() if valid.all() else np.nan
        assert not valid.any() or valid.all()
        per_class = result["per_class"][k + 1]
        np.testing.assert_allclose([per_class["ap"], per_class["ap50"]], [ap, ap50],
                                   rtol=0, atol=1e-12, equal_nan=True)
    return result


@given(seed=st.integers(0, 2**32 - 1), num_images=st.integers(1, 5),
       num_classes=st.integers(1, 4), integer=st.booleans(), tied=st.booleans(),
       crowded=st.booleans(), many=st.booleans())
def test_matches_cocoeval_on_random_cases(seed, num_images, num_classes, integer, tied,
                                          crowded, many):
    rng = np.random.default_rng(seed)
    case = random_case(rng, num_images, num_classes, integer, tied, crowded, many)
    assert_matches_cocoeval(*case, num_classes)


@given(seed=st.integers(0, 2**32 - 1), max_detections=st.integers(1, 12))
def test_max_detections_matches_cocoeval(seed, max_detections):
    rng = np.random.default_rng(seed)
    case = random_case(rng, 3, 2, integer=False, tied=True, crowded=True, many=False)
    assert_matches_cocoeval(*case, 2, max_detections=max_detections)


def test_many_tied_scores_rank_in_input_order():
    """40 detections of one score (TP, FP alternating over 20 gts): the stable order decides."""
    boxes = np.array([[3 * i, 0, 3 * i + 2, 2] for i in range(20)], np.float32)
    far = boxes + np.array([0, 50, 0, 50], np.float32)
    dets = np.empty((40, 4), np.float32)
    dets[0::2], dets[1::2] = far, boxes  # FP first, then its TP
    ground_truth = [truth(boxes, np.ones(20))]
    detections = [found(dets, np.full(40, 0.5), np.ones(40))]
    result = assert_matches_cocoeval(ground_truth, detections, 1)
    # precision k / (2k) = 0.5 at every recall k / 20
    assert result["map"] == pytest.approx(0.5, abs=1e-12)


def test_one_perfect_detection_is_one():
    result = average_precision([truth([[1, 2, 5, 7]], [1])], [found([[1, 2, 5, 7]], [0.9], [1])],
                               num_classes=1)
    for key in ("map", "map50", "map75"):
        assert result[key] == pytest.approx(1.0, abs=1e-12)
    assert result["per_class"][1]["ap"] == pytest.approx(1.0, abs=1e-12)


def test_false_positive_above_true_positive():
    """Ranks FP, TP on one gt: precision (0, 1/2) made monotone is 1/2 at every recall."""
    result = average_precision([truth([[0, 0, 10, 10]], [1])],
                               [found([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])], 1)
    assert result["map"] == pytest.approx(0.5, abs=1e-12)


def test_interpolated_value_of_tp_fp_tp():
    """Two gts, ranks TP, FP, TP: precision (1, 1/2, 2/3) -> (1, 2/3, 2/3); recall (1/2, 1/2, 1).
    The 101 recall points up to 0.5 read 1, the others 2/3."""
    gt = [truth([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    dets = [found([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7],
                  [1, 1, 1])]
    expected = (np.sum(RECALL_POINTS <= 0.5) + np.sum(RECALL_POINTS > 0.5) * 2 / 3) / 101
    result = average_precision(gt, dets, 1)
    assert result["map"] == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_iou_on_the_threshold_matches():
    """IoU exactly 0.5 matches at t = 0.5 and at no higher threshold: AP@[.5:.95] = 1/10."""
    result = average_precision([truth([[0, 0, 10, 10]], [1])],
                               [found([[0, 0, 10, 20]], [0.9], [1])], 1)
    assert result["map50"] == pytest.approx(1.0, abs=1e-12)
    assert result["map75"] == 0.0
    assert result["map"] == pytest.approx(0.1, abs=1e-12)


def test_detection_on_a_crowd_box_is_ignored():
    gt = [truth([[0, 0, 10, 10], [20, 20, 60, 60]], [1, 1], crowd=[False, True])]
    dets = [found([[30, 30, 40, 40], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])]
    assert average_precision(gt, dets, 1)["map"] == pytest.approx(1.0, abs=1e-12)
    assert coco_iou([[30, 30, 40, 40]], [[20, 20, 60, 60]], [True])[0, 0] == 1.0


def test_equal_iou_goes_to_the_last_ground_truth():
    """A's IoU is 2/3 with both gts; COCOeval gives it the later one (gt 2), so B, which
    overlaps only gt 1 well, still finds a match: two TPs at t <= 2/3."""
    gt = [truth([[0, 0, 10, 10], [5, 0, 15, 10]], [1, 1])]
    dets = [found([[0, 0, 15, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])]
    result = assert_matches_cocoeval(gt, dets, 1)
    assert result["map50"] == pytest.approx(1.0, abs=1e-12)


def test_a_crowd_box_takes_any_number_of_detections():
    gt = [truth([[0, 0, 10, 10], [20, 20, 60, 60]], [1, 1], crowd=[False, True])]
    dets = [found([[30, 30, 40, 40], [25, 25, 35, 35], [0, 0, 10, 10]], [0.9, 0.85, 0.8],
                  [1, 1, 1])]
    result = assert_matches_cocoeval(gt, dets, 1)
    assert result["map"] == pytest.approx(1.0, abs=1e-12)


def test_threshold_one_is_clamped_as_cocoeval_does():
    """IoU 1 - 1e-11 (float64 boxes) still matches at t = 1: COCOeval uses min(t, 1 - 1e-10)."""
    gt = [truth([[0, 0, 10, 10]], [1])]
    dets = [(np.array([[0, 0, 10, 10 + 1e-10]]), np.array([0.9]), np.array([1]))]
    result = average_precision(gt, dets, 1, iou_thresholds=[1.0])
    assert result["map"] == pytest.approx(1.0, abs=1e-12)


def test_max_detections_cuts_each_image():
    """101 confident false positives push the one true positive out of the best 100."""
    fps = np.array([[50 + i % 10, 50, 52 + i % 10, 52] for i in range(101)], np.float32)
    dets = [found(np.vstack([fps, [[0, 0, 10, 10]]]), np.r_[np.full(101, 0.9), 0.1],
                  np.ones(102))]
    gt = [truth([[0, 0, 10, 10]], [1])]
    assert average_precision(gt, dets, 1)["map"] == 0.0
    assert average_precision(gt, dets, 1, max_detections=200)["map"] > 0


def test_classes_without_ground_truth_are_nan_and_left_out():
    gt = [truth([[0, 0, 10, 10]], [2])]
    dets = [found([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.8], [2, 1])]
    result = average_precision(gt, dets, 3)
    assert np.isnan(result["per_class"][1]["ap"]) and np.isnan(result["per_class"][3]["ap50"])
    assert result["map"] == pytest.approx(1.0, abs=1e-12)
    assert len(result["iou_thresholds"]) == 10


def test_no_detections_at_all():
    result = assert_matches_cocoeval([truth([[0, 0, 10, 10]], [1]), truth([], [])],
                                     [found([], [], []), found([], [], [])], 1)
    assert result["map"] == 0.0


def test_bad_inputs_are_clear_errors():
    gt = [truth([[0, 0, 10, 10]], [1])]
    with pytest.raises(ValueError, match="1 ground-truth images but 2"):
        average_precision(gt, [found([], [], []), found([], [], [])], 1)
    with pytest.raises(ValueError, match=r"detections\[0\] has labels \[4\]; expected 1..3"):
        average_precision(gt, [found([[0, 0, 1, 1]], [0.5], [4])], 3)
    with pytest.raises(ValueError, match=r"detections\[0\] has 1 boxes, 2 scores"):
        average_precision(gt, [found([[0, 0, 1, 1]], [0.5, 0.4], [1])], 1)
    with pytest.raises(ValueError, match="non-finite scores"):
        average_precision(gt, [found([[0, 0, 1, 1]], [np.nan], [1])], 1)
