"""The simple baseline for a one-class COCO set: Otsu's threshold, one box per component.

    python benchmarks/detection/threshold_baseline.py TEST.json [--min-size 10]

Each image (normalised as the detectors read it) is thresholded at Otsu's level;
every 8-connected bright component of at least ``--min-size`` pixels gives its
tight box, scored by its mean intensity (brighter is surer). The boxes are
scored with the same COCO mAP as ``scratchseg detect evaluate``.
"""

import argparse

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from scratchseg.detection.data import CocoDataset, boxes_from_instances
from scratchseg.detection.evaluate import average_precision


def threshold_boxes(image, min_size):
    """(boxes, scores, labels) of the bright components of a (C, H, W) image."""
    gray = image.mean(axis=0)
    components, count = ndimage.label(gray > threshold_otsu(gray), structure=np.ones((3, 3)))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    components[sizes[components] < min_size] = 0
    boxes, _ = boxes_from_instances(components)
    ids = np.unique(components)[1:]
    scores = np.asarray(ndimage.mean(gray, components, ids), np.float32).reshape(-1)
    return boxes, scores, np.ones(len(boxes), np.int64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", help="a COCO JSON with one category")
    parser.add_argument("--min-size", type=int, default=10, help="smallest component, pixels")
    parser.add_argument("--normalize", default="percentile", help="as the detector read it")
    args = parser.parse_args()
    dataset = CocoDataset(args.annotations, normalize=args.normalize)
    if dataset.num_classes != 1:
        parser.error(f"{args.annotations} has {dataset.num_classes} categories; the baseline "
                     "finds one class")
    found = [threshold_boxes(sample.image, args.min_size) for sample in dataset]
    result = average_precision(list(dataset), found, 1)
    print(f"Otsu threshold on {len(dataset)} images: {sum(len(f[0]) for f in found)} boxes, "
          f"mAP@0.5 {result['map50']:.4f}  mAP@[.5:.95] {result['map']:.4f}  "
          f"mAP@0.75 {result['map75']:.4f}")


if __name__ == "__main__":
    main()
