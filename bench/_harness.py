"""Shared by the benchmark scripts. The timing helpers live in the package
(forkwait._bench, also behind `python -m forkwait bench`); this adds the rest.

Speed is measured as a ratio against a peer run in the same process,
interleaved round by round, so that a change of machine load hits both."""

from __future__ import annotations

import os

from forkwait._bench import blas_threads, interleaved, loadavg, median_ratio

__all__ = ["blas_threads", "have", "interleaved", "loadavg", "machine", "median_ratio"]


def have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def machine() -> str:
    return f"{os.cpu_count()} CPUs, load {loadavg()}"
