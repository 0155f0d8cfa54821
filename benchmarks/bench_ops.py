"""Per-op benchmark: every conv, up-conv, pool, ReLU, concat and the loss of the reference
U-Net (depth 4, base 32, 256x256), forward and backward, scratchseg against PyTorch.

    python benchmarks/bench_ops.py [--backend numpy|cupy] [--compare torch|none]
                                   [--json FILE] [--repeats N] [--warmup N] [--quick]
"""

import argparse
import sys
from pathlib import Path

try:
    from scratchseg import bench
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scratchseg import bench


def main(argv=None):
    parser = bench.add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]),
                                 which=False)
    args = parser.parse_args(argv)
    try:
        return bench.main_from_args(args.backend, args.compare, args.json, which="ops",
                                    quick=args.quick, repeats=args.repeats,
                                    warmup=args.warmup)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
