"""R-CNN (Girshick et al., 2014): every proposal warped to a fixed size, through the CNN.

Selective search proposes regions; each, with a little context, is warped to
S x S pixels (S = 4 P, so the backbone gives a P x P feature block) and runs
through the whole CNN on its own, then the head classifies it and refines its
box. The CNN runs once per region, so the time grows with the proposals: the
cost Fast R-CNN removes. (The paper trains SVMs on the fine-tuned features; here
the softmax head is trained end to end, its "fine-tuning" stage.)
"""

from scratchseg.backend import to_numpy
from scratchseg.detection.detector import Detector
from scratchseg.detection.heads import NO_ROIS, box_head_loss, sample_rois
from scratchseg.detection.warp import warp_regions
from scratchseg.grad_mode import no_grad

CHUNK = 256  # regions per CNN batch at test time


class RCNN(Detector):
    kind = "rcnn"

    @property
    def crop_size(self):
        return self.backbone.stride * self.pool_size

    def train_image(self, image, boxes, labels, proposals, rng, scale=1.0):
        rois, roi_labels, targets = sample_rois(proposals, boxes, labels, rng,
                                                batch_size=self.rois_per_image)
        if not len(rois):  # no object and no proposal near enough to be background
            return dict(NO_ROIS)
        features = self.backbone.forward(self._input(warp_regions(image, rois, self.crop_size)))
        scores, offsets = self.head.forward(features)
        losses, dscores, doffsets = box_head_loss(scores, offsets, roi_labels, targets)
        self.backbone.backward(self.head.backward(dscores * scale, doffsets * scale))
        return losses

    def detect(self, image, proposals=None):
        proposals, watch = self._timed_proposals(image, proposals)
        scores, offsets = [], []
        with no_grad():
            for start in range(0, len(proposals), CHUNK):
                with watch("cnn"):
                    crops = warp_regions(image, proposals[start:start + CHUNK], self.crop_size)
                    features = self.backbone.forward(self._input(crops))
                with watch("heads"):
                    chunk_scores, chunk_offsets = self.head.forward(features)
                scores.append(to_numpy(chunk_scores))
                offsets.append(to_numpy(chunk_offsets))
        with watch("heads"):
            detections = self._read_out(proposals, scores, offsets, image)
        return detections, watch.seconds
