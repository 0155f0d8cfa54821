"""RoI max-pooling, the reference op against the CPU engine, on Fast R-CNN's workload.

    python benchmarks/detection/bench_roi_pool.py [--images 10] [--repeats 3]

Each image is a 128 x 128 synthetic scene (the default of `scratchseg detect train`);
its selective-search proposals are pooled to 5 x 5 from a (1, 64, 32, 32) feature
map at scale 1/4, forward then backward, as Fast R-CNN does per image. Both engines
run on the same inputs in alternation; the best of ``--repeats`` rounds is printed.
"""

import argparse
import time

import numpy as np

from scratchseg import fast, functional
from scratchseg.detection.fast_rcnn import batch_rois
from scratchseg.detection.selective_search import selective_search
from scratchseg.detection.train import synthetic_scenes


def one_round(engine, cases):
    start = time.perf_counter()
    for features, rois in cases:
        y, cache = engine.roi_max_pool_forward(features, rois, 5, 0.25)
        engine.roi_max_pool_backward(np.ones_like(y), cache)
    return (time.perf_counter() - start) / len(cases)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scenes, rng = synthetic_scenes(args.images, 128, 20_000), np.random.default_rng(0)
    cases = [(rng.standard_normal((1, 64, 32, 32)).astype(np.float32),
              batch_rois(selective_search(scenes[i].image)).astype(np.float32))
             for i in range(len(scenes))]
    best = {"reference": np.inf, "fast": np.inf}
    for _ in range(args.repeats):
        for name, engine in (("reference", functional), ("fast", fast)):
            best[name] = min(best[name], one_round(engine, cases))
    rois = np.mean([len(r) for _, r in cases])
    print(f"{rois:.0f} RoIs per image: reference {best['reference'] * 1e3:.1f} ms, "
          f"fast {best['fast'] * 1e3:.1f} ms per image (forward + backward), "
          f"{best['reference'] / best['fast']:.1f}x")


if __name__ == "__main__":
    main()
