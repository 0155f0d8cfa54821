"""The detection head the three detectors share, its training targets and its read-out.

Each region of interest arrives as a (C, P, P) block of features (RoI-pooled from
the shared feature map, or the CNN run on a warped crop). Two fully connected
layers with ReLU make a hidden vector h; two linear layers read it out:

    scores  = W_cls h + b_cls     K + 1 classes, 0 the background
    offsets = W_box h + b_box     4 per foreground class: (tx, ty, tw, th)

Training (Fast R-CNN, section 2.3) draws a minibatch of RoIs per image, a quarter
of them foreground (IoU >= 0.5 with an object), the rest background (IoU in
[0.1, 0.5)), and minimises L = L_cls + L_box: softmax cross-entropy over all RoIs
plus smooth L1 on the true class's offsets of the foreground RoIs, divided by the
number of RoIs. The offsets are scaled by BOX_WEIGHTS (targets of about unit size).
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
from scratchseg.detection.nms import batched_nms
from scratchseg.detection.sampling import assign_boxes, sample_assignments
from scratchseg.nn.layers import Linear, ReLU
from scratchseg.nn.module import Module

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
NO_ROIS = {"classification": 0.0, "box": 0.0}  # the head's losses when no RoI was drawn


class BoxHead(Module):
    """(R, C, P, P) features -> (R, K+1) class scores and (R, 4K) box offsets."""

    def __init__(self, in_features, hidden, num_classes, *, rng, dtype="float32",
                 backend="numpy"):
        super().__init__()
        self.num_classes = num_classes
        self.fc1 = self.add("fc1", Linear(in_features, hidden, rng=rng, dtype=dtype,
                                          backend=backend))
        self.relu1 = self.add("relu1", ReLU())
        self.fc2 = self.add("fc2", Linear(hidden, hidden, rng=rng, dtype=dtype, backend=backend))
        self.relu2 = self.add("relu2", ReLU())
        self.cls = self.add("cls", Linear(hidden, num_classes + 1, rng=rng, dtype=dtype,
                                          backend=backend))
        self.box = self.add("box", Linear(hidden, 4 * num_classes, rng=rng, dtype=dtype,
                                          backend=backend))
        # Fast R-CNN's output initialisation: N(0, 0.01^2) for scores, N(0, 0.001^2) for boxes
        for layer, std in ((self.cls, 0.01), (self.box, 0.001)):
            weight = layer.params["weight"]
            weight *= weight.dtype.type(std / float(to_numpy(weight).std()))
        self._shape = None

    def forward(self, features):
        self._shape = features.shape
        h = self.relu1.forward(self.fc1.forward(features.reshape(features.shape[0], -1)))
        h = self.relu2.forward(self.fc2.forward(h))
        return self.cls.forward(h), self.box.forward(h)

    def backward(self, dscores, doffsets):
        """d(features): both read-outs' gradients meet in h, then back through fc2 and fc1."""
        dh = self.cls.backward(dscores) + self.box.backward(doffsets)
        dh = self.fc2.backward(self.relu2.backward(dh))
        return self.fc1.backward(self.relu1.backward(dh)).reshape(self._shape)


def sample_rois(proposals, gt_boxes, gt_labels, rng, *, batch_size=64, positive_fraction=0.25,
                positive=0.5, negative=(0.1, 0.5)):
    """The head's minibatch for one image: (rois (B, 4), labels (B,), offset targets (F, 4)).

    The ground-truth boxes join the proposals (so every object has a perfect RoI);
    foreground RoIs come first, their labels the matched object's class, then
    background RoIs with label 0. Targets are the foreground RoIs' encoded offsets.
    """
    candidates = numpy.concatenate([proposals, gt_boxes]).astype(numpy.float32)
    matched = assign_boxes(box_iou(gt_boxes, candidates), positive, negative)
    fg, bg = sample_assignments(matched, batch_size, positive_fraction, rng)
    rois = candidates[numpy.concatenate([fg, bg])]
    labels = numpy.concatenate([gt_labels[matched[fg]], numpy.zeros(len(bg), numpy.int64)])
    targets = encode_boxes(candidates[fg], gt_boxes[matched[fg]], BOX_WEIGHTS)
    return rois, labels, targets.astype(numpy.float32)


def box_head_loss(scores, offsets, labels, targets):
    """(losses, dscores, doffsets): L_cls + L_box for one image's RoIs, and its gradients.

    labels (R,) host ints (foreground first), targets (F, 4) for the F foreground
    RoIs. L_box = sum over foreground of smooth_L1(offsets of the true class -
    target) / R, the regression weight a mask over the (R, 4K) offsets.
    """
    device = backend_name(scores)
    count, classes = len(labels), scores.shape[1]
    ce, ce_cache = ops.softmax_cross_entropy_forward(
        scores.reshape(count, classes, 1, 1), to_device(labels.reshape(count, 1, 1), device))
    fg = numpy.flatnonzero(labels > 0)
    columns = 4 * (labels[fg, None] - 1) + numpy.arange(4)
    target = numpy.zeros(offsets.shape, dtype=offsets.dtype)
    weight = numpy.zeros(offsets.shape, dtype=offsets.dtype)
    target[fg[:, None], columns] = targets
    weight[fg[:, None], columns] = 1
    l1, l1_cache = ops.smooth_l1_forward(offsets, to_device(target, device), beta=1.0,
                                         weight=to_device(weight, device), reduction="sum")
    dscores = ops.softmax_cross_entropy_backward(1.0, ce_cache).reshape(count, classes)
    doffsets = ops.smooth_l1_backward(1.0 / count, l1_cache)
    return {"classification": float(ce), "box": float(l1) / count}, dscores, doffsets


def detections_from_head(rois, scores, offsets, image_size, *, score_threshold=0.05,
                         nms_threshold=0.5, max_detections=100):
    """(boxes (D, 4), scores (D,), labels (D,)): each RoI's box per class, NMS per class.

    p = softmax(scores); for every foreground class c, the RoI decoded by its
    offsets for c, clipped to the image, scored p_c. Boxes under score_threshold
    or under a pixel go, NMS runs per class, the best max_detections stay.
    """
    scores, offsets = to_numpy(scores).astype(numpy.float64), to_numpy(offsets)
    probs = numpy.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    count, num_classes = len(rois), probs.shape[1] - 1
    boxes = decode_boxes(numpy.repeat(rois, num_classes, axis=0),
                         offsets.reshape(count * num_classes, 4), BOX_WEIGHTS)
    boxes = clip_boxes(boxes, *image_size)
    box_scores = probs[:, 1:].reshape(-1)
    labels = numpy.tile(numpy.arange(1, num_classes + 1), count)
    keep = numpy.flatnonzero(box_scores > score_threshold)
    keep = keep[remove_small_boxes(boxes[keep], 1.0)]
    keep = keep[batched_nms(boxes[keep], box_scores[keep], labels[keep], nms_threshold)]
    keep = keep[:max_detections]
    return boxes[keep].astype(numpy.float32), box_scores[keep].astype(numpy.float32), labels[keep]
