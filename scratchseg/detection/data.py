"""Detection data: samples with boxes, boxes from instance maps, synthetic scenes, COCO files.

A sample's boxes are float32 (K, 4) rows (x1, y1, x2, y2) in pixel coordinates
where pixel column i covers [i, i + 1), so an object on columns 3..5 has x1 = 3,
x2 = 6. Labels are int64 in 1..num_classes (0 is the background). COCO stores a
box as [x, y, w, h] = [x1, y1, x2 - x1, y2 - y1] in the same coordinates.
"""

import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tifffile
from scipy import ndimage

from scratchseg.data.dataset import check_instances
from scratchseg.data.images import read_image
from scratchseg.data.normalize import NORMALIZATIONS
from scratchseg.data.synthetic import CLASS_NAMES, SyntheticShapes
from scratchseg.fileio import atomic_path, atomic_write_text

MIN_VISIBLE_PIXELS = 10  # SyntheticBoxes drops objects with fewer visible pixels
_SHOWN_MISSING = 5  # how many missing image files an error lists


class DetectionSample(NamedTuple):
    """One detection example.

    image: float32 (C, H, W); boxes: float32 (K, 4) (x1, y1, x2, y2); labels: int64 (K,)
    in 1..num_classes; name: a label for reports; image_id: the COCO image id;
    crowd: bool (K,), COCO's iscrowd (False for everything else).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    name: str
    image_id: int
    crowd: np.ndarray


def empty_targets(count=0):
    """(boxes float32 (count, 4), labels int64 (count,), crowd bool (count,)), all zeros."""
    return (np.zeros((count, 4), np.float32), np.zeros(count, np.int64),
            np.zeros(count, bool))


def boxes_from_instances(instances, class_map=None):
    """(boxes float32 (K, 4), labels int64 (K,)): one box per nonzero id, ids ascending.

    The box of object k is (min col, min row, max col + 1, max row + 1) of its
    pixels; its label is the most frequent ``class_map`` value on them (the
    smallest on a tie), or 1 when ``class_map`` is None.
    """
    instances = check_instances(instances, "boxes_from_instances")
    ids, compact = np.unique(instances, return_inverse=True)
    compact = compact.reshape(instances.shape) + (0 if ids.size and ids[0] == 0 else 1)
    count = int(np.count_nonzero(ids))
    boxes = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop)
                      for s in ndimage.find_objects(compact, max_label=count)],
                     dtype=np.float32).reshape(count, 4)
    if class_map is None:
        return boxes, np.ones(count, np.int64)
    class_map = np.asarray(class_map)
    if class_map.shape != instances.shape or not np.issubdtype(class_map.dtype, np.integer):
        raise ValueError(f"boxes_from_instances: class_map must be an integer map of the "
                         f"instances' shape {instances.shape}, got {class_map.dtype} "
                         f"{class_map.shape}")
    inside = compact > 0
    classes, class_index = np.unique(class_map[inside], return_inverse=True)
    votes = np.bincount((compact[inside] - 1) * len(classes) + class_index.ravel(),
                        minlength=count * len(classes)).reshape(count, len(classes))
    labels = classes[votes.argmax(axis=1)].astype(np.int64) if count else np.ones(0, np.int64)
    if np.any(labels < 1):
        k = int(np.argmax(labels < 1))
        raise ValueError(f"boxes_from_instances: object {int(ids[ids != 0][k])}'s pixels are "
                         f"mostly class {int(labels[k])} in class_map; an object needs a "
                         f"class >= 1")
    return boxes, labels


class SyntheticBoxes:
    """scratchseg.data.SyntheticShapes scenes as detection samples (1 channel, 3 classes).

    Each visible object with at least MIN_VISIBLE_PIXELS pixels gives the tight box
    of its visible pixels and its shape's class (1 ellipse, 2 rectangle, 3 triangle).
    ``shape_options`` go to SyntheticShapes (num_objects, radius, noise_std, normalize, ...).
    """

    class_names = list(CLASS_NAMES)
    num_classes = len(CLASS_NAMES) - 1
    in_channels = 1

    def __init__(self, num_samples=256, size=64, seed=0, **shape_options):
        shape_options = {"num_objects": (1, 4), "radius": (5.0, 12.0), **shape_options}
        self.scenes = SyntheticShapes(num_samples, size, seed, **shape_options)

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, index):
        sample = self.scenes[index]
        instances = sample.instances
        small = np.bincount(instances.ravel()) < MIN_VISIBLE_PIXELS
        small[0] = False
        instances = np.where(small[instances], 0, instances)
        boxes, labels = boxes_from_instances(instances, sample.mask)
        return DetectionSample(sample.image, boxes, labels, sample.name,
                               index % len(self), np.zeros(len(boxes), bool))


# --- COCO files ---------------------------------------------------------------------------


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read it as COCO JSON ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object with 'images', 'annotations' and "
                         f"'categories', got {type(content).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(content.get(key), list):
            found = "missing" if key not in content else type(content[key]).__name__
            raise ValueError(f"{path}: expected a list under {key!r}, got {found}")
    return content


def _entry(path, section, index, entry, keys):
    """The values of ``keys`` in ``section[index]``; ValueError naming the entry otherwise."""
    shown = f"{section}[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {shown} must be an object, got {type(entry).__name__}")
    if "id" in entry:
        shown += f" (id {entry['id']!r})"
    missing = [key for key in keys if key not in entry]
    if missing:
        raise ValueError(f"{path}: {shown} has no {', '.join(map(repr, missing))}")
    return shown, [entry[key] for key in keys]


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _unique_ids(path, section, entries, keys):
    """{id: (index, values of keys)} of ``section``; errors for bad or repeated ids."""
    found = {}
    for index, entry in enumerate(entries):
        shown, values = _entry(path, section, index, entry, ("id", *keys))
        if not _integer(values[0]):
            raise ValueError(f"{path}: {shown}: 'id' must be an integer")
        if values[0] in found:
            raise ValueError(f"{path}: {shown} repeats the id of {section}"
                             f"[{found[values[0]][0]}]; ids must be unique")
        found[values[0]] = (index, values[1:])
    return found


def _check_images(path, images):
    """{image id: (index, file_name, width, height)} of the JSON's images, checked."""
    checked = {}
    for image_id, (index, (file_name, width, height)) in images.items():
        shown = f"images[{index}] (id {image_id})"
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{path}: {shown}: 'file_name' must be a non-empty string")
        if not (_integer(width) and _integer(height) and width > 0 and height > 0):
            raise ValueError(f"{path}: {shown}: width and height must be positive integers, "
                             f"got {width!r} x {height!r}")
        checked[image_id] = (index, file_name, width, height)
    return checked


def _annotation(path, index, entry, images, labels):
    """(image id, box x1 y1 x2 y2, label, crowd) of annotations[index], checked."""
    shown, (image_id, category_id, bbox) = _entry(path, "annotations", index, entry,
                                                  ("image_id", "category_id", "bbox"))
    if image_id not in images:
        raise ValueError(f"{path}: {shown}: image_id {image_id!r} is not among the images")
    if category_id not in labels:
        raise ValueError(f"{path}: {shown}: category_id {category_id!r} is not among the "
                         f"categories {sorted(labels)}")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {shown}: bbox must be 4 numbers [x, y, w, h], "
                         f"got {bbox!r}") from None
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
        raise ValueError(f"{path}: {shown}: bbox {bbox} needs finite values and a positive "
                         f"width and height")
    _, _, width, height = images[image_id]
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        raise ValueError(f"{path}: {shown}: bbox {bbox} reaches outside its "
                         f"{width}x{height} image by more than a pixel")
    crowd = entry.get("iscrowd", 0)
    if crowd not in (0, 1, False, True):
        raise ValueError(f"{path}: {shown}: iscrowd must be 0 or 1, got {crowd!r}")
    box = np.clip([x, y, x + w, y + h], 0, [width, height, width, height])
    return image_id, box, labels[category_id], bool(crowd)


def _read_images(path, images, image_dir, normalize):
    """{image id: float32 (C, H, W)} read from ``image_dir``; errors for missing or misfit files."""
    files = {image_id: image_dir / name for image_id, (_, name, _, _) in images.items()}
    missing = [str(images[i][1]) for i, file in files.items() if not file.is_file()]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of {len(files)} image files are missing from "
                         f"{image_dir}: {', '.join(missing[:_SHOWN_MISSING])}"
                         f"{' ...' if len(missing) > _SHOWN_MISSING else ''}")
    pictures = {}
    for image_id, file in files.items():
        index, name, width, height = images[image_id]
        picture = read_image(file, normalize=normalize)
        if picture.shape[1:] != (height, width):
            raise ValueError(f"{path}: images[{index}] (id {image_id}, {name}) is {width}x"
                             f"{height} in the JSON but {file} is {picture.shape[2]}x"
                             f"{picture.shape[1]}")
        pictures[image_id] = picture
    return pictures


def _same_channels(path, pictures, images):
    """Gray pictures repeated to 3 channels when the others are RGB; other mixes are errors."""
    channels = {p.shape[0] for p in pictures.values()}
    if channels == {1, 3}:
        return {i: np.repeat(p, 3, axis=0) if p.shape[0] == 1 else p for i, p in pictures.items()}
    if len(channels) > 1:
        first = {c: next(images[i][1] for i, p in pictures.items() if p.shape[0] == c)
                 for c in sorted(channels)}
        raise ValueError(f"{path}: the images have different channel counts "
                         f"({', '.join(f'{n} in {c}' for c, n in first.items())})")
    return pictures


class CocoDataset:
    """The images and boxes of a COCO object-detection JSON, loaded once into memory.

    image_dir holds the images' file_name paths (default: the JSON's folder).
    Category ids become labels 1..K in ascending id order; ``category_ids[label]``
    is the COCO id. Images are read by scratchseg.data.images and normalised per
    image (``normalize``); a gray image among RGB ones is repeated to 3 channels.
    Boxes within a pixel of the image edge are clipped to it.
    """

    def __init__(self, annotation_path, image_dir=None, *, normalize="percentile"):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"CocoDataset: normalize must be one of {NORMALIZATIONS}, "
                             f"got {normalize!r}")
        path = Path(annotation_path)
        content = _read_json(path)
        images = _check_images(path, _unique_ids(path, "images", content["images"],
                                                 ("file_name", "width", "height")))
        if not images:
            raise ValueError(f"{path}: the JSON lists no images")
        categories = _unique_ids(path, "categories", content["categories"], ("name",))
        self.category_ids = {k + 1: cid for k, cid in enumerate(sorted(categories))}
        labels = {cid: label for label, cid in self.category_ids.items()}
        self.class_names = ["background", *(str(categories[cid][1][0])
                                            for cid in sorted(categories))]
        self.num_classes = len(categories)
        targets = {image_id: [] for image_id in images}
        for index, entry in enumerate(content["annotations"]):
            image_id, *target = _annotation(path, index, entry, images, labels)
            targets[image_id].append(target)
        image_dir = path.parent if image_dir is None else Path(image_dir)
        pictures = _same_channels(path, _read_images(path, images, image_dir, normalize),
                                  images)
        self.image_ids = list(images)
        self.in_channels = pictures[self.image_ids[0]].shape[0]
        self.samples = [self._sample(pictures[i], targets[i], images[i][1], i)
                        for i in self.image_ids]

    @staticmethod
    def _sample(picture, targets, file_name, image_id):
        boxes, labels, crowd = empty_targets()
        if targets:
            boxes = np.array([t[0] for t in targets], np.float32)
            labels = np.array([t[1] for t in targets], np.int64)
            crowd = np.array([t[2] for t in targets], bool)
        return DetectionSample(picture, boxes, labels, Path(file_name).stem, image_id, crowd)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


def _file_stem(name, used):
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "image"
    while stem in used:
        stem += "_"
    used.add(stem)
    return stem


def _write_tiff(path, image):
    """A float32 (C, H, W) image as a TIFF that read_pages reads back as (C, H, W)."""
    image = np.asarray(image, np.float32)
    with atomic_path(path) as temp:
        if image.shape[0] == 1:
            tifffile.imwrite(temp, image[0])
        else:
            tifffile.imwrite(temp, image, photometric="minisblack", metadata={"axes": "CYX"})


def coco_ground_truth(samples, class_names, file_names):
    """The COCO dict of ``samples`` (DetectionSample-like), categories 1..K named by
    class_names[1:], annotation ids 1..N, area = the box's area."""
    images, annotations = [], []
    for sample, file_name in zip(samples, file_names):
        height, width = np.shape(sample.image)[1:]
        images.append({"id": int(sample.image_id), "file_name": file_name,
                       "width": int(width), "height": int(height)})
        crowd = getattr(sample, "crowd", None)
        crowd = np.zeros(len(sample.boxes), bool) if crowd is None else crowd
        for box, label, is_crowd in zip(np.asarray(sample.boxes, np.float64),
                                        sample.labels, crowd):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": int(sample.image_id),
                                "category_id": int(label), "iscrowd": int(is_crowd),
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                                "area": float(w * h)})
    categories = [{"id": k, "name": str(name)} for k, name in enumerate(class_names) if k > 0]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(path, dataset_or_samples, class_names, *, file_names=None):
    """Write the samples' ground truth as a COCO JSON at ``path`` (atomically).

    Without ``file_names`` each image is written beside the JSON as a float32 TIFF
    (images/<name>.tif), so CocoDataset(path, normalize="none") reads the same
    samples back. With ``file_names`` (paths relative to the JSON's folder, one per
    sample) the images are the caller's and nothing else is written.
    """
    path = Path(path)
    samples = list(dataset_or_samples)
    ids = [int(s.image_id) for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"write_coco: {path}: image ids repeat ({ids}); each sample needs "
                         f"its own image_id")
    if file_names is None:
        (path.parent / "images").mkdir(parents=True, exist_ok=True)
        used = set()
        file_names = [f"images/{_file_stem(s.name, used)}.tif" for s in samples]
        for sample, name in zip(samples, file_names):
            _write_tiff(path.parent / name, sample.image)
    elif len(file_names) != len(samples):
        raise ValueError(f"write_coco: {path}: {len(file_names)} file_names for "
                         f"{len(samples)} samples")
    content = coco_ground_truth(samples, class_names, list(file_names))
    atomic_write_text(path, json.dumps(content, indent=1))


def write_coco_detections(path, detections, category_ids):
    """Write COCO results JSON: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].

    detections: {image_id: (boxes (D, 4) x1 y1 x2 y2, scores (D,), labels (D,))}, or
    (image_id, (boxes, scores, labels)) pairs; category_ids[label] is the COCO id.
    """
    pairs = detections.items() if isinstance(detections, dict) else detections
    results = []
    for image_id, (boxes, scores, labels) in pairs:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"write_coco_detections: {path}: image {image_id} has "
                             f"{len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        for box, score, label in zip(boxes, scores, labels):
            results.append({"image_id": int(image_id),
                            "category_id": int(category_ids[int(label)]),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                     float(box[3] - box[1])],
                            "score": float(score)})
    atomic_write_text(path, json.dumps(results))
