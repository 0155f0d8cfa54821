"""Faster R-CNN's Region Proposal Network: objectness and box offsets for k anchors a cell.

A 3x3 convolution with ReLU slides over the shared feature map; two 1x1
convolutions read out, per cell and anchor, an objectness logit z and offsets
(tx, ty, tw, th) from the anchor to an object. Anchors are ordered (y, x, a)
(``anchors.anchor_grid``), so the (N, A, H, W) outputs are transposed to
(N, H*W*A) and (N, H*W*A, 4).

Training (Faster R-CNN, section 3.1.2) labels anchors with IoU >= 0.7 (or the
best anchor of an object) positive, IoU < 0.3 negative, draws 256 of them, at
most half positive, and minimises the sigmoid cross-entropy of z over those plus
smooth L1 (beta 1/9) on the positives' offsets, divided by the anchors drawn.
Proposals are the decoded anchors by objectness, clipped, cut by NMS at 0.7.
"""

import numpy

from scratchseg import ops
from scratchseg.backend import backend_name, to_device, to_numpy
from scratchseg.detection.boxes import (
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    remove_small_boxes,
)
from scratchseg.detection.nms import nms
from scratchseg.detection.sampling import assign_boxes, sample_assignments
from scratchseg.nn.layers import Conv2d, ReLU
from scratchseg.nn.module import Module


class RPNHead(Module):
    """(N, C, H, W) features -> objectness (N, H*W*A) and offsets (N, H*W*A, 4)."""

    def __init__(self, channels, num_anchors, *, rng, dtype="float32", backend="numpy"):
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = self.add("conv", Conv2d(channels, channels, 3, padding=1, rng=rng,
                                            dtype=dtype, backend=backend))
        self.relu = self.add("relu", ReLU())
        self.objectness = self.add("objectness", Conv2d(channels, num_anchors, 1, rng=rng,
                                                        dtype=dtype, backend=backend))
        self.offsets = self.add("offsets", Conv2d(channels, 4 * num_anchors, 1, rng=rng,
                                                  dtype=dtype, backend=backend))
        for layer in (self.objectness, self.offsets):  # N(0, 0.01^2), as the paper
            weight = layer.params["weight"]
            weight *= weight.dtype.type(0.01 / float(to_numpy(weight).std()))

    def forward(self, features):
        h = self.relu.forward(self.conv.forward(features))
        z, t = self.objectness.forward(h), self.offsets.forward(h)
        n, a, height, width = z.shape
        z = z.transpose(0, 2, 3, 1).reshape(n, height * width * a)
        t = t.reshape(n, a, 4, height, width).transpose(0, 3, 4, 1, 2)
        return z, t.reshape(n, height * width * a, 4)

    def backward(self, dz, dt, shape):
        """d(features) from the gradients of both outputs; ``shape`` is the features'."""
        n, _, height, width = shape
        a = self.num_anchors
        dz = dz.reshape(n, height, width, a).transpose(0, 3, 1, 2)
        dt = dt.reshape(n, height, width, a, 4).transpose(0, 3, 4, 1, 2)
        dh = (self.objectness.backward(dz.reshape(n, a, height, width))
              + self.offsets.backward(dt.reshape(n, 4 * a, height, width)))
        return self.conv.backward(self.relu.backward(dh))


def rpn_loss(objectness, offsets, anchors, gt_boxes, rng, *, batch_size=256,
             positive_fraction=0.5):
    """(losses, dobjectness, doffsets) for one image: objectness (M,), offsets (M, 4)."""
    device = backend_name(objectness)
    matched = assign_boxes(box_iou(gt_boxes, anchors), 0.7, (0.0, 0.3), keep_best_match=True)
    positives, negatives = sample_assignments(matched, batch_size, positive_fraction, rng)
    labels = numpy.full(len(anchors), -1, dtype=numpy.int64)
    labels[positives], labels[negatives] = 1, 0
    target = numpy.zeros(offsets.shape, dtype=offsets.dtype)
    weight = numpy.zeros(offsets.shape, dtype=offsets.dtype)
    target[positives] = encode_boxes(anchors[positives], gt_boxes[matched[positives]])
    weight[positives] = 1
    drawn = max(len(positives) + len(negatives), 1)
    bce, bce_cache = ops.sigmoid_cross_entropy_forward(objectness, to_device(labels, device))
    l1, l1_cache = ops.smooth_l1_forward(offsets, to_device(target, device), beta=1 / 9,
                                         weight=to_device(weight, device), reduction="sum")
    dobjectness = ops.sigmoid_cross_entropy_backward(1.0, bce_cache)
    doffsets = ops.smooth_l1_backward(1.0 / drawn, l1_cache)
    return {"objectness": float(bce), "rpn_box": float(l1) / drawn}, dobjectness, doffsets


def propose(objectness, offsets, anchors, image_size, *, pre_nms=1000, post_nms=300,
            nms_threshold=0.7, min_size=1.0):
    """(boxes (P, 4), scores (P,)): the best ``pre_nms`` anchors by objectness, decoded,
    clipped to the image, boxes under ``min_size`` pixels dropped, NMS, the best
    ``post_nms`` kept. No gradient flows through proposals (approximate joint training)."""
    scores = to_numpy(objectness).astype(numpy.float64)
    best = numpy.argsort(-scores, kind="stable")[:pre_nms]
    boxes = clip_boxes(decode_boxes(anchors[best], to_numpy(offsets)[best]), *image_size)
    scores = scores[best]
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    keep = nms(boxes, scores, nms_threshold)[:post_nms]
    return boxes[keep].astype(numpy.float32), scores[keep]
