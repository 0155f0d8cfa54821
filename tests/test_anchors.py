"""scratchseg.detection.anchors: count, order, centres, areas and aspect ratios."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchseg.detection.anchors import anchor_grid
from scratchseg.detection.boxes import box_area


def anchor_reference(height, width, stride, sizes, ratios):
    rows = []
    for y, x in itertools.product(range(height), range(width)):
        cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
        for s, r in itertools.product(sizes, ratios):      # sizes outer, ratios inner
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return np.array(rows).reshape(-1, 4)


@given(st.integers(0, 5), st.integers(0, 5), st.sampled_from([1, 4, 16, 7.5]),
       st.lists(st.sampled_from([8, 32, 128, 256, 512]), min_size=1, max_size=3),
       st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=1, max_size=3))
def test_matches_loop_reference(height, width, stride, sizes, ratios):
    anchors = anchor_grid(height, width, stride, sizes, ratios)
    assert anchors.shape == (height * width * len(sizes) * len(ratios), 4)
    np.testing.assert_allclose(anchors, anchor_reference(height, width, stride, sizes, ratios),
                               rtol=1e-12, atol=1e-12)


def test_order_centres_areas_ratios():
    sizes, ratios, stride, height, width = (128, 256, 512), (0.5, 1.0, 2.0), 16, 3, 4
    anchors = anchor_grid(height, width, stride, sizes, ratios).reshape(height, width, 9, 4)
    centres = (anchors[..., :2] + anchors[..., 2:]) / 2
    np.testing.assert_allclose(centres[2, 1, 5], [1.5 * 16, 2.5 * 16])   # cell (y=2, x=1)
    np.testing.assert_allclose(centres[..., 0], np.broadcast_to(
        ((np.arange(width) + 0.5) * stride)[None, :, None], (height, width, 9)))
    w = anchors[..., 2] - anchors[..., 0]
    h = anchors[..., 3] - anchors[..., 1]
    a = 1 * 3 + 2                                            # size 256, ratio 2.0
    np.testing.assert_allclose(box_area(anchors.reshape(-1, 4)).reshape(height, width, 9),
                               np.broadcast_to(np.repeat(np.square(sizes), 3), (3, 4, 9)))
    np.testing.assert_allclose(h[0, 0, a] / w[0, 0, a], 2.0)
    np.testing.assert_allclose((h / w)[0, 0], np.tile(ratios, 3))
    flat = anchor_grid(height, width, stride, sizes, ratios)
    np.testing.assert_array_equal(flat[(2 * width + 1) * 9 + a], anchors[2, 1, a])


def test_matches_rpn_output_transpose():
    """Per-anchor values laid out as an RPN's (A, H, W) conv map line up with the rows."""
    height, width, sizes, ratios = 2, 3, (32, 64), (0.5, 1.0, 2.0)
    anchors = anchor_grid(height, width, 8, sizes, ratios)
    count = len(sizes) * len(ratios)
    conv = np.arange(count * height * width).reshape(count, height, width)   # value = a*HW + yx
    flat = conv.transpose(1, 2, 0).reshape(-1)
    rows = np.arange(len(anchors))
    cell, a = rows // count, rows % count
    np.testing.assert_array_equal(flat, a * height * width + cell)


@pytest.mark.parametrize("args", [(-1, 2, 16, (32,), (1.0,)), (2, 2, 0, (32,), (1.0,)),
                                  (2, 2, 16, (), (1.0,)), (2, 2, 16, (32,), (0.0,))])
def test_errors(args):
    with pytest.raises(ValueError, match="anchor_grid"):
        anchor_grid(*args)
