"""Timing helpers shared by ``fw.tune``, the commands ``demo``, ``bench`` and
``tune``, and bench/: one place for the machine's load, peers timed
interleaved, ratios and their spread, BLAS's thread count, and progress bars.

Speed is measured as a ratio against a peer run in the same process,
interleaved round by round, so that a change of machine load hits both; the
spread of the per-round ratios says how far a figure can be trusted.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# -- the machine's load -----------------------------------------------------------


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (/proc/loadavg), as text."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Load:
    """The machine's load over an interval: load averages at both ends and the
    CPUs that *other* processes used on average (None where /proc/stat is
    missing)."""

    before: str
    after: str
    others_cpus: float | None
    seconds: float

    def busy(self, threshold: float = 0.25) -> bool:
        """Whether other processes used at least `threshold` CPUs on average."""
        return self.others_cpus is not None and self.others_cpus >= threshold

    def describe(self) -> str:
        others = (
            "n/a" if self.others_cpus is None
            else f"{self.others_cpus:.2f} CPUs used by other processes on average"
        )
        return f"load average {self.before} -> {self.after}; {others}"


class LoadWatch:
    """Measure the machine's load over a block of work.

    >>> w = LoadWatch()
    >>> load = w.stop()
    >>> load.seconds >= 0.0
    True
    """

    def __init__(self) -> None:
        self._before = loadavg()
        self._t0 = time.perf_counter()
        self._busy0 = _machine_busy_seconds()
        self._own0 = _own_cpu_seconds()

    def stop(self) -> Load:
        wall = time.perf_counter() - self._t0
        busy1 = _machine_busy_seconds()
        others = None
        if self._busy0 is not None and busy1 is not None and wall > 0.0:
            own = _own_cpu_seconds() - self._own0
            others = max((busy1 - self._busy0 - own) / wall, 0.0)
        return Load(self._before, loadavg(), others, wall)


# -- peers, ratios and their spread -------------------------------------------------


def interleaved(peers: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time every peer once per round, in turn (after one warm-up call each)."""
    for fn in peers.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(rounds):
        for name, fn in peers.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of num[i] / den[i]."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


#: rounds needed before a median's interval exists at the confidence used here
MIN_ROUNDS = 5


def median_interval(values: Iterable[float], confidence: float = 0.9) -> tuple[float, float] | None:
    """A distribution-free interval for the median of `values`: the order
    statistics (k-th smallest, k-th largest) with the largest k for which the
    interval holds the true median with at least `confidence` (the sign
    test's interval). None when there are too few values for any interval to
    reach it (fewer than 5 at 0.9).

    >>> median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    (1.0, 5.0)
    >>> median_interval([1.0, 2.0, 3.0]) is None
    True
    """
    xs = sorted(values)
    n = len(xs)
    tail = (1.0 - confidence) / 2.0
    k = 0  # number of values cut off at each end
    cdf = 0.0
    for j in range(n // 2):
        cdf += math.comb(n, j) / 2.0**n  # P(fewer than j+1 values below the median)
        if cdf > tail:
            break
        k = j + 1
    if k == 0:
        return None
    return xs[k - 1], xs[n - k]


def paired_speedup(
    ref: Sequence[float], new: Sequence[float]
) -> tuple[float, tuple[float, float] | None]:
    """How many times faster `new` ran than `ref`, round by round (times of
    the same round paired): the median ratio and its 90% interval."""
    ratios = [a / b for a, b in zip(ref, new, strict=False) if b > 0]
    return statistics.median(ratios), median_interval(ratios)


def beats(new: Sequence[float], ref: Sequence[float], min_gain: float) -> bool:
    """Whether `new` ran faster than `ref` beyond the noise: the 90% interval
    of the paired speed-up lies above 1 and its median is at least
    1 + `min_gain` (a steady 2% is not worth a change)."""
    median, interval = paired_speedup(ref, new)
    return interval is not None and interval[0] > 1.0 and median >= 1.0 + min_gain


# -- BLAS ----------------------------------------------------------------------------


def blas_limit(n: int) -> Any:
    """A context manager that limits BLAS to `n` threads (threadpoolctl; a
    no-op without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n, user_api="blas")


def have_threadpoolctl() -> bool:
    """Whether threadpoolctl is installed (what BLAS's threads are doing is
    known only through it)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def blas_thread_count() -> int:
    """The most threads any BLAS library loaded in this process will use
    (threadpoolctl; 0 when it is not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 0
    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=0)


def thread_ids() -> set[int]:
    """Kernel thread ids of this process's threads now; empty where /proc is
    missing."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def native_thread_ids() -> set[int]:
    """Kernel thread ids of this process's threads that Python did not start
    (BLAS and OpenMP pools); empty where /proc is missing."""
    tids = thread_ids()
    if not tids:
        return set()
    python = {t.native_id for t in threading.enumerate()}
    return tids - python - {os.getpid()}


def thread_cpu_seconds(tids: Iterable[int]) -> float:
    """CPU seconds used so far by the threads `tids` of this process (those
    that have exited count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


# -- progress ------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr, shown only when stderr is a terminal (so a
    log never gets carriage-return updates), drawn by tqdm."""

    def __init__(self, total: int, enabled: bool = True, desc: str = "") -> None:
        self._bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # the bar is a nicety; everything else works without it
                return
            self._bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr,
                             dynamic_ncols=True)

    def step(self, label: str = "") -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label[:40], refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
