"""Faster R-CNN (Ren et al., 2015): the RPN proposes regions on the shared feature map.

Fast R-CNN with selective search replaced by a Region Proposal Network: its
objectness and offsets for the anchors at every feature cell give proposals
(decoded, NMS at 0.7), which RoI pooling and the head then read as in Fast
R-CNN. Training is approximate joint training: one backward sums the RPN's
and the head's gradients on the feature map, and no gradient flows through the
proposals' coordinates.
"""

from scratchseg.detection.anchors import anchor_grid
from scratchseg.detection.detector import Stopwatch
from scratchseg.detection.fast_rcnn import FastRCNN
from scratchseg.detection.heads import NO_ROIS, box_head_loss, sample_rois
from scratchseg.detection.rpn import RPNHead, propose, rpn_loss
from scratchseg.grad_mode import no_grad

ANCHOR_SIZES = (16, 32, 64)      # pixels: the square root of the anchor's area
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width
# Per 32 x 32 feature cells (a 128 x 128 image), scaled with the feature map's area: the
# best-scoring anchors NMS sees, and the proposals kept for training and for testing.
PRE_NMS, TRAIN_PROPOSALS, TEST_PROPOSALS = 300, 300, 100
CELLS = 32 * 32


class FasterRCNN(FastRCNN):
    kind = "faster-rcnn"
    uses_selective_search = False

    def _build(self, rng, dtype, backend):
        self.rpn = self.add("rpn", RPNHead(self.backbone.out_channels,
                                           len(ANCHOR_SIZES) * len(ASPECT_RATIOS), rng=rng,
                                           dtype=dtype, backend=backend))
        super()._build(rng, dtype, backend)

    def anchors(self, features):
        height, width = features.shape[2:]
        return anchor_grid(height, width, self.backbone.stride, ANCHOR_SIZES, ASPECT_RATIOS)

    def _propose(self, objectness, offsets, anchors, image, kept):
        """RPN proposals for one image: ``kept`` (and PRE_NMS) per CELLS feature cells."""
        scale = len(anchors) / (self.rpn.num_anchors * CELLS)
        return propose(objectness[0], offsets[0], anchors, image.shape[1:],
                       pre_nms=max(1, round(PRE_NMS * scale)),
                       post_nms=max(1, round(kept * scale)))

    def train_image(self, image, boxes, labels, proposals, rng, scale=1.0):
        """Both losses from one forward; ``proposals`` is unused (the RPN makes them)."""
        features = self.backbone.forward(self._input(image[None]))
        objectness, offsets = self.rpn.forward(features)
        anchors = self.anchors(features)
        losses, dobjectness, drpn = rpn_loss(objectness[0], offsets[0], anchors, boxes, rng)
        proposals, _ = self._propose(objectness, offsets, anchors, image, TRAIN_PROPOSALS)
        rois, roi_labels, targets = sample_rois(proposals, boxes, labels, rng,
                                                batch_size=self.rois_per_image,
                                                negative=(0.0, 0.5))
        dfeatures = self.rpn.backward(dobjectness[None] * scale, drpn[None] * scale,
                                      features.shape)
        head_losses = dict(NO_ROIS)
        if len(rois):
            scores, box_offsets = self.head.forward(self._pooled(features, rois))
            head_losses, dscores, doffsets = box_head_loss(scores, box_offsets, roi_labels,
                                                           targets)
            dpooled = self.head.backward(dscores * scale, doffsets * scale)
            dfeatures += self.roi_pool.backward(dpooled)
        self.backbone.backward(dfeatures)
        return {**losses, **head_losses}

    def proposals(self, image):
        """The RPN's proposals for ``image`` (boxes, scores), without the head."""
        with no_grad():
            features = self.backbone.forward(self._input(image[None]))
            objectness, offsets = self.rpn.forward(features)
        return self._propose(objectness, offsets, self.anchors(features), image,
                             TEST_PROPOSALS)

    def detect(self, image, proposals=None):
        """``proposals`` is unused: the RPN makes them from the shared features."""
        watch = Stopwatch()
        with no_grad():
            with watch("cnn"):
                features = self.backbone.forward(self._input(image[None]))
            with watch("proposals"):
                objectness, offsets = self.rpn.forward(features)
                rois, _ = self._propose(objectness, offsets, self.anchors(features), image,
                                        TEST_PROPOSALS)
            with watch("heads"):
                scores, box_offsets = self.head.forward(self._pooled(features, rois))
                detections = self._read_out(rois, scores, box_offsets, image)
        return detections, watch.seconds
