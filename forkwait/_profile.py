"""forkwait.profile(): record forked tasks and kernel calls, export a
Chrome/Perfetto trace, summarise, plot a timeline."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import defaultdict
from typing import Any, NamedTuple

from forkwait._native import pool

# The list that the active profile records into (None: not recording). The
# kernels' Python layer reads it before each call: one global lookup when off.
_sink: list | None = None
_lock = threading.Lock()


class TaskRecord(NamedTuple):
    """One forked task, as recorded by :func:`profile`."""

    id: int
    parent: int  # id of the task that forked it; 0: forked outside any task
    name: str
    fork_time: float  # seconds, on the pool's monotonic clock
    fork_thread: int
    start: float
    end: float
    thread: int
    wait_time: float  # seconds it spent blocked in wait() on other futures
    outcome: str  # "finished" or "failed"


class KernelRecord(NamedTuple):
    """One kernel call of ``forkwait.ops``."""

    op: str
    shape: tuple
    dtype: str
    team: int  # OpenMP threads the kernel ran with
    start: float
    end: float
    thread: int
    task: int  # the task it ran in; 0: none


class WaitRecord(NamedTuple):
    """A wait() that did not find its future done at once."""

    task: int  # the future waited on (its task id; 0 for futures made by hand)
    start: float
    end: float
    thread: int


class _PoolHook:
    """What the pool calls while a profile records (keywords: the records' fields)."""

    def __init__(self, sink: list) -> None:
        self._sink = sink

    def on_task(self, **fields: Any) -> None:
        self._sink.append(("task", *TaskRecord(**fields)))

    def on_wait(self, **fields: Any) -> None:
        self._sink.append(("wait", *WaitRecord(**fields)))


def record_kernel(op: str, shape: tuple, dtype: str, team: int, start: float, end: float) -> None:
    """Called by the kernels' Python layer while a profile records."""
    sink = _sink
    if sink is not None:
        sink.append(("kernel", op, shape, dtype, team, start, end,
                     threading.get_ident(), pool._current_task()))


def _kernel_tables(on: bool) -> None:
    ops = sys.modules.get("forkwait.ops")
    if ops is not None:
        ops._set_profiling(on)


def now() -> float:
    """The clock of all records (monotonic seconds)."""
    return pool._now()


class Profile:
    """What :func:`profile` recorded; filled in when its block ends.

    Examples
    --------
    >>> import forkwait as fw
    >>> with fw.profile() as prof:
    ...     fw.wait(fw.fork(sum, range(10)))
    45
    >>> [t.name for t in prof.tasks]
    ['sum']
    """

    def __init__(self) -> None:
        self._thread_names: dict[int, str] = {}
        self.start = 0.0
        self.end = 0.0
        self._raw: list = []
        self._records: tuple[list[TaskRecord], list[KernelRecord], list[WaitRecord]] | None = None

    # -- recording -------------------------------------------------------
    def _begin(self) -> None:
        global _sink
        with _lock:
            if _sink is not None:
                raise RuntimeError("forkwait.profile() is already recording in this process")
            self._names_now()
            self.start = now()
            _sink = self._raw
            pool._set_profiler(_PoolHook(self._raw))
            _kernel_tables(True)

    def _finish(self) -> None:
        global _sink
        with _lock:
            _kernel_tables(False)
            pool._set_profiler(None)
            _sink = None
            self.end = now()
            self._names_now()

    def _parse(self) -> tuple[list[TaskRecord], list[KernelRecord], list[WaitRecord]]:
        """Turn the raw tuples into records, once, when they are first read
        (so that ending a profile costs nothing per event)."""
        if self._records is None:
            if _sink is self._raw:
                raise RuntimeError("the profile is still recording: read it after its block")
            tasks, kernels, waits = [], [], []
            for rec in self._raw:
                kind = rec[0]
                if kind == "task":
                    tasks.append(TaskRecord._make(rec[1:]))
                elif kind == "kernel":
                    kernels.append(KernelRecord._make(rec[1:]))
                elif kind == "wait":
                    waits.append(WaitRecord._make(rec[1:]))
            self._raw = []
            for recs in (tasks, kernels, waits):
                for r in recs:
                    self._thread_names.setdefault(r.thread, f"thread-{r.thread}")
            self._records = (tasks, kernels, waits)
        return self._records

    @property
    def tasks(self) -> list[TaskRecord]:
        """Every forked task that ran while recording (:class:`TaskRecord`)."""
        return self._parse()[0]

    @property
    def kernels(self) -> list[KernelRecord]:
        """Every kernel call of ``forkwait.ops`` (:class:`KernelRecord`)."""
        return self._parse()[1]

    @property
    def waits(self) -> list[WaitRecord]:
        """Every wait that did not find its future done (:class:`WaitRecord`)."""
        return self._parse()[2]

    @property
    def thread_names(self) -> dict[int, str]:
        """Thread ident -> name, for every thread seen."""
        self._parse()
        return self._thread_names

    def _names_now(self) -> None:
        for t in threading.enumerate():
            if t.ident is not None:
                self._thread_names[t.ident] = t.name

    @property
    def duration(self) -> float:
        """Seconds between the start and the end of the recording."""
        return max(self.end - self.start, 0.0)

    # -- Chrome / Perfetto trace --------------------------------------------
    def chrome_trace(self) -> dict[str, Any]:
        """The trace as a dict in Chrome's trace-event format (see
        :meth:`export_chrome_trace`).

        Examples
        --------
        >>> import forkwait as fw
        >>> with fw.profile() as prof:
        ...     _ = fw.wait(fw.fork(abs, -1))
        >>> sorted({e["ph"] for e in prof.chrome_trace()["traceEvents"]})
        ['M', 'X', 'f', 's']
        """
        pid = os.getpid()
        threads = sorted(self.thread_names, key=lambda ident: self._thread_order(ident))
        tid = {ident: i + 1 for i, ident in enumerate(threads)}

        def us(t: float) -> float:
            return round((t - self.start) * 1e6, 3)

        events: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": "forkwait"}}
        ]
        for ident in threads:
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid[ident],
                           "args": {"name": self.thread_names[ident]}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": pid,
                           "tid": tid[ident], "args": {"sort_index": tid[ident]}})
        names = {t.id: t.name for t in self.tasks}
        for t in self.tasks:
            events.append({
                "name": t.name, "cat": "task", "ph": "X", "pid": pid, "tid": tid[t.thread],
                "ts": us(t.start), "dur": us(t.end) - us(t.start),
                "args": {"task": t.id, "forked by": names.get(t.parent, "(main program)")
                         if t.parent else "(main program)",
                         "queued (us)": round((t.start - t.fork_time) * 1e6, 1),
                         "waiting on children (us)": round(t.wait_time * 1e6, 1),
                         "outcome": t.outcome},
            })
            if t.fork_thread in tid:
                # an arrow from the fork to the task's start
                events.append({"name": "fork", "cat": "fork", "ph": "X", "pid": pid,
                               "tid": tid[t.fork_thread], "ts": us(t.fork_time), "dur": 0,
                               "args": {"task": t.id, "function": t.name}})
                events.append({"name": "fork", "cat": "fork", "ph": "s", "id": t.id,
                               "pid": pid, "tid": tid[t.fork_thread], "ts": us(t.fork_time)})
                events.append({"name": "fork", "cat": "fork", "ph": "f", "bp": "e", "id": t.id,
                               "pid": pid, "tid": tid[t.thread], "ts": us(t.start)})
        for k in self.kernels:
            events.append({
                "name": k.op, "cat": "kernel", "ph": "X", "pid": pid, "tid": tid[k.thread],
                "ts": us(k.start), "dur": us(k.end) - us(k.start),
                "args": {"shape": list(k.shape), "dtype": k.dtype, "team": k.team},
            })
        for wt in self.waits:
            events.append({
                "name": f"wait {names.get(wt.task, 'future')}", "cat": "wait", "ph": "X",
                "pid": pid, "tid": tid[wt.thread], "ts": us(wt.start),
                "dur": us(wt.end) - us(wt.start), "args": {"task": wt.task},
            })
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"producer": "forkwait.profile"}}

    def _thread_order(self, ident: int) -> tuple[int, str]:
        name = self.thread_names.get(ident, "")
        if name == "MainThread":
            return (0, "")
        if name.startswith("forkwait-interop-"):
            return (1, name.rsplit("-", 1)[1].zfill(6))
        return (2, name)

    def export_chrome_trace(self, path: str | os.PathLike) -> None:
        """Write the trace as Chrome trace-event JSON.

        Open it in https://ui.perfetto.dev or chrome://tracing: one track per
        thread (named), tasks, kernels and waits as nested slices, and an
        arrow from each fork to the task it started.

        Examples
        --------
        >>> import forkwait as fw, json, os, tempfile
        >>> with fw.profile() as prof:
        ...     _ = fw.wait(fw.fork(max, 1, 2))
        >>> path = os.path.join(tempfile.mkdtemp(), "trace.json")
        >>> prof.export_chrome_trace(path)
        >>> "traceEvents" in json.load(open(path))
        True
        """
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)

    # -- summary ------------------------------------------------------------
    def busy_fraction(self) -> dict[str, float]:
        """Per thread: the fraction of the recording it spent in tasks or
        kernels (nested slices counted once).

        Examples
        --------
        >>> import forkwait as fw
        >>> with fw.profile() as prof:
        ...     _ = fw.wait(fw.fork(sum, range(1000)))
        >>> all(0.0 <= f <= 1.0 for f in prof.busy_fraction().values())
        True
        """
        spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for rec in self._slices():
            spans[rec.thread].append((rec.start, rec.end))
        out = {}
        total = self.duration or 1e-12
        for ident, intervals in spans.items():
            intervals.sort()
            busy = 0.0
            cur_s, cur_e = intervals[0]
            for s, e in intervals[1:]:
                if s > cur_e:  # a gap: close the merged interval
                    busy += cur_e - cur_s
                    cur_s, cur_e = s, e
                else:
                    cur_e = max(cur_e, e)
            busy += cur_e - cur_s
            out[self.thread_names.get(ident, str(ident))] = min(busy / total, 1.0)
        return out

    def _slices(self) -> list[TaskRecord | KernelRecord]:
        return [*self.tasks, *self.kernels]

    def summary(self) -> str:
        """A table: per task function and per op the count, total and mean
        time; per thread the busy fraction; the time spent waiting.

        Examples
        --------
        >>> import forkwait as fw
        >>> with fw.profile() as prof:
        ...     _ = fw.wait_all([fw.fork(sum, range(100)) for _ in range(3)])
        >>> print(prof.summary())  # doctest: +ELLIPSIS
        forkwait profile: ...
        ...task   sum ...3...
        ...
        """
        rows: dict[tuple[str, str], list[float]] = defaultdict(list)
        for t in self.tasks:
            rows[("task", t.name)].append(t.end - t.start)
        for k in self.kernels:
            rows[("kernel", k.op)].append(k.end - k.start)
        waited = sum(t.wait_time for t in self.tasks)
        lines = [
            f"forkwait profile: {self.duration * 1e3:.3f} ms, {len(self.tasks)} tasks, "
            f"{len(self.kernels)} kernel calls, {len(self.thread_names)} threads",
            f"{'kind':<7} {'name':<32} {'count':>7} {'total ms':>10} {'mean us':>10}",
        ]
        for (kind, name), times in sorted(rows.items(), key=lambda kv: -sum(kv[1])):
            lines.append(
                f"{kind:<7} {name[:32]:<32} {len(times):>7} {sum(times) * 1e3:>10.3f} "
                f"{sum(times) / len(times) * 1e6:>10.1f}"
            )
        lines.append("thread busy fraction:")
        for name, frac in sorted(self.busy_fraction().items()):
            lines.append(f"  {name:<30} {frac * 100:5.1f}%")
        lines.append(
            f"time tasks spent blocked waiting on other futures: {waited * 1e3:.3f} ms; "
            f"waits seen: {len(self.waits)}"
        )
        return "\n".join(lines)

    # -- plot -----------------------------------------------------------------
    def plot_timeline(self, path: str | os.PathLike) -> None:
        """Write a PNG timeline: a row per thread, tasks and kernels as bars.

        Needs matplotlib (``pip install forkwait[plot]``).

        Examples
        --------
        >>> import forkwait as fw, os, tempfile
        >>> with fw.profile() as prof:
        ...     _ = fw.wait(fw.fork(sum, range(10)))
        >>> path = os.path.join(tempfile.mkdtemp(), "timeline.png")
        >>> prof.plot_timeline(path)  # doctest: +SKIP
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError(
                "plot_timeline() needs matplotlib: pip install 'forkwait[plot]'"
            ) from exc
        threads = sorted(self.thread_names, key=self._thread_order)
        row = {ident: i for i, ident in enumerate(threads)}
        fig, ax = plt.subplots(figsize=(12, 1.0 + 0.5 * len(threads)))
        ms = 1e3
        for t in self.tasks:
            ax.broken_barh([((t.start - self.start) * ms, (t.end - t.start) * ms)],
                           (row[t.thread] - 0.4, 0.8), facecolors="tab:blue", alpha=0.5)
        for k in self.kernels:
            ax.broken_barh([((k.start - self.start) * ms, (k.end - k.start) * ms)],
                           (row[k.thread] - 0.25, 0.5), facecolors="tab:orange")
        for w in self.waits:
            ax.broken_barh([((w.start - self.start) * ms, (w.end - w.start) * ms)],
                           (row[w.thread] - 0.1, 0.2), facecolors="tab:gray")
        ax.set_yticks(range(len(threads)))
        ax.set_yticklabels([self.thread_names[i] for i in threads])
        ax.invert_yaxis()
        ax.set_xlabel("time (ms)")
        ax.set_title("forkwait timeline: tasks (blue), kernels (orange), waits (gray)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


class profile:  # noqa: N801 - used as a context manager, like torch.profiler.profile
    """Record every forked task and kernel call within a ``with`` block.

    For each task: its function, the task that forked it, fork time, start,
    end, thread and the time it spent waiting on other futures. For each
    kernel of ``forkwait.ops``: op, shape, dtype, team size, start, end,
    thread. One profile records at a time, for all threads of the process.

    Examples
    --------
    >>> import forkwait as fw
    >>> with fw.profile() as prof:
    ...     futs = [fw.fork(pow, 2, k) for k in range(4)]
    ...     total = sum(fw.wait_all(futs))
    >>> total, len(prof.tasks)
    (15, 4)
    """

    def __init__(self) -> None:
        self._profile = Profile()

    def __enter__(self) -> Profile:
        self._profile._begin()
        return self._profile

    def __exit__(self, *exc: object) -> None:
        self._profile._finish()

