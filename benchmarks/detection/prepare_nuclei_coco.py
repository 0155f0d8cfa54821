"""Convert the real nuclei of docs/data/nuclei into COCO detection files.

    python benchmarks/detection/prepare_nuclei_coco.py OUT_DIR [--data docs/data/nuclei]

For each split (train, test) every image's instance mask gives one box per nucleus
(scratchseg.detection.data.boxes_from_instances, one class "nucleus"); the images are
copied to OUT_DIR/<split>/<file> and OUT_DIR/<split>.json lists them with their
boxes, so ``CocoDataset("OUT_DIR/train.json")`` reads them back. A nucleus cut by
the line between the top and bottom images keeps its id in both, and gives a box in each.
"""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from scratchseg.data import FolderDataset
from scratchseg.detection.data import DetectionSample, boxes_from_instances, write_coco

SPLITS = ("train", "test")
CLASS_NAMES = ["background", "nucleus"]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "docs" / "data" / "nuclei"


def convert_split(data_dir, out_dir, split):
    """Write OUT_DIR/<split>.json and the image copies; return (images, boxes)."""
    dataset = FolderDataset(Path(data_dir) / split, masks="instances")
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    samples, file_names = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        source = Path(dataset.image_files[index])
        shutil.copyfile(source, out_dir / split / source.name)
        boxes, labels = boxes_from_instances(sample.instances)
        samples.append(DetectionSample(sample.image, boxes, labels, sample.name, index + 1,
                                       np.zeros(len(boxes), bool)))
        file_names.append(f"{split}/{source.name}")
    write_coco(out_dir / f"{split}.json", samples, CLASS_NAMES, file_names=file_names)
    return len(samples), sum(len(s.boxes) for s in samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for train.json, test.json, images")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the nuclei folder with train/ and test/ (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        images, boxes = convert_split(args.data, args.out_dir, split)
        print(f"{args.out_dir / (split + '.json')}: {images} images, {boxes} boxes")


if __name__ == "__main__":
    sys.exit(main())
