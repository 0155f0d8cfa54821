"""Baselines on a folder split: Otsu's threshold and a PyTorch U-Net of scratchseg's size.

DATA_DIR and TEST_DIR hold images/ and masks/ (0 background, 1 foreground) matched
by file stem, as prepare_nuclei.py writes them. On the test images it reports the
foreground IoU (class 1) and the mean IoU over both classes, each from the confusion
matrix pooled over all test pixels (scratchseg.metrics), of

(a) Otsu: skimage.filters.threshold_otsu of each raw test image; above it is nucleus.
(b) U-Net: scratchseg.tools.torch_unet.TorchUNet(in 1, classes 2, base 16, depth 3,
    same padding, batch norm) trained on DATA_DIR for --steps SGD steps: each image
    scaled by its 1st and 99.8th percentiles, (x - p1) / (p99.8 - p1); batches of 8
    random 64x64 tiles with random flips, 90-degree rotations and an intensity
    jitter a*x + b (a in [0.9, 1.1], b in [-0.1, 0.1]); SGD momentum 0.9, lr 0.05
    with 20 linear warm-up steps, then cosine decay to 0; cross-entropy. Each test
    image is predicted whole in eval mode, reflection-padded to a multiple of 8.

    python benchmarks/own_data/baselines.py /tmp/nuclei/train --test /tmp/nuclei/test \
        [--steps 600] [--seed 0] [--json]
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.filters import threshold_otsu

from scratchseg.metrics import confusion_matrix, iou_per_class, mean_iou
from scratchseg.tools.torch_unet import TorchUNet

TILE, BATCH, LR, MOMENTUM, WARMUP = 64, 8, 0.05, 0.9, 20
MULTIPLE = 8  # 2 ** depth


def read_raw(path):
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
    with Image.open(path) as image:
        return np.asarray(image)


def load_split(folder):
    """[(stem, raw image (H, W), mask (H, W) int64 of 0 and 1)] sorted by stem."""
    pairs = []
    for path in sorted((folder / "images").iterdir()):
        mask = read_raw(folder / "masks" / f"{path.stem}.png").astype(np.int64)
        if not set(np.unique(mask)) <= {0, 1}:
            raise SystemExit(f"{folder}/masks/{path.stem}.png: expected values 0 and 1")
        pairs.append((path.stem, read_raw(path), mask))
    if not pairs:
        raise SystemExit(f"{folder}/images: no images")
    return pairs


def normalise(raw):
    low, high = np.percentile(raw, [1, 99.8])
    return ((raw - low) / (high - low)).astype(np.float32)


def scores(predictions, masks):
    cm = sum(confusion_matrix(p, m, 2) for p, m in zip(predictions, masks))
    return {"fg_iou": float(iou_per_class(cm)[1]), "mean_iou": mean_iou(cm)}


def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return LR * (1 + math.cos(math.pi * (step - WARMUP) / (steps - WARMUP))) / 2


def random_batch(images, masks, rng):
    """x (B, 1, T, T) float32 and labels (B, T, T) int64: augmented random tiles."""
    xs, ys = [], []
    for _ in range(BATCH):
        k = rng.integers(len(images))
        height, width = images[k].shape
        top, left = rng.integers(height - TILE + 1), rng.integers(width - TILE + 1)
        x = images[k][top:top + TILE, left:left + TILE]
        y = masks[k][top:top + TILE, left:left + TILE]
        for axis in (0, 1):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
        turns = rng.integers(4)
        x, y = np.rot90(x, turns), np.rot90(y, turns)
        xs.append(x * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1))
        ys.append(y)
    return (torch.from_numpy(np.stack(xs)[:, None].astype(np.float32)),
            torch.from_numpy(np.stack(ys)))


def train_unet(images, masks, steps, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TorchUNet(in_channels=1, num_classes=2, base_channels=16, depth=3,
                      padding="same", batch_norm=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps)
        x, y = random_batch(images, masks, rng)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, loss.item()


@torch.no_grad()
def predict(model, image):
    height, width = image.shape
    pad = (0, -width % MULTIPLE, 0, -height % MULTIPLE)
    x = F.pad(torch.from_numpy(image)[None, None], pad, mode="reflect")
    return model(x)[0, :, :height, :width].argmax(0).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path, help="training folder (images/, masks/)")
    parser.add_argument("--test", type=Path, required=True, help="test folder (images/, masks/)")
    parser.add_argument("--steps", type=int, default=600, help="SGD steps (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and tiles")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must be more than the {WARMUP} warm-up steps")
    torch.set_num_threads(2)
    train, test = load_split(args.data_dir), load_split(args.test)
    test_masks = [mask for _, _, mask in test]

    otsu = scores([(raw > threshold_otsu(raw)).astype(np.int64) for _, raw, _ in test],
                  test_masks)

    start = time.perf_counter()
    model, last_loss = train_unet([normalise(raw) for _, raw, _ in train],
                                  [mask for _, _, mask in train], args.steps, args.seed)
    seconds = time.perf_counter() - start
    model.eval()
    unet = scores([predict(model, normalise(raw)) for _, raw, _ in test], test_masks)
    unet.update(train_seconds=round(seconds, 1), last_loss=last_loss)

    result = {"data": str(args.data_dir), "test": str(args.test), "steps": args.steps,
              "seed": args.seed, "otsu": otsu, "unet": unet, "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(result))
        return
    print(f"train {args.data_dir} ({len(train)} images), test {args.test} ({len(test)} images)")
    print(f"otsu          fg IoU {otsu['fg_iou']:.4f}  mean IoU {otsu['mean_iou']:.4f}")
    print(f"torch U-Net   fg IoU {unet['fg_iou']:.4f}  mean IoU {unet['mean_iou']:.4f}  "
          f"({args.steps} steps, seed {args.seed}, trained in {seconds:.1f} s, "
          f"last loss {last_loss:.4f})")


if __name__ == "__main__":
    main()
