"""Instance matching, DSB AP and panoptic quality against hand counts, brute force and StarDist."""

import json
from itertools import combinations, permutations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from scratchseg.instance_metrics import (
    THRESHOLDS,
    dataset_instance_scores,
    instance_scores,
    iou_matrix,
    match_instances,
)


def two_squares():
    """Truth: 4x4 squares 1 and 2. Prediction: 1 shifted a column (IoU 12/20 = 0.6),
    2 shifted two rows (IoU 8/24 = 1/3)."""
    true = np.zeros((8, 12), dtype=np.int64)
    true[0:4, 0:4] = 1
    true[0:4, 6:10] = 2
    pred = np.zeros_like(true)
    pred[0:4, 1:5] = 5
    pred[2:6, 6:10] = 9
    return true, pred


def row_table(result, key):
    return [row[key] for row in result["per_threshold"]]


def assert_plain_json(value):
    """Only dict, list, str, int and float (not NumPy scalars), and a lossless JSON round trip."""
    def walk(v):
        if isinstance(v, dict):
            assert all(type(k) is str for k in v)
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        else:
            assert type(v) in (int, float, str), f"{v!r} is a {type(v)}"
    walk(value)
    assert json.loads(json.dumps(value)) == value


# ---- brute-force references -------------------------------------------------------------

def loop_iou(true, pred):
    ids_true = sorted(set(true.ravel().tolist()) - {0})
    ids_pred = sorted(set(pred.ravel().tolist()) - {0})
    iou = np.zeros((len(ids_true), len(ids_pred)))
    for i, a in enumerate(ids_true):
        for j, b in enumerate(ids_pred):
            inter = np.sum((true == a) & (pred == b))
            union = np.sum((true == a) | (pred == b))
            iou[i, j] = inter / union
    return ids_true, ids_pred, iou


def best_matchings(iou, threshold):
    """The largest total IoU over every one-to-one matching of pairs >= threshold,
    and the set of matching sizes that reach it."""
    n_true, n_pred = iou.shape
    best, sizes = 0.0, {0}
    for k in range(1, min(n_true, n_pred) + 1):
        for rows in combinations(range(n_true), k):
            for cols in permutations(range(n_pred), k):
                scores = [iou[r, c] for r, c in zip(rows, cols)]
                if min(scores) < threshold:
                    continue
                total = sum(scores)
                if total > best + 1e-12:
                    best, sizes = total, {k}
                elif total > best - 1e-12:
                    sizes.add(k)
    return best, sizes


@st.composite
def label_pairs(draw, max_side=6, max_id=4):
    """A small label image and a prediction that keeps some of its pixels; the
    prediction's ids are spread out (0, 13, 23, ...) so they are not consecutive."""
    shape = draw(array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side))
    true = draw(arrays(np.int64, shape, elements=st.integers(0, max_id)))
    noise = draw(arrays(np.int64, shape, elements=st.integers(0, max_id)))
    keep = draw(arrays(np.bool_, shape))
    pred = np.where(keep, true, noise)
    return true, np.where(pred > 0, 10 * pred + 3, 0)


# ---- hand-computed cases ----------------------------------------------------------------

def test_two_shifted_squares():
    true, pred = two_squares()
    ids_true, ids_pred, iou = iou_matrix(true, pred)
    np.testing.assert_array_equal(ids_true, [1, 2])
    np.testing.assert_array_equal(ids_pred, [5, 9])
    assert iou.dtype == np.float64
    np.testing.assert_allclose(iou, [[0.6, 0.0], [0.0, 1 / 3]], rtol=1e-15)

    match = match_instances(true, pred, 0.5)
    assert (match.tp, match.fp, match.fn) == (1, 1, 1)
    np.testing.assert_array_equal(match.pairs, [[1, 5]])
    np.testing.assert_allclose(match.ious, [0.6])
    match = match_instances(true, pred, 0.3)
    assert (match.tp, match.fp, match.fn) == (2, 0, 0)
    np.testing.assert_allclose(match.ious, [0.6, 1 / 3])

    result = instance_scores(true, pred)
    assert (result["n_true"], result["n_pred"]) == (2, 2)
    assert row_table(result, "threshold") == list(THRESHOLDS)
    # IoU 0.6 matches at 0.5, 0.55 and 0.6; nothing matches from 0.65 on
    assert row_table(result, "tp") == [1, 1, 1] + [0] * 7
    assert row_table(result, "fp") == [1, 1, 1] + [2] * 7
    assert row_table(result, "fn") == [1, 1, 1] + [2] * 7
    assert row_table(result, "precision") == [0.5] * 3 + [0.0] * 7
    assert row_table(result, "recall") == [0.5] * 3 + [0.0] * 7
    assert row_table(result, "f1") == [0.5] * 3 + [0.0] * 7
    assert row_table(result, "ap") == pytest.approx([1 / 3] * 3 + [0.0] * 7)
    assert result["mean_ap"] == pytest.approx(0.1)
    # PQ = 0.6 / (1 + 1/2 + 1/2); SQ = 0.6 / 1; RQ = 1 / 2
    assert result["pq"] == pytest.approx(0.3)
    assert result["sq"] == pytest.approx(0.6)
    assert result["rq"] == pytest.approx(0.5)
    assert_plain_json(result)


def test_threshold_exactly_at_an_iou_counts():
    """IoU 11/20 = 0.55 and 15/20 = 0.75 are matched at 0.55 and 0.75, not above."""
    true = np.zeros((3, 40), dtype=np.int64)
    pred = np.zeros_like(true)
    true[0, 0:15], pred[0, 4:20] = 1, 1  # 11 shared of 20
    true[2, 0:15], pred[2, 0:20] = 2, 2  # 15 shared of 20
    np.testing.assert_array_equal(iou_matrix(true, pred)[2], [[0.55, 0.0], [0.0, 0.75]])
    assert match_instances(true, pred, 0.55).tp == 2
    assert match_instances(true, pred, 0.75).tp == 1
    assert match_instances(true, pred, 0.76).tp == 0
    result = instance_scores(true, pred)
    assert row_table(result, "tp") == [2, 2, 1, 1, 1, 1, 0, 0, 0, 0]


def test_split_object():
    """One true square cut into two predicted halves: IoU exactly 0.5 each, one of them matches."""
    true = np.zeros((4, 4), dtype=np.int64)
    true[:, :] = 7
    pred = np.zeros_like(true)
    pred[:, :2], pred[:, 2:] = 3, 9
    np.testing.assert_array_equal(iou_matrix(true, pred)[2], [[0.5, 0.5]])
    match = match_instances(true, pred, 0.5)
    assert (match.tp, match.fp, match.fn) == (1, 1, 0)
    assert match.ious.tolist() == [0.5]
    result = instance_scores(true, pred)
    assert row_table(result, "tp") == [1] + [0] * 9
    assert result["pq"] == pytest.approx(0.5 / 1.5)

    pred[:, :3], pred[:, 3] = 3, 9  # an unequal split: 12/16 and 4/16
    result = instance_scores(true, pred)
    assert row_table(result, "tp") == [1] * 6 + [0] * 4
    assert row_table(result, "fp") == [1] * 6 + [2] * 4
    assert result["pq"] == pytest.approx(0.75 / 1.5)


def test_merged_object():
    """Two true objects predicted as one: 12/16 and 4/16; the larger one matches up to 0.75."""
    true = np.zeros((4, 4), dtype=np.int64)
    true[:, :3], true[:, 3] = 1, 2
    pred = np.full((4, 4), 5)
    np.testing.assert_allclose(iou_matrix(true, pred)[2], [[0.75], [0.25]])
    match = match_instances(true, pred, 0.5)
    assert (match.tp, match.fp, match.fn) == (1, 0, 1)
    np.testing.assert_array_equal(match.pairs, [[1, 5]])
    result = instance_scores(true, pred)
    assert row_table(result, "precision") == [1.0] * 6 + [0.0] * 4
    assert row_table(result, "recall") == [0.5] * 6 + [0.0] * 4
    assert row_table(result, "f1") == pytest.approx([2 / 3] * 6 + [0.0] * 4)
    assert result["sq"] == 0.75 and result["rq"] == pytest.approx(2 / 3)


def test_empty_images():
    empty = np.zeros((5, 6), dtype=np.uint8)
    objects = np.zeros_like(empty)
    objects[1:3, 1:3], objects[4, 4] = 3, 8

    both = instance_scores(empty, empty)
    for row in both["per_threshold"]:
        assert (row["tp"], row["fp"], row["fn"]) == (0, 0, 0)
        assert row["precision"] == row["recall"] == row["f1"] == row["ap"] == 1.0
    assert both["mean_ap"] == both["pq"] == both["sq"] == both["rq"] == 1.0
    ids_true, ids_pred, iou = iou_matrix(empty, empty)
    assert ids_true.size == ids_pred.size == 0 and iou.shape == (0, 0)

    invented = instance_scores(empty, objects)
    missed = instance_scores(objects, empty)
    for result, (fp, fn) in ((invented, (2, 0)), (missed, (0, 2))):
        for row in result["per_threshold"]:
            assert (row["tp"], row["fp"], row["fn"]) == (0, fp, fn)
            assert row["precision"] == row["recall"] == row["f1"] == row["ap"] == 0.0
        assert result["mean_ap"] == result["pq"] == result["sq"] == result["rq"] == 0.0
    assert iou_matrix(objects, empty)[2].shape == (2, 0)
    assert match_instances(empty, objects).pairs.shape == (0, 2)


def test_non_consecutive_ids_and_dtypes():
    true = np.array([[0, 5, 5, 1000],
                     [0, 5, 0, 1000]], dtype=np.uint16)
    pred = np.array([[2**40, 2**40, 7, 7],
                     [0, 2**40, 0, 7]], dtype=np.int64)
    ids_true, ids_pred, iou = iou_matrix(true, pred)
    assert ids_true.tolist() == [5, 1000] and ids_pred.tolist() == [7, 2**40]
    # 5: 3 px, 1000: 2 px, 7: 3 px, 2**40: 3 px
    np.testing.assert_allclose(iou, [[1 / 5, 2 / 4], [2 / 3, 0.0]])
    match = match_instances(true, pred, 0.5)
    assert match.pairs.tolist() == [[5, 2**40], [1000, 7]]
    np.testing.assert_allclose(match.ious, [1 / 2, 2 / 3])


def test_perfect_prediction_scores_one():
    true, _ = two_squares()
    result = instance_scores(true, 3 * true)
    assert row_table(result, "ap") == [1.0] * 10
    assert result["mean_ap"] == result["pq"] == result["sq"] == result["rq"] == 1.0


def test_split_and_merge_in_one_image():
    """A split (1 -> 3, 4) beside a merge (5, 6 -> 8): one match each at 0.5, whichever half."""
    true = np.zeros((4, 10), dtype=np.int64)
    true[:, 0:4] = 1
    true[:, 6:8], true[:, 8:10] = 5, 6
    pred = np.zeros_like(true)
    pred[:, 0:2], pred[:, 2:4] = 3, 4
    pred[:, 6:10] = 8
    match = match_instances(true, pred, 0.5)
    assert (match.tp, match.fp, match.fn) == (2, 1, 1)
    assert match.ious.tolist() == [0.5, 0.5]
    assert match.pairs[:, 0].tolist() in ([1, 5], [1, 6])
    assert match.pairs[:, 1].tolist() in ([3, 8], [4, 8])
    assert match_instances(true, pred, 0.55).tp == 0


def test_custom_thresholds():
    true, pred = two_squares()
    result = instance_scores(true, pred, thresholds=[0.3, 0.9])
    assert row_table(result, "threshold") == [0.3, 0.9]
    assert row_table(result, "tp") == [2, 0]
    assert result["mean_ap"] == pytest.approx(0.5)
    assert result["pq"] == pytest.approx(0.3)  # PQ stays at 0.5


# ---- dataset aggregation ----------------------------------------------------------------

def test_dataset_sums_counts_before_the_ratios():
    true, pred = two_squares()  # TP 1, FP 1, FN 1 at 0.5
    perfect = np.zeros((4, 4), dtype=np.int64)
    perfect[1:3, 1:3] = 4  # TP 1
    empty = np.zeros((3, 3), dtype=np.int64)
    pairs = [(true, pred), (perfect, perfect), (empty, empty)]
    result = dataset_instance_scores(iter(pairs))
    assert result["n_images"] == 3
    assert (result["n_true"], result["n_pred"]) == (3, 3)
    first = result["per_threshold"][0]
    assert (first["tp"], first["fp"], first["fn"]) == (2, 1, 1)
    assert first["ap"] == pytest.approx(2 / 4)  # not the mean of 1/3, 1 and 1
    assert first["precision"] == pytest.approx(2 / 3)
    last = result["per_threshold"][-1]  # only the perfect square matches at 0.95
    assert (last["tp"], last["fp"], last["fn"]) == (1, 2, 2)
    assert last["ap"] == pytest.approx(1 / 5)
    assert result["mean_ap"] == pytest.approx((3 * 2 / 4 + 7 * 1 / 5) / 10)
    assert result["pq"] == pytest.approx((0.6 + 1.0) / (2 + 1 / 2 + 1 / 2))
    assert result["sq"] == pytest.approx(0.8)
    assert result["images"] == [instance_scores(t, p) for t, p in pairs]
    assert_plain_json(result)


def test_dataset_of_one_image_is_that_image():
    true, pred = two_squares()
    result = dataset_instance_scores([(true, pred)])
    assert {k: v for k, v in result.items() if k not in ("n_images", "images")} == \
        instance_scores(true, pred)


# ---- properties -------------------------------------------------------------------------

@given(label_pairs(), st.randoms(use_true_random=False))
def test_scores_do_not_depend_on_the_ids(pair, random):
    true, pred = pair
    ids = sorted(set(true.ravel().tolist()) - {0})
    new_ids = random.sample(range(1, 10_000), len(ids))
    relabelled = np.zeros_like(true)
    for old, new in zip(ids, new_ids):
        relabelled[true == old] = new
    assert instance_scores(relabelled, pred) == instance_scores(true, pred)
    _, _, iou = iou_matrix(true, pred)
    new_ids_sorted, _, new_iou = iou_matrix(relabelled, pred)
    order = [new_ids_sorted.tolist().index(new) for new in new_ids]
    np.testing.assert_array_equal(new_iou[order], iou)


@given(label_pairs())
def test_counts_add_up_and_ap_falls_with_the_threshold(pair):
    true, pred = pair
    result = instance_scores(true, pred)
    n_true, n_pred = len(set(true.ravel().tolist()) - {0}), len(set(pred.ravel().tolist()) - {0})
    assert (result["n_true"], result["n_pred"]) == (n_true, n_pred)
    for row in result["per_threshold"]:
        assert row["tp"] + row["fn"] == n_true
        assert row["tp"] + row["fp"] == n_pred
    ap = row_table(result, "ap")
    assert all(a >= b for a, b in zip(ap, ap[1:]))
    assert result["pq"] == pytest.approx(result["sq"] * result["rq"])
    assert 0.0 <= result["pq"] <= 1.0


@settings(max_examples=100)
@given(label_pairs())
def test_iou_matrix_matches_loops(pair):
    true, pred = pair
    ids_true, ids_pred, iou = iou_matrix(true, pred)
    loop_true, loop_pred, loop = loop_iou(true, pred)
    assert ids_true.tolist() == loop_true and ids_pred.tolist() == loop_pred
    np.testing.assert_allclose(iou, loop, rtol=1e-15)


@settings(max_examples=200)
@given(label_pairs(), st.sampled_from([0.05, 0.2, 1 / 3, 0.45, 0.5, 0.55, 2 / 3, 0.8, 1.0]))
def test_matching_matches_brute_force(pair, threshold):
    true, pred = pair
    _, _, iou = iou_matrix(true, pred)
    best, sizes = best_matchings(iou, threshold)
    match = match_instances(true, pred, threshold)
    assert match.ious.sum() == pytest.approx(best, abs=1e-12)
    assert match.tp in sizes
    assert np.all(match.ious >= threshold)
    if threshold >= 0.5:
        assert len(sizes) == 1  # unique
    assert len(set(match.pairs[:, 0].tolist())) == len(set(match.pairs[:, 1].tolist())) == match.tp


# ---- errors -----------------------------------------------------------------------------

def test_errors():
    good = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="iou_matrix: true_labels and pred_labels must have one"):
        iou_matrix(good, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="instance_scores: pred_labels must hold integer ids"):
        instance_scores(good, good.astype(float))
    with pytest.raises(ValueError, match=r"match_instances: true_labels must hold ids >= 0"):
        match_instances(good - 1, good)
    for threshold in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"match_instances: threshold must lie in \(0, 1\]"):
            match_instances(good, good, threshold)
    with pytest.raises(ValueError, match="instance_scores: thresholds must be a non-empty 1-D"):
        instance_scores(good, good, thresholds=[])
    with pytest.raises(ValueError, match="dataset_instance_scores: pairs is empty"):
        dataset_instance_scores([])
    with pytest.raises(ValueError, match=r"pairs\[1\] must be a \(true_labels, pred_labels\)"):
        dataset_instance_scores([(good, good), (good, good, good)])
    with pytest.raises(TypeError, match=r"dataset_instance_scores: pairs\[1\]: true_labels"):
        dataset_instance_scores([(good, good), (good.astype(np.float32), good)])


# ---- StarDist (skipped where it is not installed) ---------------------------------------

def random_label_pair(rng, size=48):
    """Up to 12 overlapping rectangles (later ones on top) and a prediction that
    jitters each edge by up to 2 px, drops some objects and invents a few."""
    true = np.zeros((size, size), dtype=np.int32)
    pred = np.zeros_like(true)
    for object_id in rng.choice(np.arange(1, 1000), size=rng.integers(0, 13), replace=False):
        top, left = rng.integers(0, size - 4, size=2)
        height, width = rng.integers(5, 17, size=2)
        true[top:top + height, left:left + width] = object_id
        if rng.random() < 0.85:
            t, lf, b, r = np.array([top, left, top + height, left + width]) + rng.integers(-2, 3, 4)
            pred[max(t, 0):max(b, 0), max(lf, 0):max(r, 0)] = object_id + 2000
    for object_id in range(3000, 3000 + rng.integers(0, 3)):
        top, left = rng.integers(0, size - 4, size=2)
        pred[top:top + 5, left:left + 5] = object_id
    return true, pred


def test_agrees_with_stardist():
    matching = pytest.importorskip("stardist.matching")
    rng = np.random.default_rng(0)
    pairs = [random_label_pair(rng) for _ in range(20)]
    for true, pred in pairs:
        ours = instance_scores(true, pred)
        if ours["n_true"] == ours["n_pred"] == 0:
            continue  # StarDist scores two empty images 0, we score them 1
        theirs = matching.matching(true, pred, thresh=THRESHOLDS)
        for row, stats in zip(ours["per_threshold"], theirs):
            assert (row["tp"], row["fp"], row["fn"]) == (stats.tp, stats.fp, stats.fn)
            assert_same_ratios(row, stats)
        # StarDist's IoUs are float32
        assert ours["pq"] == pytest.approx(theirs[0].panoptic_quality, abs=1e-6)
        assert ours["sq"] == pytest.approx(theirs[0].mean_matched_score, abs=1e-6)

    ours = dataset_instance_scores(pairs)
    theirs = matching.matching_dataset([t for t, _ in pairs], [p for _, p in pairs],
                                       thresh=THRESHOLDS, show_progress=False)
    for row, stats in zip(ours["per_threshold"], theirs):
        assert (row["tp"], row["fp"], row["fn"]) == (stats.tp, stats.fp, stats.fn)
        assert_same_ratios(row, stats)
    assert ours["pq"] == pytest.approx(theirs[0].panoptic_quality, abs=1e-6)


def assert_same_ratios(row, stats):
    for key, stardist_key in (("precision", "precision"), ("recall", "recall"),
                              ("f1", "f1"), ("ap", "accuracy")):
        assert row[key] == pytest.approx(getattr(stats, stardist_key), abs=1e-12), key
