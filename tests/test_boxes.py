"""scratchseg.detection.boxes against plain Python-loop references, torch, and torchvision
when it loads."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.detection.boxes import (
    box_area,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    remove_small_boxes,
)


def random_boxes(rng, count, extent=50.0, min_side=0.0):
    """(count, 4) valid boxes: corners in [0, extent), sides >= min_side, some on a grid."""
    xy = rng.uniform(0, extent, (count, 2))
    wh = min_side + rng.uniform(0, extent / 2, (count, 2))
    xy[::3] = np.round(xy[::3])                  # integer corners: exact touching and ties
    wh[::3] = np.maximum(np.round(wh[::3]), math.ceil(min_side))
    return np.concatenate([xy, xy + wh], axis=1)


def iou_reference(a, b):
    out = np.zeros((len(a), len(b)))
    for n, (ax1, ay1, ax2, ay2) in enumerate(a.tolist()):
        for m, (bx1, by1, bx2, by2) in enumerate(b.tolist()):
            width = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            inter = width * max(0.0, min(ay2, by2) - max(ay1, by1))
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            out[n, m] = inter / union if union > 0 else 0.0
    return out


counts = st.integers(0, 12)
seeds = st.integers(0, 2**32 - 1)


def test_area_and_pixel_convention():
    boxes = np.array([[3, 0, 6, 2], [1.5, 1.0, 2.0, 4.0], [2, 2, 2, 5]])
    np.testing.assert_array_equal(box_area(boxes), [6.0, 1.5, 0.0])
    assert box_area(np.zeros((0, 4))).shape == (0,)
    assert box_area(np.ones((2, 4), np.float32)).dtype == np.float32


@given(counts, counts, seeds)
def test_iou_matches_loop_reference(n, m, seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, n), random_boxes(rng, m)
    iou = box_iou(a, b)
    assert iou.shape == (n, m)
    np.testing.assert_allclose(iou, iou_reference(a, b), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(box_iou(b, a), iou.T, rtol=1e-12, atol=1e-15)


def test_iou_known_values_and_zero_union():
    a = np.array([[0, 0, 2, 2], [0, 0, 0, 0]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [0, 0, 0, 0]], float)
    expected = [[1 / 7, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-15)


def test_iou_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    lt = torch.maximum(ta[:, None, :2], tb[None, :, :2])
    rb = torch.minimum(ta[:, None, 2:], tb[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    expected = inter / (area(ta)[:, None] + area(tb)[None, :] - inter)
    np.testing.assert_allclose(box_iou(a, b), expected.numpy(), rtol=1e-12)


def test_iou_matches_torchvision(rng):
    try:
        import torch
        from torchvision.ops import box_iou as tv_box_iou
    except Exception as error:  # torchvision is not a dependency and may not load
        pytest.skip(f"torchvision.ops does not load here: {error!r}")
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    expected = tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-12)


def test_clip():
    boxes = np.array([[-3, -1, 5, 20], [2, 3, 4, 5], [12, 11, 15, 30]], float)
    clipped = clip_boxes(boxes, height=10, width=8)
    np.testing.assert_array_equal(clipped, [[0, 0, 5, 10], [2, 3, 4, 5], [8, 10, 8, 10]])
    assert boxes[0, 0] == -3                                     # a copy
    with pytest.raises(ValueError, match="clip_boxes"):
        clip_boxes(boxes, -1, 3)


@given(counts, seeds, st.sampled_from([0.0, 1.0, 2.5, 7.0]))
def test_remove_small_matches_loop(n, seed, min_size):
    boxes = random_boxes(np.random.default_rng(seed), n, extent=10)
    expected = [k for k, (x1, y1, x2, y2) in enumerate(boxes.tolist())
                if x2 - x1 >= min_size and y2 - y1 >= min_size]
    kept = remove_small_boxes(boxes, min_size)
    assert kept.dtype == np.int64
    np.testing.assert_array_equal(kept, expected)


def test_remove_small_keeps_exact_edge():
    boxes = np.array([[0, 0, 4, 4], [0, 0, 3.999, 4], [1, 1, 5, 5.5]])
    np.testing.assert_array_equal(remove_small_boxes(boxes, 4), [0, 2])


def encode_reference(p, g, weights):
    wx, wy, ww, wh = weights
    out = []
    for (px1, py1, px2, py2), (gx1, gy1, gx2, gy2) in zip(p.tolist(), g.tolist()):
        pw, ph, gw, gh = px2 - px1, py2 - py1, gx2 - gx1, gy2 - gy1
        px, py, gx, gy = px1 + pw / 2, py1 + ph / 2, gx1 + gw / 2, gy1 + gh / 2
        out.append([wx * (gx - px) / pw, wy * (gy - py) / ph,
                    ww * math.log(gw / pw), wh * math.log(gh / ph)])
    return np.array(out).reshape(-1, 4)


weight_choices = st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])


@given(counts, seeds, weight_choices)
def test_encode_matches_reference_and_decode_inverts(n, seed, weights):
    rng = np.random.default_rng(seed)
    reference, target = random_boxes(rng, n, min_side=0.5), random_boxes(rng, n, min_side=0.5)
    deltas = encode_boxes(reference, target, weights)
    np.testing.assert_allclose(deltas, encode_reference(reference, target, weights),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(decode_boxes(reference, deltas, weights), target,
                               rtol=1e-12, atol=1e-10)


@given(counts, seeds)
def test_decode_then_encode_inverts(n, seed):
    rng = np.random.default_rng(seed)
    reference = random_boxes(rng, n, min_side=1.0)
    deltas = rng.normal(0, 1, (n, 4))
    np.testing.assert_allclose(encode_boxes(reference, decode_boxes(reference, deltas)),
                               deltas, rtol=1e-10, atol=1e-10)


def test_decode_clamps_log_scale():
    reference = np.array([[0, 0, 16, 16], [0, 0, 16, 16]], float)
    deltas = np.array([[0, 0, 50, 50], [0, 0, math.log(1000 / 16), 1.0]])
    boxes = decode_boxes(reference, deltas)
    assert np.all(np.isfinite(boxes))
    np.testing.assert_allclose(boxes[0], [-492, -492, 508, 508], rtol=1e-12)  # 16 * 62.5
    np.testing.assert_allclose(boxes[1, 2] - boxes[1, 0], 1000, rtol=1e-12)
    np.testing.assert_allclose(boxes[1, 3] - boxes[1, 1], 16 * math.e, rtol=1e-12)
    wide = decode_boxes(reference[:1], np.array([[0, 0, 3.0, 0]]), max_log_scale=2.0)
    np.testing.assert_allclose(wide[0, 2] - wide[0, 0], 16 * math.exp(2.0), rtol=1e-12)


def test_dtype_kept():
    ref = np.array([[0, 0, 4, 4]], np.float32)
    assert encode_boxes(ref, ref + 1).dtype == np.float32
    assert decode_boxes(ref, np.zeros((1, 4), np.float32)).dtype == np.float32
    assert box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 2, 2]])).dtype == np.float64


@pytest.mark.parametrize("call, match", [
    (lambda: box_area(np.zeros((3, 5))), r"box_area: boxes must have shape \(K, 4\)"),
    (lambda: box_iou(np.zeros(4), np.zeros((1, 4))), r"box_iou: a must have shape"),
    (lambda: encode_boxes(np.ones((2, 4)), np.ones((3, 4))), "same K, got 2 and 3"),
    (lambda: decode_boxes(np.ones((2, 4)), np.ones((2, 3))), r"deltas must have shape"),
    (lambda: encode_boxes([[0, 0, 0, 2]], [[0, 0, 1, 1]]), "width and height > 0"),
    (lambda: encode_boxes([[0, 0, 1, 1]], [[0, 0, 1, 1]], (1, 1, 1)), "4 positive"),
])
def test_shape_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_error():
    with pytest.raises(TypeError, match="box_area"):
        box_area(np.array([["a", "b", "c", "d"]]))
