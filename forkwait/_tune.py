"""Find the best pair of thread counts for a workload, and say why, or say
that no setting wins beyond the noise.

``fw.tune(fn)`` measures in this process (the settings can change at any
time); ``python -m forkwait tune SCRIPT`` (``forkwait.cli.tune``) runs the
script in a fresh subprocess per run, with the settings in its environment.
Both share the measuring loop and the verdict here. ``fw.tune_region()``
marks the part of a workload to time.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from forkwait._measure.timing import (
    MIN_ROUNDS,
    Load,
    LoadWatch,
    Progress,
    beats,
    blas_thread_count,
    have_threadpoolctl,
    native_thread_ids,
    paired_speedup,
    thread_cpu_seconds,
    thread_ids,
)
from forkwait._threads import _check_count, available_cpus

#: Differences smaller than this fraction are not called a win, however steady.
# With the GIL on (the usual CPython), forked pure-Python code takes turns;
# on a free-threaded CPython it runs in parallel, and the advice that says
# it holds the GIL would be wrong there.
_GIL_ON = getattr(sys, "_is_gil_enabled", lambda: True)()

MIN_GAIN = 0.05
#: Other processes using this many CPUs on average make the machine "busy".
BUSY_CPUS = 0.25

# Threads that Python did not start and that were there when forkwait was
# imported: NumPy's BLAS pool (OpenBLAS starts its threads when NumPy loads
# it; forkwait's OpenMP team starts later, at its first kernel). Their CPU
# time during a profiled run says whether BLAS ran threads of its own.
_BLAS_POOL_TIDS = native_thread_ids()


def _blas_pool_tids() -> set[int]:
    """The ids of NumPy's BLAS threads now (see _BLAS_POOL_TIDS).

    The ids check themselves: OpenBLAS stops its threads before every
    os.fork() (its own at-fork handler) and starts new ones at its next
    multi-threaded call, and a fork child has none of its parent's threads,
    so after a fork, in the parent and in the child, the ids remembered are
    gone. When any of them is missing from /proc/self/task they are taken
    again (no at-fork handler of forkwait's is needed for that).
    """
    global _BLAS_POOL_TIDS
    if not _BLAS_POOL_TIDS <= thread_ids():
        import numpy as np

        # the native threads that work during multi-threaded matmuls (about
        # 50 ms: /proc counts CPU time in clock ticks) are BLAS's
        native = native_thread_ids()
        cpu0 = {tid: thread_cpu_seconds([tid]) for tid in native}
        a = np.ones((512, 512))
        t_end = time.perf_counter() + 0.05
        while time.perf_counter() < t_end:
            a @ a
        new = {tid for tid in native_thread_ids()
               if thread_cpu_seconds([tid]) > cpu0.get(tid, 0.0)}
        if new:  # none when BLAS is limited to 1 thread now: try again next time
            _BLAS_POOL_TIDS = new
    return _BLAS_POOL_TIDS


@dataclass(frozen=True)
class Setting:
    """One point of the grid."""

    interop: int
    intra: int
    mode: str = "shared"

    def label(self) -> str:
        return f"{self.interop} inter-op x {self.intra} intra-op ({self.mode})"

    def env(self) -> dict[str, str]:
        return {
            "FORKWAIT_NUM_INTEROP_THREADS": str(self.interop),
            "FORKWAIT_NUM_THREADS": str(self.intra),
            "FORKWAIT_INTRA_OP_MODE": self.mode,
        }

    @property
    def cost(self) -> tuple[int, bool]:
        """Threads it can start (fewer is cheaper); shared before fixed."""
        return (self.interop * self.intra + self.interop, self.mode != "shared")


def default_setting() -> Setting:
    """What forkwait runs with when nothing is set: a thread per available CPU
    for both counts, shared mode."""
    n = available_cpus()
    return Setting(n, n, "shared")


def thread_counts(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`, and `limit` itself."""
    out, k = [], 1
    while k < limit:
        out.append(k)
        k *= 2
    out.append(limit)
    return out


def grid(
    max_threads: int | None = None, modes: Sequence[str] = ("shared", "fixed")
) -> list[Setting]:
    """Inter-op x intra-op counts from 1 to `max_threads` (default: the CPUs
    available), in each intra-op mode where the mode can matter."""
    limit = available_cpus() if max_threads is None else _check_count(
        max_threads, "max_threads", 1024
    )
    if not modes:
        raise ValueError("modes must name at least one of 'shared', 'fixed'")
    for mode in modes:
        if mode not in ("shared", "fixed"):
            raise ValueError(f"modes must be 'shared' and/or 'fixed', got {mode!r}")
    counts = thread_counts(limit)
    out = []
    for inter in counts:
        for intra in counts:
            for mode in dict.fromkeys(modes):
                # the mode only changes something when several teams can run at once
                if mode == "fixed" and intra == 1 and "shared" in modes:
                    continue
                out.append(Setting(inter, intra, mode))
    return out


# -- marking the region to time -------------------------------------------------------

_regions: list[tuple[float, float]] | None = None  # set while tune measures
_regions_lock = threading.Lock()


@contextlib.contextmanager
def tune_region() -> Iterator[None]:
    """Mark the part of a workload that :func:`tune` and ``python -m forkwait
    tune`` time.

    When a run enters one or more marked regions, its time is the wall time
    during which at least one region was open (nested and concurrent regions
    count once), so set-up, imports and clean-up stay out of the figure.
    Without a region the whole call (or script) is timed. Outside tune the
    block just runs.

    Examples
    --------
    >>> import numpy as np, forkwait as fw
    >>> def work():
    ...     x = np.random.default_rng(0).random(100_000)   # set-up, not timed
    ...     with fw.tune_region():
    ...         return fw.wait_all([fw.fork(np.sort, x) for _ in range(2)])
    >>> result = fw.tune(work, budget=5.0, max_threads=1)
    >>> result.timed
    'the marked region'
    """
    if _regions is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        t1 = time.perf_counter()
        log = _regions
        if log is not None:
            with _regions_lock:
                log.append((t0, t1))


@contextlib.contextmanager
def _timing_regions() -> Iterator[list[tuple[float, float]]]:
    """Collect the regions entered within the block."""
    global _regions
    log: list[tuple[float, float]] = []
    _regions = log
    try:
        yield log
    finally:
        _regions = None


def _covered(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of `intervals`."""
    total, end = 0.0, -math.inf
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def timed_call(fn: Callable[[], object]) -> tuple[float, bool]:
    """Run `fn()`; its time (that of its marked regions when it entered any)
    and whether it entered a region."""
    with _timing_regions() as log:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    if log:
        return _covered(log), True
    return wall, False


# -- what a profile says -------------------------------------------------------------


def profile_facts(prof: Any, blas_cpu_seconds: float, cpu_seconds: float, wall: float,
                  load: Load, intra: int) -> dict:
    """What the advice needs from one profiled run."""
    teams = [k.team for k in prof.kernels]
    sizes = [_prod(k.shape) for k in prof.kernels]
    task_seconds = sum(t.end - t.start for t in prof.tasks)
    in_tasks = sum(k.end - k.start for k in prof.kernels if k.task)
    return {
        "tasks": len(prof.tasks),
        "task_threads": len({t.thread for t in prof.tasks}),
        "task_seconds": task_seconds,
        "kernels": len(prof.kernels),
        "kernel_max_team": max(teams, default=0),
        "kernel_max_size": max(sizes, default=0),
        "kernel_seconds": sum(k.end - k.start for k in prof.kernels),
        # share of the forked tasks' time spent in forkwait.ops kernels (GIL released)
        "kernel_share_of_tasks": in_tasks / task_seconds if task_seconds > 0 else 0.0,
        # None: not known (threadpoolctl is not installed)
        "blas_threads": blas_thread_count() if have_threadpoolctl() else None,
        "blas_cpu_seconds": blas_cpu_seconds,
        "cpu_utilisation": cpu_seconds / max(wall, 1e-9),
        "profile_others_cpus": load.others_cpus,
        "profiled_intra": intra,
    }


def profiled_run(fn: Callable[[], object], intra: int) -> dict:
    """Run `fn()` once under forkwait.profile(); the facts for the advice."""
    from forkwait._profile import profile

    tids = _blas_pool_tids()
    time.sleep(0.3)  # let pools that spin after start-up (OpenBLAS) go idle first
    blas0 = thread_cpu_seconds(tids)
    watch = LoadWatch()
    cpu0, t0 = time.process_time(), time.perf_counter()
    with profile() as prof:
        fn()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    load = watch.stop()
    blas = thread_cpu_seconds(tids) - blas0
    return {"profile": prof, **profile_facts(prof, blas, cpu, wall, load, intra)}


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# -- measuring -----------------------------------------------------------------------


@dataclass
class Rounds:
    """How the measuring loop ended."""

    rounds: int
    reason: str  # "stable", "budget", "max_rounds"
    seconds: float


def measure(
    settings: Sequence[Setting],
    run_one: Callable[[Setting], float],
    min_rounds: int,
    max_rounds: int,
    budget: float,
    rtol: float = 0.02,
    bar: Progress | None = None,
) -> tuple[dict[Setting, list[float]], Rounds]:
    """Time every setting once per round (interleaved, starting one place
    later each round), until at least `min_rounds` rounds have run and no
    setting's median moved by more than `rtol` in the last round, or the
    `budget` (seconds) would be spent by one more round, or `max_rounds`."""
    times: dict[Setting, list[float]] = {s: [] for s in settings}
    t_start = time.perf_counter()
    previous: dict[Setting, float] = {}
    reason = "max_rounds"
    r = 0
    for r in range(1, max_rounds + 1):
        t_round = time.perf_counter()
        k = (r - 1) % len(settings)
        for s in [*settings[k:], *settings[:k]]:
            times[s].append(run_one(s))
            if bar is not None:
                bar.step(s.label())
        medians = {s: statistics.median(ts) for s, ts in times.items()}
        stable = bool(previous) and all(
            abs(medians[s] - previous[s]) <= rtol * previous[s] for s in settings
        )
        previous = medians
        if r >= min_rounds and stable:
            reason = "stable"
            break
        elapsed = time.perf_counter() - t_start
        if elapsed + (time.perf_counter() - t_round) > budget:
            reason = "budget"
            break
    return times, Rounds(r, reason, time.perf_counter() - t_start)


# -- the verdict ---------------------------------------------------------------------


@dataclass
class TuneResult:
    """What :func:`tune` measured: times per setting (run ``i`` of every
    setting was made in the same round), the verdict and the reasons.

    ``recommended`` is the setting to use, or None when no setting beats one
    thread beyond the noise; ``fastest`` is the one with the best median
    speed-up, whatever the noise.

    Examples
    --------
    >>> from forkwait._tune import Setting, TuneResult
    >>> one, two = Setting(1, 1), Setting(2, 1)
    >>> steady = TuneResult({one: [0.10, 0.11, 0.10, 0.10, 0.11],
    ...                      two: [0.05, 0.06, 0.05, 0.05, 0.06]}, cpus=2)
    >>> steady.recommended == two, round(steady.speedup(two), 2)
    (True, 2.0)
    >>> noisy = TuneResult({one: [0.10, 0.11, 0.10, 0.10, 0.11],
    ...                     two: [0.09, 0.12, 0.09, 0.12, 0.10]}, cpus=2)
    >>> noisy.recommended is None
    True
    >>> noisy.verdict()[0][:60]
    'No setting beats 1 inter-op x 1 intra-op (shared) beyond the'
    """

    times: dict[Setting, list[float]]
    facts: dict = field(default_factory=dict)
    workload: str = "the workload"
    load: Load | None = None
    rounds: Rounds | None = None
    timed: str = "the whole call"
    cpus: int = field(default_factory=available_cpus)
    default: Setting = field(default_factory=default_setting)
    min_gain: float = MIN_GAIN

    # -- figures ---------------------------------------------------------
    @property
    def baseline(self) -> Setting:
        """The single-thread setting (the fewest threads in the grid)."""
        return min(self.times, key=lambda s: s.cost)

    def median(self, s: Setting) -> float:
        return statistics.median(self.times[s])

    def speedup(self, s: Setting, ref: Setting | None = None) -> float:
        """Median over rounds of the paired ratio of `ref`'s time (the
        baseline's) to `s`'s: above 1, `s` was faster."""
        return paired_speedup(self.times[self.baseline if ref is None else ref], self.times[s])[0]

    def interval(self, s: Setting, ref: Setting | None = None) -> tuple[float, float] | None:
        """A 90% interval for :meth:`speedup` (None with fewer than 5 rounds)."""
        return paired_speedup(self.times[self.baseline if ref is None else ref], self.times[s])[1]

    def beats(self, a: Setting, b: Setting) -> bool:
        """Whether `a` is faster than `b` beyond the noise: the 90% interval of
        the paired speed-up lies above 1 and its median is at least
        1 + min_gain."""
        return beats(self.times[a], self.times[b], self.min_gain)

    @property
    def fastest(self) -> Setting:
        """The setting with the best median speed-up (not necessarily beyond noise)."""
        return max(self.times, key=lambda s: (self.speedup(s), [-c for c in s.cost]))

    @property
    def n_rounds(self) -> int:
        return min(len(ts) for ts in self.times.values())

    def _winners(self) -> list[Setting]:
        return [s for s in self.times if s != self.baseline and self.beats(s, self.baseline)]

    def _ties(self) -> list[Setting]:
        """The winners that the best winner does not beat beyond the noise
        (itself included), cheapest first."""
        winners = self._winners()
        if not winners:
            return []
        top = max(winners, key=self.speedup)
        return sorted([w for w in winners if w == top or not self.beats(top, w)],
                      key=lambda s: s.cost)

    @property
    def recommended(self) -> Setting | None:
        """The setting to use: the fastest of those that beat the single-thread
        one beyond the noise; where others are as fast within the noise, the
        default if it is among them, else the cheapest (fewest threads).
        None when no setting wins."""
        ties = self._ties()
        if not ties:
            return None
        if self.default in ties:
            return self.default
        return ties[0]

    # -- sentences ----------------------------------------------------------
    def verdict(self) -> list[str]:
        """The recommendation, or why there is none."""
        base = self.baseline.label()
        if len(self.times) == 1:
            return [f"Only one setting was tried ({base}): nothing to compare."]
        if self.n_rounds < MIN_ROUNDS:
            return [
                f"Cannot tell: {self.n_rounds} round(s) are too few to tell a difference "
                f"from noise ({MIN_ROUNDS} are needed); raise the time budget or the repeat "
                "count."
            ]
        rec = self.recommended
        if rec is None:
            others = [s for s in self.times if s != self.baseline]
            f = max(others, key=lambda s: (self.speedup(s), [-c for c in s.cost]))
            return [
                f"No setting beats {base} beyond the noise on this machine now (the best of "
                f"the others, {f.label()}, ran {_speed(self, f)}; a win needs a 90% interval "
                f"above 1.00x and a median of at least {1 + self.min_gain:.2f}x)."
            ]
        ties = [s for s in self._ties() if s != rec]
        out = []
        if ties:
            also = ", ".join(s.label() for s in ties)
            why = ("it is the default" if rec == self.default
                   else "it uses the fewest threads of them")
            out.append(
                f"{rec.label()} ({_speed(self, rec)}) and {also} beat {base} beyond the noise "
                f"but not each other; {rec.label()} is advised because {why}."
            )
        else:
            out.append(f"best: {rec.label()}, {_speed(self, rec)} over {base}, beyond the noise.")
        if rec == self.default:
            out.append("That is forkwait's default: nothing to change.")
        else:
            out.append("Apply it " + self.how_to_apply(rec))
        return out

    def how_to_apply(self, s: Setting) -> str:
        mode = "" if s.mode == "shared" else f'\n  forkwait.set_intra_op_mode("{s.mode}")'
        env = " ".join(
            f"{k}={v}" for k, v in s.env().items() if s.mode != "shared" or not k.endswith("MODE")
        )
        return (
            f"in code:\n  forkwait.set_num_interop_threads({s.interop})\n"
            f"  forkwait.set_num_threads({s.intra}){mode}\n"
            f"or from the shell:\n  {env} python your_script.py"
        )

    def advice(self) -> list[str]:
        """Why a knob did or did not make a difference, from what was recorded
        (each sentence comes from one rule; see docs/cli.md)."""
        out = []
        f = self.facts
        multi = self.cpus > 1
        if self.cpus == 1:
            out.append(
                "Only one CPU is available to this process, so no setting can run two things "
                "at once here."
            )
        if self.load is not None and self.load.busy(BUSY_CPUS):
            out.append(
                f"The machine was busy: other processes used {self.load.others_cpus:.2f} of "
                f"{os.cpu_count()} CPUs on average while timing (load average "
                f"{self.load.before} -> {self.load.after}), so the figures may not mean much; "
                "run again when it is quieter."
            )
        spread = self._largest_spread()
        if spread is not None and spread[1] > 0.25:
            out.append(
                f"The runs of {spread[0].label()} varied by {spread[1] * 100:.0f}% "
                "(max - min over median): differences smaller than that are noise."
            )
        tasks = f.get("tasks", 0)
        if tasks == 0:
            out.append(
                "No task was forked, so inter-op threads cannot matter. Fork independent "
                "calls to run them at once: fut = forkwait.fork(fn, *args) ... "
                "forkwait.wait(fut)."
            )
        elif (
            multi
            and f.get("cpu_utilisation", 2.0) < 1.25
            and (f.get("profile_others_cpus") or 0.0) < BUSY_CPUS
            and f.get("kernel_share_of_tasks", 0.0) < 0.5
        ):
            if _GIL_ON:
                out.append(
                    f"{tasks} tasks were forked, but the process used only "
                    f"{f['cpu_utilisation']:.2f} CPUs on average on a quiet machine: the "
                    "forked work holds the GIL (pure Python) or waits (I/O, sleep), so more "
                    "threads cannot overlap it. Move the hot loop into code that releases "
                    "the GIL (forkwait.ops, NumPy on large arrays, a Cython nogil function), "
                    "use processes for pure-Python work, or a free-threaded CPython "
                    "(docs/freethreading.md)."
                )
            else:
                out.append(
                    f"{tasks} tasks were forked, but the process used only "
                    f"{f['cpu_utilisation']:.2f} CPUs on average on a quiet machine: the "
                    "forked work waits (I/O, sleep) or takes turns on a lock (this CPython "
                    "runs Python code without the GIL, so it is not the GIL), so more "
                    "threads cannot overlap it."
                )
        if tasks and multi and self.baseline.interop == 1 and self.recommended is None \
                and self.n_rounds >= MIN_ROUNDS and len(self.times) > 1:
            out.append(
                f"With 1 inter-op thread the thread that waits runs forked tasks too, so "
                f"{self.baseline.label()} already ran two tasks at once: on "
                f"{self.cpus} CPUs that can be all that forking gains."
            )
        blas_threads = f.get("blas_threads", 0)
        if tasks and blas_threads is None:
            out.append(
                "Whether NumPy's BLAS ran threads of its own while tasks were forked (forked "
                "calls to BLAS, @ or np.dot, then oversubscribe the cores) is not known: that "
                "check needs threadpoolctl (pip install threadpoolctl, or pip install "
                "'forkwait[tools]')."
            )
        elif tasks and blas_threads > 1 and f.get("blas_cpu_seconds", 0.0) > 0.0:
            out.append(
                f"NumPy's BLAS ran threads of its own ({f['blas_threads']}) while tasks were "
                f"forked ({f['blas_cpu_seconds'] * 1e3:.0f} ms of CPU in its pool): forked "
                "calls to BLAS (@, np.dot) then oversubscribe the cores. Limit it with "
                "threadpoolctl.threadpool_limits(1, user_api='blas') around the forked work, "
                "or use forkwait.ops.matmul, whose team forkwait sizes."
            )
        if f.get("kernels", 0) == 0:
            out.append(
                "No forkwait.ops kernel ran, so intra-op threads (set_num_threads) cannot "
                "matter for this workload."
            )
        elif f.get("kernel_max_team", 0) <= 1 and f.get("profiled_intra", 1) > 1:
            out.append(
                f"{f['kernels']} kernels ran, but none above its grain size (largest: "
                f"{f['kernel_max_size']} elements), so each ran on one thread and intra-op "
                "threads cannot matter. Work on larger arrays, or fork the small calls."
            )
        for axis, what in (("interop", "inter-op"), ("intra", "intra-op")):
            s = self._axis_winner(axis)
            if s is not None:
                out.append(f"More {what} threads helped beyond the noise: "
                           f"{s.label()} ran {_speed(self, s)}.")
        return out

    def _axis_winner(self, axis: str) -> Setting | None:
        """The fastest setting that raises only `axis` and beats the baseline."""
        other = "intra" if axis == "interop" else "interop"
        base = self.baseline
        more = [
            s for s in self.times
            if getattr(s, axis) > getattr(base, axis) and getattr(s, other) == getattr(base, other)
            and self.beats(s, base)
        ]
        return max(more, key=self.speedup, default=None)

    def _largest_spread(self) -> tuple[Setting, float] | None:
        spreads = [
            (s, (max(ts) - min(ts)) / statistics.median(ts))
            for s, ts in self.times.items() if len(ts) >= 3 and statistics.median(ts) > 0
        ]
        return max(spreads, key=lambda x: x[1], default=None)

    # -- text --------------------------------------------------------------
    def table(self) -> str:
        rows = sorted(self.times, key=lambda s: (s.interop, s.intra, s.mode))
        width = max(len(s.label()) for s in rows)
        lines = [
            f"{'setting':<{width}}  {'median ms':>9}  {'min-max ms':>15}  "
            f"{'speed-up [90% interval]':>23}  runs"
        ]
        rec = self.recommended
        for s in rows:
            ts = self.times[s]
            iv = self.interval(s) if s != self.baseline else None
            ivs = f"[{iv[0]:.2f}-{iv[1]:.2f}]" if iv else ("" if s == self.baseline else "[n/a]")
            mark = "  <- advised" if s == rec else ""
            if s == self.default:
                mark += "  (default)"
            lines.append(
                f"{s.label():<{width}}  {self.median(s) * 1e3:>9.2f}  "
                f"{f'{min(ts) * 1e3:.2f}-{max(ts) * 1e3:.2f}':>15}  "
                f"{f'{self.speedup(s):.2f}x {ivs}':>23}  {len(ts)}{mark}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        head = f"forkwait tune: {self.workload}; {self.cpus} CPUs; timed: {self.timed}"
        if self.rounds is not None:
            stop = {"stable": "medians stable", "budget": "time budget spent",
                    "max_rounds": "round limit reached"}[self.rounds.reason]
            head += f"; {self.rounds.rounds} rounds ({stop}, {self.rounds.seconds:.1f} s)"
        parts = [head]
        if self.load is not None:
            parts.append(f"machine: {self.load.describe()}")
        parts.append(f"speed-up is over {self.baseline.label()}, as the median of per-round "
                     "ratios")
        parts.append(self.table())
        parts.extend(self.verdict())
        advice = self.advice()
        if advice:
            parts.append("why:\n" + "\n".join(f"- {a}" for a in advice))
        return "\n".join(parts)

    # -- picture -------------------------------------------------------------
    def heatmap(self, path: str | os.PathLike) -> None:
        """Write a PNG heatmap of speed-ups (inter-op x intra-op, a panel per
        mode), on one colour scale centred at 1.00x (white: as fast as one
        thread; blue: faster; red: slower), with the advised cell outlined and
        the cells that were not run explained. Needs matplotlib (an
        ImportError says what to install)."""
        from forkwait._measure.plots import figure, require, text_colour

        require()
        from matplotlib.colors import TwoSlopeNorm
        from matplotlib.patches import Rectangle

        modes = sorted({s.mode for s in self.times}, key=lambda m: m != "shared")
        inters = sorted({s.interop for s in self.times})
        intras = sorted({s.intra for s in self.times})
        speedups = [self.speedup(s) for s in self.times]
        lo, hi = min([*speedups, 0.8]), max([*speedups, 1.25])
        norm = TwoSlopeNorm(vcenter=1.0, vmin=lo, vmax=hi)
        from matplotlib import colormaps

        cmap = colormaps["RdBu"]
        fig = figure(width=4.6 * len(modes) + 1.2, height=4.6)
        axes = fig.subplots(1, len(modes), squeeze=False)[0]
        rec = self.recommended
        image = None
        for ax, mode in zip(axes, modes, strict=True):
            cells = [[math.nan] * len(intras) for _ in inters]
            for s in self.times:
                if s.mode == mode:
                    cells[inters.index(s.interop)][intras.index(s.intra)] = self.speedup(s)
            image = ax.imshow(cells, origin="lower", cmap=cmap, norm=norm, aspect="auto")
            for i, row in enumerate(cells):
                for j, v in enumerate(row):
                    s = Setting(inters[i], intras[j], mode)
                    if math.isnan(v):
                        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#eeeeee",
                                               hatch="//", edgecolor="#bbbbbb"))
                        why = ("not run:\nsame as shared\nwith 1 intra-op thread"
                               if mode == "fixed" and intras[j] == 1 else "not run")
                        ax.text(j, i, why, ha="center", va="center", fontsize=7, color="#555555")
                        continue
                    iv = self.interval(s) if s != self.baseline else None
                    label = f"{v:.2f}x"
                    if iv:
                        label += f"\n{iv[0]:.2f}-{iv[1]:.2f}"
                    if s == self.baseline:
                        label += "\nbaseline"
                    if s == rec:
                        label += "\nadvised"
                    ax.text(j, i, label, ha="center", va="center", fontsize=8,
                            color=text_colour(cmap(norm(v))))
                    if s == rec:
                        ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False,
                                               edgecolor="gold", linewidth=3))
            ax.set_xticks(range(len(intras)), [str(v) for v in intras])
            ax.set_yticks(range(len(inters)), [str(v) for v in inters])
            ax.set_xlabel("intra-op threads (set_num_threads)")
            ax.set_ylabel("inter-op threads (set_num_interop_threads)")
            ax.set_title(f"{mode} mode")
        if image is not None:
            bar = fig.colorbar(image, ax=list(axes), shrink=0.85)
            b = self.baseline
            bar.set_label(f"speed-up over {b.interop} x {b.intra} (median of rounds)")
        verdict = ("advised: " + rec.label()) if rec else "no setting wins beyond the noise"
        fig.suptitle(f"forkwait tune: {self.workload[:60]}\n{verdict}; cells: median speed-up "
                     "and its 90% interval", fontsize=9)
        fig.savefig(path, dpi=100, bbox_inches="tight")


def _speed(result: TuneResult, s: Setting) -> str:
    iv = result.interval(s)
    text = f"{result.speedup(s):.2f}x"
    return text + (f" [{iv[0]:.2f}-{iv[1]:.2f}]" if iv else "")


def tune(
    fn: Callable[..., object],
    *args: object,
    repeat: int = MIN_ROUNDS,
    max_rounds: int = 30,
    budget: float = 60.0,
    max_threads: int | None = None,
    modes: Sequence[str] = ("shared", "fixed"),
    progress: bool = False,
    **kwargs: object,
) -> TuneResult:
    """Time ``fn(*args, **kwargs)`` under a grid of thread settings.

    Inter-op x intra-op thread counts from 1 to the CPUs available (or
    `max_threads`), in each intra-op mode, interleaved round by round: at
    least `repeat` rounds, more until no setting's median moves by over 2%,
    as long as the time `budget` lasts. A setting is recommended only when
    it beats the single-thread one beyond the noise (see
    :meth:`TuneResult.beats`); otherwise the result says that none wins, and
    why that may be. One more run under :func:`forkwait.profile` (also the
    warm-up) feeds the reasons. When `fn` enters :func:`tune_region`, only
    the marked region is timed. The settings are restored afterwards.

    Parameters
    ----------
    fn : callable
        The workload; it should do the same work on every call.
    repeat : int
        The fewest rounds (5 are needed before a difference can be called).
    max_rounds : int
        The most rounds.
    budget : float
        Seconds the timed rounds may take (a round that has started finishes).
    max_threads : int, optional
        The largest thread count to try.
    modes : sequence of str
        Intra-op modes to try (``"shared"``, ``"fixed"``).
    progress : bool
        Show a progress bar on stderr (only when it is a terminal).

    Returns
    -------
    TuneResult
        ``print(result)`` shows the table, the verdict and the reasons;
        ``result.recommended`` is the :class:`Setting` to use or None;
        ``result.heatmap(path)`` writes a PNG.

    Examples
    --------
    >>> import numpy as np, forkwait as fw
    >>> x = np.random.rand(200_000)
    >>> def work():
    ...     return fw.wait_all([fw.fork(np.sort, x) for _ in range(4)])
    >>> result = fw.tune(work, budget=10.0)
    >>> result.facts["tasks"], result.n_rounds >= 1
    (4, True)
    """
    from forkwait import _threads

    if not callable(fn):
        raise TypeError(f"tune() needs a callable workload, got {type(fn).__name__}")
    repeat = _check_count(repeat, "repeat", 10_000)
    max_rounds = max(_check_count(max_rounds, "max_rounds", 10_000), repeat)
    if not (isinstance(budget, (int, float)) and budget > 0):
        raise ValueError(f"budget must be a positive number of seconds, got {budget!r}")
    settings = grid(max_threads, modes)
    saved = _threads._save_settings()
    regions = [False]

    def call() -> None:
        fn(*args, **kwargs)

    def run_one(s: Setting) -> float:
        _apply(s)
        seconds, marked = timed_call(call)
        regions[0] = regions[0] or marked
        return seconds

    try:
        with Progress(len(settings) * max_rounds + 1, progress, "tune") as bar:
            top = max(settings, key=lambda s: (s.interop * s.intra, s.mode == "shared"))
            _apply(top)
            facts = profiled_run(call, top.intra)
            facts.pop("profile")
            bar.step("profile")
            watch = LoadWatch()
            times, rounds = measure(settings, run_one, repeat, max_rounds, budget, bar=bar)
            load = watch.stop()
    finally:
        _threads._restore_settings(saved)
    name = getattr(fn, "__qualname__", type(fn).__name__)
    return TuneResult(times, facts, workload=f"{name}()", load=load, rounds=rounds,
                      timed="the marked region" if regions[0] else "the whole call")


def _apply(s: Setting) -> None:
    from forkwait._threads import set_intra_op_mode, set_num_interop_threads, set_num_threads

    set_num_interop_threads(s.interop)
    set_num_threads(s.intra)
    set_intra_op_mode(s.mode)
