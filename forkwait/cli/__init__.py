"""The command line: ``python -m forkwait {demo,info,bench,tune,trace}``.

One module per command (each has ``add_parser(subparsers)`` and
``run(args) -> int``); running a user's script in ``_script`` (the parent
side) and ``_runner`` (the child). The timing helpers and the plotting set-up
that the commands share with the library are in ``forkwait._measure``.
"""

from __future__ import annotations

import sys

COMMANDS = ("demo", "info", "bench", "tune", "trace")


def build_parser():  # -> argparse.ArgumentParser
    """The argument parser of ``python -m forkwait``."""
    import importlib

    from forkwait.cli._common import Parser

    parser = Parser(
        prog="python -m forkwait",
        description="forkwait: inter-op (fork/wait) and intra-op (OpenMP) parallelism.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"forkwait.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Examples
    --------
    >>> from forkwait.cli import main
    >>> main(["info"])  # doctest: +ELLIPSIS
    forkwait ...
    0
    """
    import importlib
    import os

    from forkwait.cli._common import CommandError

    args = build_parser().parse_args(argv)
    try:
        status = int(importlib.import_module(f"forkwait.cli.{args.command}").run(args) or 0)
        sys.stdout.flush()
        return status
    except CommandError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"python -m forkwait {args.command}: {exc}\n")
        return exc.status
    except BrokenPipeError:  # `... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
