"""Argument types, the parser class and the one error type of the CLI."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn


class CommandError(Exception):
    """A command could not do its job: printed as one message (prefixed with
    the command), exit status `status` (2: bad usage, 1: the script failed)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def add_script_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("script", help=f"the Python script to {what}")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.add_argument("--timeout", type=positive_float, default=600.0,
                   help="seconds one run of the script may take (600)")


def existing_script(path: str) -> str:
    """`path`, or a usage error (exit status 2) when it is not a file."""
    if not os.path.isfile(path):
        raise CommandError(f"error: no such file: {path}", status=2)
    return path
