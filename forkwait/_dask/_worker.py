"""On a worker: running a cluster fork, and the settings plugin."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from typing import Any, NamedTuple

from forkwait._dask._shared import _configure_lock, _configured, _Dep, _Given, _logger
from forkwait._native.pool import Future


class WorkerRun(NamedTuple):
    """One run of a cluster fork on a worker, sent to the recording client
    (``forkwait._dask._record``)."""

    key: str  # the Dask key
    start: float  # the worker's wall clock (time.time())
    end: float
    cpu: float  # CPU seconds of the worker process during the run
    worker: str  # the worker's address ("" if unknown)
    pid: int
    thread: int


class _WorkerLog:
    """Runs of cluster tasks in this worker process, while the client records."""

    entries: deque[WorkerRun] = deque(maxlen=100_000)


def _run_on_worker(fn: Any, args: tuple, kwargs: dict | None, deps: list, marked: bool,
                   prof: bool) -> Any:
    """A cluster fork, as a worker runs it: rebuild the futures, call `fn`."""
    if marked:
        built: dict[int, Future] = {}
        args = _unswap(args, deps, built)
        if kwargs is not None:
            kwargs = _unswap(kwargs, deps, built)
    if not prof:
        return fn(*args, **kwargs) if kwargs else fn(*args)
    t0, c0 = time.time(), time.process_time()
    try:
        return fn(*args, **kwargs) if kwargs else fn(*args)
    finally:
        t1, c1 = time.time(), time.process_time()
        _WorkerLog.entries.append(_worker_entry(t0, t1, c1 - c0))


def _worker_entry(t0: float, t1: float, cpu: float) -> WorkerRun:
    from distributed.worker import get_worker, thread_state

    try:
        address = get_worker().address
    except ValueError:
        address = ""
    return WorkerRun(key=getattr(thread_state, "key", ""), start=t0, end=t1, cpu=cpu,
                     worker=address, pid=os.getpid(), thread=threading.get_ident())


def _unswap(obj: Any, deps: list, built: dict[int, Future]) -> Any:
    t = type(obj)
    if t is _Dep:
        fut = built.get(obj.i)
        if fut is None:
            fut = built[obj.i] = Future()
            fut.set_result(deps[obj.i])
        return fut
    if t is _Given:
        fut = Future()
        if obj.cancelled:
            fut.cancel()
        elif obj.ok:
            fut.set_result(obj.value)
        else:
            fut.set_exception(obj.value)
        return fut
    if t is tuple or t is list:
        return t(_unswap(x, deps, built) for x in obj)
    if t is dict:
        return {k: _unswap(v, deps, built) for k, v in obj.items()}
    return obj


def _drain_worker_log() -> list[WorkerRun]:
    out = list(_WorkerLog.entries)
    _WorkerLog.entries.clear()
    return out


# ----------------------------------------------------------- worker settings

# What _SettingsPlugin set in this worker process (empty: not a worker, or
# a worker in the client's own process, whose settings are the client's).
worker_settings: dict[str, Any] = {}


def _share(cpus: int, nthreads: int, host_threads: int) -> tuple[int, int]:
    """(CPUs of the worker, CPUs per task) for a worker of `nthreads` threads.

    The CPUs it may use are shared by every worker thread on its host.
    """
    host_threads = max(host_threads, nthreads, 1)
    worker = max(1, cpus * nthreads // host_threads)
    return worker, max(1, worker // max(nthreads, 1))


def _host_threads(workers: dict, host: str) -> int:
    return sum(int(w.get("nthreads", 0)) for w in workers.values() if w.get("host") == host)


class _SettingsPlugin:
    """Sets forkwait's settings in each worker process to the worker's share.

    A worker of ``nthreads`` threads on a host whose workers have ``T``
    threads together, with ``C`` CPUs it may use, gets ``C * nthreads // T``
    CPUs (at least 1): that is its inter-op pool size and the CPU budget its
    kernels share, and a kernel's team is that divided by ``nthreads``. So
    two 1-thread workers on 2 cores use one core each. ``FORKWAIT_NUM_THREADS``
    and ``FORKWAIT_NUM_INTEROP_THREADS`` set on the worker win. A worker in
    the client's own process (``LocalCluster(processes=False)``) is left alone.
    """

    name = "forkwait-settings"

    def __init__(self, client_pid: int, client_host: str, workers: dict) -> None:
        self.client_pid = client_pid
        self.client_host = client_host
        self.workers = workers  # scheduler's view at registration, a fallback

    async def setup(self, worker: Any) -> None:
        if os.getpid() == self.client_pid and socket.gethostname() == self.client_host:
            return
        workers = self.workers
        try:
            # every worker (the default; distributed < 2023.4 takes no argument)
            ident = await worker.scheduler.identity()
            workers = ident.get("workers", workers) or workers
        except Exception:
            _logger.debug("forkwait: scheduler identity unavailable", exc_info=True)
        from distributed.comm import get_address_host

        nthreads = worker.state.nthreads if hasattr(worker, "state") else worker.nthreads
        self.apply(nthreads, _host_threads(workers, get_address_host(worker.address)))

    @staticmethod
    def apply(nthreads: int, host_threads: int) -> None:
        from forkwait import _threads
        from forkwait._native import _team

        cpus = _threads.available_cpus()
        worker_cpus, per_task = _share(cpus, nthreads, host_threads)
        _team._set_cpu_budget(worker_cpus)
        if not os.environ.get("FORKWAIT_NUM_INTEROP_THREADS", "").strip():
            _threads.set_num_interop_threads(worker_cpus)
        if not os.environ.get("FORKWAIT_NUM_THREADS", "").strip():
            _threads.set_num_threads(per_task)
        worker_settings.update(cpus=cpus, nthreads=nthreads, host_threads=host_threads,
                               worker_cpus=worker_cpus, per_task=per_task)


def _configure_workers(client: Any) -> None:
    """Register the settings plugin once per client (one round trip)."""
    if client in _configured:
        return
    with _configure_lock:
        if client in _configured:
            return
        plugin_cls = globals().get("ForkwaitSettings") or __getattr__("ForkwaitSettings")
        try:
            info = client.scheduler_info(n_workers=-1)
        except TypeError:  # older distributed
            info = client.scheduler_info()
        plugin = plugin_cls(os.getpid(), socket.gethostname(), info.get("workers", {}))
        register = getattr(client, "register_plugin", None)
        if register is not None:
            register(plugin, name=_SettingsPlugin.name)
        else:  # pragma: no cover - distributed < 2023.9
            client.register_worker_plugin(plugin, name=_SettingsPlugin.name)
        _configured.add(client)


def __getattr__(name: str) -> Any:
    # The plugin's class derives from distributed's WorkerPlugin, made when
    # first asked for (by a client, or by a worker that unpickles it).
    if name == "ForkwaitSettings":
        from distributed.diagnostics.plugin import WorkerPlugin

        cls = type(name, (_SettingsPlugin, WorkerPlugin), {"__module__": __name__})
        globals()[name] = cls
        return cls
    raise AttributeError(name)
