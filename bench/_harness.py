"""Shared by the benchmark scripts: interleaved timing, medians, ratios, load.

Speed is measured as a ratio against a peer run in the same process,
interleaved round by round, so that a change of machine load hits both."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def interleaved(peers: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time every peer once per round, in turn; return the times per peer."""
    for fn in peers.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(rounds):
        for name, fn in peers.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[i] / den[i]."""
    return statistics.median(a / b for a, b in zip(num, den))


def blas_threads(n: int):
    """Limit BLAS to `n` threads (threadpoolctl), or do nothing without it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n, user_api="blas")


def have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def machine() -> str:
    return f"{os.cpu_count()} CPUs, load {loadavg()}"
