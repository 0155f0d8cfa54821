"""R-CNN, Fast R-CNN and Faster R-CNN: every parameter's gradient against finite
differences (float64, through the heads, RoI pooling or the warped crops, the RPN and
into the backbone), the shapes of what they return, warping, and learning."""

import numpy as np
import pytest

from scratchseg.detection.backbone import Backbone
from scratchseg.detection.data import SyntheticBoxes
from scratchseg.detection.fast_rcnn import FastRCNN
from scratchseg.detection.faster_rcnn import FasterRCNN
from scratchseg.detection.rcnn import RCNN
from scratchseg.detection.warp import warp_regions
from scratchseg.nn import SGD

DETECTORS = (RCNN, FastRCNN, FasterRCNN)
TINY = dict(channels=(3, 4, 5), pool_size=2, hidden=6)


def _scene(size=32, seed=3):
    sample = SyntheticBoxes(1, size, seed, num_objects=(2, 3), radius=(5.0, 9.0))[0]
    assert len(sample.boxes) >= 2
    return sample


def _proposals(sample, rng):
    """Jittered copies of the objects and random boxes: fixed proposals for the check."""
    jitter = sample.boxes[rng.integers(len(sample.boxes), size=12)] + rng.normal(0, 2, (12, 4))
    corner = rng.uniform(0, 20, (12, 2))
    random = np.concatenate([corner, corner + rng.uniform(4, 12, (12, 2))], axis=1)
    return np.clip(np.concatenate([jitter, random]), 0, 32).astype(np.float32)


def _model(detector, seed=0):
    model = detector(1, 3, **TINY, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed)
    for name, array in model.parameters():  # random biases: no unit sits at ReLU's kink
        if name.endswith("bias"):
            array[...] = rng.normal(0.1, 0.1, array.shape)
    return model


def _loss(model, sample, proposals):
    model.zero_grad()
    losses = model.train_image(sample.image.astype(np.float64), sample.boxes, sample.labels,
                               proposals, np.random.default_rng(7))
    return sum(losses.values())


def _proposals_held(monkeypatch):
    """Faster R-CNN's proposals as constants: approximate joint training passes no gradient
    through their coordinates, so the check holds them where the first forward put them
    (moved, a proposal changes the head's targets and, past a rounding edge, its RoI)."""
    from scratchseg.detection import faster_rcnn

    first = []

    def held(*args, **kwargs):
        if not first:
            first.append(propose(*args, **kwargs))
        return first[0]

    propose = faster_rcnn.propose
    monkeypatch.setattr(faster_rcnn, "propose", held)


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.kind)
def test_every_parameter_gradient_matches_finite_differences(detector, monkeypatch):
    """One random direction per parameter array: (L(p + e d) - L(p - e d)) / 2e = <dL/dp, d>.
    The backbone's first conv is among them, so the gradient reached the image's end."""
    _proposals_held(monkeypatch)
    rng = np.random.default_rng(1)
    sample = _scene()
    proposals = _proposals(sample, rng)
    model = _model(detector)
    _loss(model, sample, proposals)
    grads = {name: g.copy() for name, g in model.gradients()}
    eps = 1e-6
    for name, param in model.parameters():
        direction = rng.standard_normal(param.shape)
        param += eps * direction
        plus = _loss(model, sample, proposals)
        param -= 2 * eps * direction
        minus = _loss(model, sample, proposals)
        param += eps * direction
        numeric, analytic = (plus - minus) / (2 * eps), float((grads[name] * direction).sum())
        assert abs(analytic) > 1e-9, f"{name}: zero gradient proves nothing"
        assert numeric == pytest.approx(analytic, rel=1e-4, abs=1e-8), name
    assert "backbone.conv1.weight" in grads


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.kind)
def test_detect_returns_boxes_scores_labels_and_stage_times(detector):
    sample = _scene()
    model = detector(1, 3, **TINY).eval()
    found, seconds = model.detect(sample.image)
    assert found.boxes.shape == (len(found.scores), 4) and found.boxes.dtype == np.float32
    assert np.all((found.boxes[:, :2] >= 0) & (found.boxes[:, 2:] <= 32))
    assert np.all(np.diff(found.scores) <= 0) and np.all(found.scores > 0.05)
    assert set(found.labels) <= {1, 2, 3}
    assert set(seconds) == {"proposals", "cnn", "heads"}


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.kind)
def test_a_detector_learns_one_image(detector):
    """Thirty SGD steps on one scene lower its loss by more than half."""
    sample = _scene(seed=5)
    model = detector(1, 3, seed=0)
    proposals = model.proposals(sample.image) if model.uses_selective_search else None
    optimizer = SGD(model, lr=0.01, momentum=0.9)
    losses = []
    for step in range(30):
        model.zero_grad()
        parts = model.train_image(sample.image, sample.boxes, sample.labels, proposals,
                                  np.random.default_rng(step))
        losses.append(sum(parts.values()))
        optimizer.step()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.kind)
def test_an_image_without_objects_trains(detector):
    """COCO keeps images without annotations. Faster R-CNN learns background from them;
    R-CNN and Fast R-CNN draw no RoI (no proposal has IoU in [0.1, 0.5)) and skip them."""
    sample = _scene()
    model = detector(1, 3, **TINY)
    proposals = model.proposals(sample.image) if model.uses_selective_search else None
    losses = model.train_image(sample.image, np.zeros((0, 4), np.float32),
                               np.zeros(0, np.int64), proposals, np.random.default_rng(0))
    assert losses["box"] == 0 and np.isfinite(sum(losses.values()))
    assert (losses["classification"] > 0) == (detector is FasterRCNN)


def test_backbone_steps_four_pixels():
    backbone = Backbone(2)
    features = backbone.forward(np.zeros((1, 2, 37, 50), np.float32))
    assert features.shape == (1, 64, 9, 12) == (1, 64, *backbone.feature_size(37, 50))
    with pytest.raises(ValueError, match="3 widths"):
        Backbone(1, (4, 8))


def test_warping_resamples_the_box_with_its_context():
    """A box over the whole image without context gives the image back; context 2 at
    size 8 shows the box in the middle 4 x 4 pixels, zeros outside the image."""
    image = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    whole = warp_regions(image, [[0, 0, 8, 8]], 8, context=0)
    np.testing.assert_allclose(whole[0], image, atol=1e-5)
    crop = warp_regions(image, [[2, 2, 6, 6]], 8, context=2)
    np.testing.assert_allclose(crop[0][:, 2:6, 2:6], image[:, 2:6, 2:6], atol=1e-5)
    border = warp_regions(image, [[0, 0, 4, 4]], 8, context=2)
    assert np.all(border[0][:, 0, :] == 0) and np.all(border[0][:, :, 0] == 0)
    assert warp_regions(image, np.zeros((0, 4)), 8).shape == (0, 2, 8, 8)
