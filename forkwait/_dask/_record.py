"""Recording cluster forks for the profile, and their trace tracks."""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from forkwait._dask._shared import _logger, _state_lock
from forkwait._dask._worker import WorkerRun, _drain_worker_log
from forkwait._native import pool


class ClusterRecord(NamedTuple):
    """One cluster fork, as recorded while :func:`recording` is on.

    Times are on forkwait's clock (:func:`forkwait._profile.now`); a worker's
    times are its wall clock moved onto it, so across machines they are as
    good as the machines' clock agreement. A task that never ran (cancelled,
    or its worker died and the cluster gave up) has NaN `start` and `end`.
    """

    key: str  # the Dask key
    name: str  # the function's name
    submit: float  # when fork() submitted it, on the client
    fork_thread: int  # the client thread that forked it
    start: float  # when the worker started the function
    end: float  # when it returned
    done: float  # when its forkwait future got the outcome, on the client
    worker: str  # the worker's address ("" if unknown)
    pid: int  # the worker's process id (0 if unknown)
    thread: int  # the worker thread that ran it (0 if unknown)
    cpu: float  # CPU seconds of the worker process during the run (all its threads)
    outcome: str  # "finished", "failed", "cancelled" or "pending"


# the run of a task that never ran (NaN times; worker, pid, thread unknown)
_NOT_RUN = WorkerRun(key="", start=math.nan, end=math.nan, cpu=0.0, worker="", pid=0, thread=0)


@dataclass(slots=True)
class _Sent:
    """The client's side of a cluster fork while it is recorded (the fields
    of its ClusterRecord that the client knows)."""

    name: str
    submit: float
    fork_thread: int
    done: float = math.nan
    outcome: str = "pending"


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, _Sent] = {}  # by Dask key
        self.clients: weakref.WeakSet[Any] = weakref.WeakSet()
        self.records: list[ClusterRecord] | None = None

    def submitted(self, key: str, name: str, client: Any) -> None:
        with self.lock:
            self.sent[key] = _Sent(name=name, submit=pool._now(),
                                   fork_thread=threading.get_ident())
            if client not in self.clients:
                self.clients.add(client)

    def forget(self, key: str) -> None:
        with self.lock:
            self.sent.pop(key, None)

    def finished(self, key: str, outcome: str) -> None:
        with self.lock:
            entry = self.sent.get(key)
            if entry is not None:
                entry.done = pool._now()
                entry.outcome = outcome

    def collect(self) -> list[ClusterRecord]:
        runs: dict[str, WorkerRun] = {}
        for client in list(self.clients):
            try:
                if client.status != "running":
                    continue
                per_worker = client.run(_drain_worker_log, on_error="return")
            except Exception:
                _logger.debug("forkwait: could not collect worker records", exc_info=True)
                continue
            for entries in per_worker.values():
                if isinstance(entries, BaseException):
                    continue
                for run in entries:
                    runs[run.key] = run  # the last run of a key that ran twice
        offset = time.time() - pool._now()  # wall clock -> forkwait's clock
        out = []
        with self.lock:
            for key, sent in self.sent.items():
                run = runs.get(key, _NOT_RUN)
                out.append(ClusterRecord(
                    key=key, name=sent.name, submit=sent.submit, fork_thread=sent.fork_thread,
                    start=run.start - offset, end=run.end - offset, done=sent.done,
                    worker=run.worker, pid=run.pid, thread=run.thread, cpu=run.cpu,
                    outcome=sent.outcome,
                ))
        out.sort(key=lambda r: r.submit)
        return out


_recorder: _Recorder | None = None


def start_recording() -> None:
    """Record cluster forks from now on (what ``fw.profile()`` calls at its start)."""
    global _recorder
    with _state_lock:
        if _recorder is not None:
            raise RuntimeError("cluster forks are already being recorded in this process")
        _recorder = _Recorder()


def stop_recording() -> list[ClusterRecord]:
    """Stop recording; return the records (collects the workers' part: one round trip)."""
    global _recorder
    with _state_lock:
        rec, _recorder = _recorder, None
    if rec is None:
        return []
    return rec.collect()


class Recording:
    """What :func:`recording` recorded; `records` is filled when its block ends."""

    def __init__(self) -> None:
        self.records: list[ClusterRecord] = []
        self.start = 0.0
        self.end = 0.0


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Record the cluster forks of a block: ``with recording() as rec: ...; rec.records``."""
    out = Recording()
    start_recording()
    out.start = pool._now()
    try:
        yield out
    finally:
        out.end = pool._now()
        out.records = stop_recording()


def chrome_trace_events(records: list[ClusterRecord], origin: float,
                        client_pid: int | None = None,
                        tid_of: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """Chrome trace events for cluster forks: a process track per worker.

    Each worker becomes a "process" named by its address, with a thread
    track per worker thread; each run is a slice (args: the Dask key, the
    queueing delay, the CPU time over wall time). When the client's own
    tracks are given (`client_pid` and `tid_of`: thread ident -> tid, as in
    ``Profile.chrome_trace``), an arrow goes from each fork to its run.
    `origin` is the recording's start (the trace's time zero).
    """

    def us(t: float) -> float:
        return round((t - origin) * 1e6, 3)

    events: list[dict[str, Any]] = []
    workers = sorted({r.worker for r in records if r.worker})
    wpid = {w: 1_000_000 + i for i, w in enumerate(workers)}
    tids: dict[tuple[str, int], int] = {}
    for i, w in enumerate(workers):
        events.append({"name": "process_name", "ph": "M", "pid": wpid[w],
                       "args": {"name": f"dask worker {w}"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": wpid[w],
                       "args": {"sort_index": 100 + i}})
    flow = itertools.count(10_000_000)
    for r in records:
        if not r.worker or math.isnan(r.start):
            continue
        tkey = (r.worker, r.thread)
        if tkey not in tids:
            tids[tkey] = sum(1 for k in tids if k[0] == r.worker) + 1
            events.append({"name": "thread_name", "ph": "M", "pid": wpid[r.worker],
                           "tid": tids[tkey], "args": {"name": f"dask thread {tids[tkey]}"}})
        wall = max(r.end - r.start, 1e-9)
        events.append({
            "name": r.name, "cat": "cluster", "ph": "X", "pid": wpid[r.worker],
            "tid": tids[tkey], "ts": us(r.start), "dur": us(r.end) - us(r.start),
            "args": {"key": r.key, "queued (us)": round((r.start - r.submit) * 1e6, 1),
                     "result to client (us)": round((r.done - r.end) * 1e6, 1),
                     "cpu/wall": round(r.cpu / wall, 3), "outcome": r.outcome},
        })
        if client_pid is not None and tid_of and r.fork_thread in tid_of:
            fid = next(flow)
            events.append({"name": "cluster fork", "cat": "cluster", "ph": "s", "id": fid,
                           "pid": client_pid, "tid": tid_of[r.fork_thread], "ts": us(r.submit)})
            events.append({"name": "cluster fork", "cat": "cluster", "ph": "f", "bp": "e",
                           "id": fid, "pid": wpid[r.worker], "tid": tids[tkey],
                           "ts": us(r.start)})
    return events
