"""The command line: ``python -m forkwait {demo,info}``."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m forkwait",
        description="forkwait: inter-op (fork/wait) and intra-op (OpenMP) parallelism.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser(
        "demo",
        help="time a multi-branch workload serially, forked, and with several thread settings",
        description="Run a small multi-branch workload (matmul + tanh chains) serially and "
        "with fork/wait under several thread settings, and print times and speed-ups.",
    )
    p.add_argument("--branches", type=_positive_int, default=4, help="independent branches (4)")
    p.add_argument("--size", type=_positive_int, default=256, help="matrix size (256)")
    p.add_argument("--steps", type=_positive_int, default=12, help="ops per branch (12)")
    p.add_argument("--rounds", type=_positive_int, default=5, help="timed rounds (5)")
    sub.add_parser(
        "info",
        help="print forkwait.parallel_info()",
        description="Print the thread settings, OpenMP build and thread pools.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from forkwait._demo import demo

        demo(branches=args.branches, size=args.size, steps=args.steps, rounds=args.rounds)
    elif args.command == "info":
        import forkwait

        print(forkwait.parallel_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
