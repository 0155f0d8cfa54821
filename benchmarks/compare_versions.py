"""Paired timing of two scratchseg checkouts' training step, to tell whether a change
made it faster on a machine whose speed drifts by more than the change.

    git worktree add /tmp/before ec1492d
    python benchmarks/compare_versions.py /tmp/before . --pairs 8 [--repeats 6]
                                          [--quick] [--engine fast|reference] [--json FILE]

Each pair runs the reference U-Net's training step (`scratchseg bench --which step`
without PyTorch) once in a process importing the BEFORE checkout and once in a process
importing the AFTER checkout, one right after the other, and takes the ratio of their
medians. Drift from elsewhere on a shared machine lasts seconds to minutes, so it
reaches both halves of a pair alike; the median of the pairs' ratios is the change's
effect. Each checkout runs its own benchmark worker (`python -m
scratchseg.tools.bench_worker`), so both must have one; only options that every worker
knows are passed, so a checkout from before the model options (`--input-size`, ...) can
be the BEFORE side. `--engine` sets SCRATCHSEG_ENGINE for the AFTER side only (checkouts
from before the two engines have one engine and ignore it).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

try:
    from scratchseg.tools import bench
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scratchseg.tools import bench


def checkout(path):
    """The checkout's root, refused with a clear message when it has no benchmark worker."""
    root = Path(path).resolve()
    try:
        bench.worker_module(root)
    except FileNotFoundError as error:
        raise SystemExit(f"compare_versions: {error} (make one with git worktree add)") from None
    return root


def step_median_ms(root, repeats=None, quick=False, engine=None):
    """One process importing ``root``'s scratchseg: its training step's median in ms.
    ``engine``: SCRATCHSEG_ENGINE for that process (default: the environment's)."""
    result = bench.spawn_worker("scratchseg", "numpy", ["step"], quick, repeats, None, 1e-3,
                                package_root=str(root), engine=engine)
    return next(r["median_ms"] for r in result["records"] if r["name"] == "unet_train_step")


def compare(before, after, pairs=8, repeats=None, quick=False, engine=None):
    """[(before_ms, after_ms), ...] for ``pairs`` back-to-back pairs of processes;
    ``engine`` for the AFTER side only."""
    results = []
    for k in range(pairs):
        pair = (step_median_ms(before, repeats, quick),
                step_median_ms(after, repeats, quick, engine))
        results.append(pair)
        print(f"pair {k + 1}: before {pair[0]:.0f} ms, after {pair[1]:.0f} ms, "
              f"ratio {pair[1] / pair[0]:.3f}", flush=True)
    return results


def summary(results):
    """The medians of each side and of the pairs' ratios (after / before)."""
    return dict(before_median_ms=statistics.median(b for b, _ in results),
                after_median_ms=statistics.median(a for _, a in results),
                median_ratio=statistics.median(a / b for b, a in results),
                pairs=[dict(before_ms=b, after_ms=a) for b, a in results])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/compare_versions.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("before", help="the checkout to compare against (a directory)")
    parser.add_argument("after", help="the checkout with the change (a directory)")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed steps per process (default 5)")
    parser.add_argument("--quick", action="store_true", help="a tiny U-Net: a smoke test")
    parser.add_argument("--engine", choices=bench.ENGINES, default=None,
                        help="SCRATCHSEG_ENGINE of the AFTER side only (default: the "
                             "environment's, on both sides)")
    parser.add_argument("--json", metavar="FILE", help="write the pairs and medians here")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    result = summary(compare(checkout(args.before), checkout(args.after), args.pairs,
                             args.repeats, args.quick, args.engine))
    print(f"median step: before {result['before_median_ms']:.0f} ms, after "
          f"{result['after_median_ms']:.0f} ms; median of the pairs' ratios "
          f"{result['median_ratio']:.3f} (after / before)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
