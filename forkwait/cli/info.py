"""``python -m forkwait info``: print forkwait.parallel_info()."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "info",
        help="print forkwait.parallel_info()",
        description="Print the thread settings and where each came from, the OpenMP build, "
        "the environment and the thread pools.",
    )


def run(args: argparse.Namespace) -> int:
    import forkwait

    print(forkwait.parallel_info())
    return 0
