"""Training-step benchmark: zero_grad, forward, loss, backward and SGD (momentum 0.99) on
the reference U-Net (depth 4, base 32, 256x256; the model options change it), scratchseg
against PyTorch: time, GFLOP/s, fraction of the GEMM peak and peak RSS (each framework in
its own process).

    python benchmarks/bench_step.py [--backend numpy|cupy] [--compare torch|none]
                                   [--json FILE] [--repeats N] [--warmup N] [--quick]
                                   [--engine fast|reference] [--input-size N]
                                   [--batch-size N] [--base-channels N] [--depth N]
                                   [--padding valid|same] [--batch-norm | --no-batch-norm]

The same as `scratchseg bench --which step`.
"""

import sys
from pathlib import Path

try:
    from scratchseg.tools import bench
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scratchseg.tools import bench

if __name__ == "__main__":
    sys.exit(bench.main(["--which", "step", *sys.argv[1:]]))
