"""Fast R-CNN (Girshick, 2015): one feature map per image, RoI pooling per proposal.

The CNN runs once on the whole image. Each selective-search proposal, scaled by
the backbone's stride, is cut out of the feature map by RoI max pooling into a
P x P block, and the head classifies it and refines its box. Training sends
the head's gradient back through RoI pooling (each bin's gradient to its
window's first maximum) into the shared feature map and the backbone.
"""

import numpy

from scratchseg.detection.detector import Detector
from scratchseg.detection.heads import NO_ROIS, box_head_loss, sample_rois
from scratchseg.grad_mode import no_grad
from scratchseg.nn.layers import RoIMaxPool


def batch_rois(boxes):
    """(R, 5) rows [0, x1, y1, x2, y2]: the RoI pool's form for boxes on image 0."""
    return numpy.concatenate([numpy.zeros((len(boxes), 1)), boxes], axis=1)


class FastRCNN(Detector):
    kind = "fast-rcnn"

    def _build(self, rng, dtype, backend):
        self.roi_pool = self.add("roi_pool", RoIMaxPool(self.pool_size,
                                                        1.0 / self.backbone.stride))

    def _pooled(self, features, boxes):
        return self.roi_pool.forward(features, self._input(batch_rois(boxes)))

    def train_image(self, image, boxes, labels, proposals, rng, scale=1.0):
        rois, roi_labels, targets = sample_rois(proposals, boxes, labels, rng,
                                                batch_size=self.rois_per_image)
        if not len(rois):  # no object and no proposal near enough to be background
            return dict(NO_ROIS)
        features = self.backbone.forward(self._input(image[None]))
        scores, offsets = self.head.forward(self._pooled(features, rois))
        losses, dscores, doffsets = box_head_loss(scores, offsets, roi_labels, targets)
        dpooled = self.head.backward(dscores * scale, doffsets * scale)
        self.backbone.backward(self.roi_pool.backward(dpooled))
        return losses

    def detect(self, image, proposals=None):
        proposals, watch = self._timed_proposals(image, proposals)
        with no_grad():
            with watch("cnn"):
                features = self.backbone.forward(self._input(image[None]))
            with watch("heads"):
                scores, offsets = self.head.forward(self._pooled(features, proposals))
                detections = self._read_out(proposals, scores, offsets, image)
        return detections, watch.seconds
