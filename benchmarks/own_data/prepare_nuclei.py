"""Cut StarDist's sample nuclei image into train/test folders in scratchseg's layout.

The StarDist wheel (PyPI, stardist==0.9.2) ships stardist/data/images/img2d.tif, a
512x512 uint16 fluorescence image of nuclei from the 2018 Data Science Bowl (values
0..235), and mask2d.tif, its uint16 instance labels. This script takes both from the
wheel (``--wheel``, or ``pip download --no-deps stardist==0.9.2`` into a temporary
folder), checks their SHA-256, and writes under OUT_DIR:

    train/   rows 0:256 and 256:512 of columns 0:384   (top.tif, bottom.tif: 256x384)
    test/    rows 0:256 and 256:512 of columns 384:512 (top.tif, bottom.tif: 256x128)
    png8/train, png8/test       the same pixels as 8-bit PNG
    tiff12/train, tiff12/test   the same pixels times 16 as uint16 TIFF (12-bit values)

Each of these folders holds images/ (train/ and test/: uint16 TIFF as stored),
masks/ (8-bit PNG, 0 background / 1 nucleus) and instances/ (16-bit PNG, the
wheel's instance ids, 0 background). The output is the same bytes on every run.

    python benchmarks/own_data/prepare_nuclei.py data/nuclei [--wheel stardist-0.9.2-...whl]
"""

import argparse
import glob
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

PACKAGE = "stardist==0.9.2"
MEMBERS = {  # wheel member -> SHA-256 of the file in stardist 0.9.2
    "stardist/data/images/img2d.tif":
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
    "stardist/data/images/mask2d.tif":
        "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
}
ROWS = {"top": slice(0, 256), "bottom": slice(256, 512)}
COLUMNS = {"train": slice(0, 384), "test": slice(384, 512)}


def read_wheel(wheel):
    """(image, labels): the two uint16 512x512 arrays from the wheel, checked by SHA-256."""
    arrays = []
    with zipfile.ZipFile(wheel) as archive:
        for member, digest in MEMBERS.items():
            data = archive.read(member)
            if hashlib.sha256(data).hexdigest() != digest:
                sys.exit(f"{wheel}: {member} is not the file of {PACKAGE} (SHA-256 differs)")
            arrays.append(tifffile.imread(io.BytesIO(data)))
    return arrays


def download_wheel(folder):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE,
                    "-d", folder], check=True)
    wheels = glob.glob(str(Path(folder) / "stardist-*.whl"))
    if not wheels:
        sys.exit(f"pip download {PACKAGE} gave no wheel in {folder}")
    return wheels[0]


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path, format="PNG")
    print(f"{path}  {array.shape[0]}x{array.shape[1]} {array.dtype} "
          f"values {array.min()}..{array.max()}")


def write_splits(out_dir, image, labels):
    variants = {  # folder -> (file suffix, pixels)
        out_dir: (".tif", image),
        out_dir / "png8": (".png", image.astype(np.uint8)),
        out_dir / "tiff12": (".tif", image * np.uint16(16)),
    }
    for root, (suffix, pixels) in variants.items():
        for split, columns in COLUMNS.items():
            for name, rows in ROWS.items():
                folder = root / split
                save(folder / "images" / f"{name}{suffix}", pixels[rows, columns])
                save(folder / "masks" / f"{name}.png",
                     (labels[rows, columns] > 0).astype(np.uint8))
                save(folder / "instances" / f"{name}.png", labels[rows, columns])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created if needed)")
    parser.add_argument("--wheel", help=f"a downloaded {PACKAGE} wheel; default: pip download")
    args = parser.parse_args()
    if args.wheel:
        image, labels = read_wheel(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as folder:
            image, labels = read_wheel(download_wheel(folder))
    write_splits(args.out_dir, image, labels)


if __name__ == "__main__":
    main()
