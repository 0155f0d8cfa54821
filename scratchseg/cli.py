"""The ``scratchseg`` command."""

import argparse
import sys

from scratchseg.backend import BACKENDS


def _gradcheck(args):
    from scratchseg.selfcheck import run_checks

    rows = run_checks(args.backend, args.seed)
    header = f"{'op':<28} {'gradient':<9} {'max abs err':>12} {'max rel err':>12}  result"
    print(header)
    print("-" * len(header))
    for op, grad, abs_err, rel_err, passed, message in rows:
        result = "pass" if passed else f"FAIL  {message}"
        print(f"{op:<28} {grad:<9} {abs_err:>12.2e} {rel_err:>12.2e}  {result}")
    failures = sum(not row[4] for row in rows)
    print(f"\n{len(rows) - failures} passed, {failures} failed ({args.backend}, float64)")
    return 1 if failures else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="scratchseg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "gradcheck", help="check every op's and layer's gradients against central differences")
    check.add_argument("--backend", choices=BACKENDS, default="numpy")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=_gradcheck)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"scratchseg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
