"""What R-CNN, Fast R-CNN and Faster R-CNN share: the backbone, the head, the read-out.

A detector is a Module with ``train_image(image, boxes, labels, proposals, rng,
scale)``, which runs one image forward and backward (gradients accumulate, times
``scale``) and returns its losses, and ``detect(image, proposals=None)``, which
returns the detections and the seconds each stage took: "proposals", "cnn" and
"heads". Images are (C, H, W) float32 host arrays, boxes (K, 4) (x1, y1, x2, y2).
"""

import contextlib
import time
from typing import NamedTuple

import numpy

from scratchseg.backend import to_device
from scratchseg.detection.backbone import Backbone
from scratchseg.detection.heads import BoxHead, detections_from_head
from scratchseg.detection.selective_search import selective_search
from scratchseg.nn.module import Module


class Detections(NamedTuple):
    boxes: numpy.ndarray   # (D, 4) float32
    scores: numpy.ndarray  # (D,) float32
    labels: numpy.ndarray  # (D,) int64, 1..num_classes


class Stopwatch:
    """Seconds per named stage: ``with watch("cnn"): ...`` adds to ``watch.seconds["cnn"]``."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, stage):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class Detector(Module):
    """The shared parts; subclasses set ``kind`` and write train_image and detect."""

    kind = None
    uses_selective_search = True
    rois_per_image = 64  # the head's minibatch of RoIs per training image

    def __init__(self, in_channels=1, num_classes=3, *, channels=(16, 32, 64), pool_size=5,
                 hidden=256, seed=0, dtype="float32", backend="numpy"):
        super().__init__()
        rng = numpy.random.default_rng(seed)
        self.config = dict(kind=self.kind, in_channels=in_channels, num_classes=num_classes,
                           channels=list(channels), pool_size=pool_size, hidden=hidden)
        self.backend, self.dtype, self.pool_size = backend, dtype, pool_size
        self.backbone = self.add("backbone", Backbone(in_channels, tuple(channels), rng=rng,
                                                      dtype=dtype, backend=backend))
        self._build(rng, dtype, backend)
        self.head = self.add("head", BoxHead(channels[-1] * pool_size ** 2, hidden, num_classes,
                                             rng=rng, dtype=dtype, backend=backend))

    def _build(self, rng, dtype, backend):
        """Parts between the backbone and the head (the RPN, RoI pooling)."""

    def _input(self, images):
        """A host array as the network's input: its dtype, on its device."""
        return to_device(numpy.ascontiguousarray(images, dtype=self.dtype), self.backend)

    def proposals(self, image):
        """Selective search's boxes for ``image`` (R-CNN and Fast R-CNN)."""
        return selective_search(image)

    def _timed_proposals(self, image, proposals):
        """(the given proposals, else selective search's, and a Stopwatch that timed them)."""
        watch = Stopwatch()
        with watch("proposals"):
            if proposals is None:
                proposals = self.proposals(image)
        return proposals, watch

    def _read_out(self, rois, scores, offsets, image):
        """Detections from the head's outputs, given as one array or a list of chunks."""
        if len(rois) == 0:
            return Detections(numpy.zeros((0, 4), numpy.float32), numpy.zeros(0, numpy.float32),
                              numpy.zeros(0, numpy.int64))
        if isinstance(scores, list):
            scores, offsets = numpy.concatenate(scores), numpy.concatenate(offsets)
        return Detections(*detections_from_head(rois, scores, offsets, image.shape[1:]))
