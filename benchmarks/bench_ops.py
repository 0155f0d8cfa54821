"""Per-op benchmark: every conv, up-conv, pool, ReLU, concat (batch norm with
--batch-norm) and the loss of the reference U-Net (depth 4, base 32, 256x256; the model
options change it), forward and backward, scratchseg against PyTorch.

    python benchmarks/bench_ops.py [--backend numpy|cupy] [--compare torch|none]
                                   [--json FILE] [--repeats N] [--warmup N] [--quick]
                                   [--engine fast|reference] [--input-size N]
                                   [--batch-size N] [--base-channels N] [--depth N]
                                   [--padding valid|same] [--batch-norm | --no-batch-norm]

The same as `scratchseg bench --which ops`.
"""

import sys
from pathlib import Path

try:
    from scratchseg.tools import bench
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scratchseg.tools import bench

if __name__ == "__main__":
    sys.exit(bench.main(["--which", "ops", *sys.argv[1:]]))
