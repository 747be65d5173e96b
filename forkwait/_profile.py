"""forkwait.profile(): record forked tasks and kernel calls, export a
Chrome/Perfetto trace, summarise, plot a timeline."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from typing import Any, NamedTuple

from forkwait._dask import chrome_trace_events, start_recording, stop_recording
from forkwait._native import pool
from forkwait.ops import _profiling as _kernels

# The recorder of the active profile (None: not recording): one hook object,
# installed in the pool (pool._set_profiler) and in the kernel tables
# (ops._profiling._set_profiler) while a profile records; cluster forks are
# recorded by forkwait._dask (start_recording / stop_recording).
_active: _Recorder | None = None
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
    """One kernel call of ``forkwait.ops``: what its kernel table's recording
    wrapper passes to ``on_kernel`` (``forkwait/ops/_profiling.py``)."""

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


class _Recorder:
    """The hook that the pool (``pool._set_profiler(hook)``) and the kernel
    tables (``ops._profiling._set_profiler(hook)``) call: each call passes
    one record's fields by name, in the thread the record is about, so that
    the thread's name is taken while the thread is alive (a worker that exits
    when the pool shrinks keeps its name in the profile)."""

    def __init__(self) -> None:
        self.tasks: list[TaskRecord] = []
        self.kernels: list[KernelRecord] = []
        self.waits: list[WaitRecord] = []
        self.names: dict[int, str] = {}

    def _seen(self, ident: int) -> None:
        if ident not in self.names:
            self.names[ident] = threading.current_thread().name

    def on_task(self, **fields: Any) -> None:
        """A task finished (called by the pool in the thread that ran it)."""
        self.tasks.append(TaskRecord(**fields))
        self._seen(fields["thread"])

    def on_wait(self, **fields: Any) -> None:
        """A wait ended that had not found its future done (called by the pool)."""
        self.waits.append(WaitRecord(**fields))
        self._seen(fields["thread"])

    def on_kernel(self, **fields: Any) -> None:
        """A kernel call ended (called by its kernel table's recording wrapper)."""
        self.kernels.append(KernelRecord(**fields))
        self._seen(fields["thread"])


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
        self._rec = _Recorder()
        self._recording = False
        self._cluster: list = []

    # -- recording -------------------------------------------------------
    def _begin(self) -> None:
        global _active
        with _lock:
            if _active is not None:
                raise RuntimeError("forkwait.profile() is already recording in this process")
            start_recording()  # cluster forks (fw.backend()), if any are made
            self._names_now()
            self.start = now()
            self._recording = True
            _active = self._rec
            pool._set_profiler(self._rec)
            _kernels._set_profiler(self._rec)

    def _finish(self) -> None:
        global _active
        with _lock:
            _kernels._set_profiler(None)
            pool._set_profiler(None)
            _active = None
            self.end = now()
            self._recording = False
            self._names_now()
            # one round trip per client that forked to a cluster; none without
            self._cluster = stop_recording()
            # names taken by the threads themselves while they ran win: a
            # thread that has exited since, or whose ident was reused, keeps
            # the name it had when it ran
            self._thread_names.update(self._rec.names)

    def _records(self) -> _Recorder:
        if self._recording:
            raise RuntimeError("the profile is still recording: read it after its block")
        return self._rec

    @property
    def tasks(self) -> list[TaskRecord]:
        """Every forked task that ran while recording (:class:`TaskRecord`)."""
        return self._records().tasks

    @property
    def kernels(self) -> list[KernelRecord]:
        """Every kernel call of ``forkwait.ops`` (:class:`KernelRecord`)."""
        return self._records().kernels

    @property
    def waits(self) -> list[WaitRecord]:
        """Every wait that did not find its future done (:class:`WaitRecord`)."""
        return self._records().waits

    @property
    def cluster_tasks(self) -> list:
        """Forks sent to a Dask cluster by ``fw.backend()`` while recording
        (``forkwait._dask.ClusterRecord``: submit, start, end, worker, ...);
        empty when no backend was used."""
        self._records()
        return list(self._cluster)

    @property
    def thread_names(self) -> dict[int, str]:
        """Thread ident -> name, for every thread seen (named while it ran)."""
        self._records()
        return self._thread_names

    def _names_now(self) -> None:
        for t in threading.enumerate():
            if t.ident is not None:
                self._thread_names[t.ident] = t.name

    @property
    def duration(self) -> float:
        """Seconds between the start and the end of the recording."""
        return max(self.end - self.start, 0.0)

    def _work_start(self) -> float:
        """When the first task, kernel call or wait began (the recording's
        start when there is none). The busy fractions and the timeline start
        here: a script's set-up before its first fork is not idle time of
        the pool."""
        rec = self._records()
        starts = [r.start for r in rec.tasks] + [r.start for r in rec.kernels]
        starts += [r.start for r in rec.waits]
        return max(min(starts, default=self.start), self.start)

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
        if self._cluster:
            # a process track per Dask worker, arrows from the forks
            events.extend(chrome_trace_events(self._cluster, self.start, client_pid=pid,
                                              tid_of=tid))
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
        """Per thread: the fraction of the time from the first task or kernel
        call (or wait) to the end of the recording that it spent in tasks or
        kernels (nested slices counted once). What ran before the first fork
        (a script's set-up) does not count.

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
        total = max(self.end - self._work_start(), 1e-12)
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

    def self_times(self) -> dict[tuple[str, str], float]:
        """Per (kind, name): seconds spent in its own code, that is its slices'
        time less that of the tasks and kernels nested in them on the same
        thread (a task that waits runs its children inside its own time).

        Examples
        --------
        >>> import forkwait as fw
        >>> with fw.profile() as prof:
        ...     _ = fw.wait(fw.fork(sum, range(1000)))
        >>> list(prof.self_times())
        [('task', 'sum')]
        """
        by_thread: dict[int, list[TaskRecord | KernelRecord]] = defaultdict(list)
        for rec in self._slices():
            by_thread[rec.thread].append(rec)
        out: dict[tuple[str, str], float] = defaultdict(float)
        for recs in by_thread.values():
            recs.sort(key=lambda r: (r.start, -r.end))
            stack: list[tuple[float, tuple[str, str]]] = []  # (end, key) of open slices
            for r in recs:
                key = _key(r)
                while stack and stack[-1][0] <= r.start:
                    stack.pop()
                dur = r.end - r.start
                out[key] += dur
                if stack:  # nested: not its parent's own time
                    out[stack[-1][1]] -= dur
                stack.append((r.end, key))
        return {k: max(v, 0.0) for k, v in out.items()}

    def summary(self) -> str:
        """A table: per task function and per op the count, total, own and
        mean time (all in ms); per thread the busy fraction; the time spent
        waiting.

        A task's total includes the tasks and kernels nested in it (a task
        that waits on its children runs them inside its own time), so task
        totals can add up to more than the profile's length; the ``self``
        column is the time in the function's own code.

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
        for rec in self._slices():
            rows[_key(rec)].append(rec.end - rec.start)
        own = self.self_times()
        waited = sum(t.wait_time for t in self.tasks)
        lines = [
            f"forkwait profile: {self.duration * 1e3:.3f} ms, {len(self.tasks)} tasks, "
            f"{len(self.kernels)} kernel calls, {len(self.thread_names)} threads",
            "(times in ms; a task's total includes the tasks and kernels nested in it, "
            "so totals can exceed the profile's length; self excludes them)",
            f"{'kind':<7} {'name':<32} {'count':>7} {'total':>10} {'self':>10} {'mean':>10}",
        ]
        for key, times in sorted(rows.items(), key=lambda kv: -sum(kv[1])):
            kind, name = key
            lines.append(
                f"{kind:<7} {name[:32]:<32} {len(times):>7} {sum(times) * 1e3:>10.3f} "
                f"{own.get(key, 0.0) * 1e3:>10.3f} {sum(times) / len(times) * 1e3:>10.3f}"
            )
        lines.append("thread busy fraction (in tasks or kernels, from the first one on):")
        for name, frac in sorted(self.busy_fraction().items()):
            lines.append(f"  {name:<30} {frac * 100:5.1f}%")
        lines.append(
            f"time tasks spent blocked waiting on other futures: {waited * 1e3:.3f} ms; "
            f"waits seen: {len(self.waits)}"
        )
        return "\n".join(lines)

    # -- plot -----------------------------------------------------------------
    def plot_timeline(self, path: str | os.PathLike, max_labels: int = 9) -> None:
        """Write a PNG timeline: a row per thread, time in ms on the x axis.

        In each row: tasks on top, coloured by function (the legend names
        them, and wide enough bars carry the name), nested tasks drawn over
        their parent; kernels in the middle band; waits in a thin band at the
        bottom, so that they never cover a task. The `max_labels` functions
        with the most time get their own colour, the rest share one. The
        legend lists only what is drawn. Time starts at the first task,
        kernel call or wait (what ran before, such as a script's set-up, is
        left out).

        Needs matplotlib (``pip install matplotlib``); it does not change
        matplotlib's backend.

        Examples
        --------
        >>> import forkwait as fw, os, tempfile
        >>> with fw.profile() as prof:
        ...     _ = fw.wait(fw.fork(sum, range(10)))
        >>> path = os.path.join(tempfile.mkdtemp(), "timeline.png")
        >>> prof.plot_timeline(path)  # doctest: +SKIP
        """
        from forkwait._measure.plots import figure, palette, require, text_colour

        require()
        threads = sorted(self.thread_names, key=self._thread_order)
        row = {ident: i for i, ident in enumerate(threads)}
        totals: dict[str, float] = defaultdict(float)
        for t in self.tasks:
            totals[t.name] += t.end - t.start
        named = sorted(totals, key=lambda n: -totals[n])[:max_labels]
        colours = dict(zip(named, palette(len(named)), strict=True))
        other = "#b0b0b0"
        fig = figure(width=12, height=1.4 + 0.6 * len(threads))
        ax = fig.add_subplot()
        ms = 1e3
        origin = self._work_start()
        span = max((self.end - origin) * ms, 1e-6)
        # nesting depth per task, so that a nested task is drawn over its parent
        for t in sorted(self.tasks, key=lambda r: (r.start, -r.end)):
            x, w = (t.start - origin) * ms, (t.end - t.start) * ms
            colour = colours.get(t.name, other)
            y = row[t.thread]
            ax.broken_barh([(x, w)], (y - 0.45, 0.5), facecolors=colour,
                           edgecolors="black", linewidth=0.3)
            if w >= span * 0.06:
                ax.text(x + w / 2, y - 0.2, t.name.rsplit(".", 1)[-1][:24], ha="center",
                        va="center", fontsize=7, color=text_colour(colour), clip_on=True)
        for k in self.kernels:
            ax.broken_barh([((k.start - origin) * ms, (k.end - k.start) * ms)],
                           (row[k.thread] + 0.07, 0.2), facecolors="#4d4d4d")
        for wt in self.waits:
            ax.broken_barh([((wt.start - origin) * ms, (wt.end - wt.start) * ms)],
                           (row[wt.thread] + 0.3, 0.12), facecolors="none",
                           edgecolors="#555555", hatch="////", linewidth=0.5)
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=colours[n], edgecolor="black", label=n[:40]) for n in named]
        if len(totals) > len(named):
            handles.append(Patch(facecolor=other, label="other tasks"))
        if self.kernels:
            handles.append(Patch(facecolor="#4d4d4d", label="forkwait.ops kernel"))
        if self.waits:
            handles.append(Patch(facecolor="none", edgecolor="#555555", hatch="////",
                                 label="inside wait() (it may run tasks meanwhile)"))
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=8, title="tasks by function", title_fontsize=8, frameon=False)
        ax.set_yticks(range(len(threads)), [self.thread_names[i] for i in threads])
        ax.set_ylim(len(threads) - 0.5, -0.6)
        ax.set_xlim(0, span)
        ax.set_xlabel("time since the first task, kernel or wait (ms)")
        ax.set_title("forkwait timeline: a row per thread")
        ax.grid(axis="x", alpha=0.3)
        fig.savefig(path, dpi=100)


def _key(rec: TaskRecord | KernelRecord) -> tuple[str, str]:
    return ("task", rec.name) if isinstance(rec, TaskRecord) else ("kernel", rec.op)


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

