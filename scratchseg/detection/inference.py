"""Trained detectors at work: load a run, draw boxes on images, measure mAP and time.

``load_detector`` reads a run folder (its best model first) or a model file;
``predict_detection_files`` writes ``<stem>_detections.png`` per image and one
``detections.json``; ``evaluate_detection`` reports COCO's mAP@[.5:.95], mAP@0.5
and mAP@0.75 with each class's AP, and the seconds per image spent on proposals,
the CNN and the heads.
"""

import json
from pathlib import Path

from tqdm import tqdm

from scratchseg.data.images import read_image
from scratchseg.detection.data import CocoDataset
from scratchseg.detection.draw import save_detections_png
from scratchseg.detection.train import (
    MODEL_FORMAT,
    TEST_SEED,
    build_detector,
    evaluate_detector,
    synthetic_scenes,
)
from scratchseg.fileio import atomic_write_text
from scratchseg.inference import check_intensities, model_file
from scratchseg.training.checkpoint import load_model, model_metadata


class TrainedDetector:
    """A detector with its class names and how its training images were read."""

    def __init__(self, network, class_names, reading):
        self.network, self.class_names, self.reading = network, list(class_names), reading

    def read(self, path):
        """The image file at ``path`` as the network takes it: (C, H, W), normalised;
        warns (IntensityWarning) when it lies far outside the training images' range."""
        image = read_image(path, normalize=self.reading["normalize"],
                           channels=self.network.config["in_channels"])
        self.check(image, str(path))
        return image

    def check(self, image, name):
        check_intensities(image, self.reading.get("intensity_range"), self.reading["normalize"],
                          name, stacklevel=4)

    def detect(self, image):
        """(Detections, seconds per stage) for a (C, H, W) float32 image."""
        return self.network.detect(image)


def load_detector(path, backend="numpy"):
    """The detector in a run folder (model_best.safetensors first) or a model file."""
    path = model_file(path)
    arrays, config, class_names = load_model(path, MODEL_FORMAT)
    reading = json.loads(model_metadata(path, MODEL_FORMAT).get("reading", "{}"))
    network = build_detector(config, backend=backend)
    network.load_state_dict(arrays)
    return TrainedDetector(network.eval(), class_names, reading)


def predict_detection_files(model_path, images, out_dir, *, score_threshold=0.5,
                            backend="numpy", progress=False):
    """Draw each image's detections (score >= ``score_threshold``) into
    ``out_dir/<stem>_detections.png`` and list them all in ``out_dir/detections.json``;
    yields each path written."""
    detector = load_detector(model_path, backend)
    images = [Path(p) for p in images]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ValueError(f"image file(s) not found: {', '.join(missing)}")
    stems = [p.stem for p in images]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ValueError(f"inputs share the stem(s) {repeated} and would write the same "
                         f"<stem>_detections.png; predict them into separate --out folders")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    listed = []
    for path in tqdm(images, disable=not progress, unit="image", dynamic_ncols=True):
        image = detector.read(path)
        found, _ = detector.detect(image)
        keep = found.scores >= score_threshold
        target = out_dir / f"{path.stem}_detections.png"
        save_detections_png(target, image, found.boxes[keep], found.labels[keep],
                            found.scores[keep], detector.class_names)
        listed += [dict(image=str(path), box=[round(float(v), 2) for v in box],
                        label=detector.class_names[int(label)], score=round(float(score), 4))
                   for box, label, score in zip(found.boxes[keep], found.labels[keep],
                                                found.scores[keep])]
        yield target
    target = out_dir / "detections.json"
    atomic_write_text(target, json.dumps(listed, indent=1) + "\n")
    yield target


def synthetic_test_scenes(samples, size, trained_size):
    """``samples`` scenes of edge ``size`` never trained or validated on, with the objects
    of the training scenes (of edge ``trained_size``), as many per area."""
    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"--samples must be an integer >= 1, got {samples!r}")
    if not (isinstance(size, int) and size >= 32):
        raise ValueError(f"--size must be an integer >= 32 (pixels), got {size!r}")
    return synthetic_scenes(samples, size, TEST_SEED, object_size=trained_size)


def evaluate_detection(model_path, data="synthetic", images=None, *, samples=100, size=None,
                       backend="numpy", progress=False):
    """mAP figures and seconds per image of a trained detector on ``data``: 'synthetic'
    (``samples`` new scenes, of edge ``size``, default the training scenes') or a COCO
    JSON."""
    detector = load_detector(model_path, backend)
    network = detector.network
    if data == "synthetic":
        trained_size = detector.reading.get("size", 64)
        dataset = synthetic_test_scenes(samples, size or trained_size, trained_size)
    else:
        dataset = CocoDataset(data, images, normalize=detector.reading.get("normalize",
                                                                            "percentile"))
        if list(dataset.class_names) != detector.class_names:
            raise ValueError(f"{data}: its categories {dataset.class_names[1:]} are not the "
                             f"model's {detector.class_names[1:]}")
        for sample in dataset:
            detector.check(sample.image, f"{data}: {sample.name}")
    result, _, seconds = evaluate_detector(network, dataset, progress=progress)
    per_class = [dict(name=name, **result["per_class"][label])
                 for label, name in enumerate(detector.class_names[1:], start=1)]
    return dict(model=network.kind, images=len(dataset), map=result["map"],
                map50=result["map50"], map75=result["map75"], per_class=per_class,
                seconds_per_image=seconds, total_seconds_per_image=sum(seconds.values()))
