"""forkwait on a Dask distributed cluster: ``with fw.backend(client):``.

Inside the block, the forks that the thread which entered it makes outside
any forkwait task go to the cluster (``client.submit(..., pure=False)``);
forks made inside a task, on the cluster or here, run on the local pool of
the machine that runs the task. What a cluster fork returns is a plain
:class:`forkwait.Future` made with ``Future()`` and completed from the
client's event loop, so every forkwait call that takes a future takes it.

What runs where:

- the client (this process): ``fork`` submits; one coroutine per task on the
  client's event loop awaits the Dask future (concurrent gathers are batched
  by Dask); completion threads of forkwait's own finish the forkwait futures,
  so callbacks (``then``, ``add_done_callback``) never run in, and never
  block, the event loop;
- a worker: :func:`_run_on_worker` turns the Dask dependencies back into
  finished forkwait futures, then calls the function. The worker's forkwait
  settings (pool size, team size, CPU budget) are its share of the machine,
  set once per worker process by :class:`_SettingsPlugin`.

``distributed`` is imported only when a backend is made.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import queue
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

from forkwait._native import pool
from forkwait._native.pool import Future

_logger = logging.getLogger("forkwait")

# ------------------------------------------------------------- backend blocks

_tls = threading.local()  # .stack: the _Active entries of this thread, innermost last
_state_lock = threading.Lock()
_n_active = 0  # backend blocks entered and not left, all threads together
_outer_hook: Any = None  # the fork hook that was there before the first block
# A cluster fork's forkwait future -> its Dask future. The Dask future (and
# so the value on the cluster) lives as long as the forkwait future does,
# so that a later fork can take it as a dependency without moving the data.
_dask_of: weakref.WeakKeyDictionary[Future, Any] = weakref.WeakKeyDictionary()
# Clients whose workers have forkwait's settings plugin.
_configured: weakref.WeakSet[Any] = weakref.WeakSet()
_configure_lock = threading.Lock()


class _Active(NamedTuple):
    backend: ClusterBackend
    client: Any
    exits: contextlib.ExitStack


class ClusterBackend:
    """A ``with`` block that sends this thread's top-level forks to a Dask cluster.

    Made by :func:`backend`; see there. It may be entered again, nested, and
    from several threads; each thread sees only the blocks it entered.

    Examples
    --------
    >>> import forkwait as fw
    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
    ...                        dashboard_address=None)
    >>> client = Client(cluster)
    >>> b = fw.backend(client)
    >>> with b:
    ...     fw.fork(sum, [1, 2, 3]).wait()
    6
    >>> b.client is client
    True
    >>> client.close(); cluster.close()
    """

    def __init__(self, client: Any) -> None:
        self._client = client  # None: the default client, looked up at entry

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` that this thread's innermost block uses.

        Outside the block: the client it was made with (None for ``"dask"``).

        Examples
        --------
        >>> import forkwait as fw
        >>> fw.backend("dask").client is None
        True
        """
        for entry in reversed(getattr(_tls, "stack", ())):
            if entry.backend is self:
                return entry.client
        return self._client

    def __enter__(self) -> ClusterBackend:
        import distributed

        exits = contextlib.ExitStack()
        client = self._client
        try:
            if _in_dask_task():
                # A task that waits on cluster futures must not hold a
                # worker thread meanwhile: secede now, rejoin at the end.
                inner = exits.enter_context(distributed.worker_client())
                if client is None:
                    client = inner
            elif client is None:
                client = _default_client()
            _check_client(client)
            _configure_workers(client)
        except BaseException:
            exits.close()
            raise
        stack = _tls.__dict__.setdefault("stack", [])
        stack.append(_Active(self, client, exits))
        _activate(+1)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _tls.__dict__.get("stack", [])
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].backend is self:
                entry = stack.pop(i)
                break
        else:  # pragma: no cover - __exit__ without __enter__
            return
        _activate(-1)
        entry.exits.close()

    def __repr__(self) -> str:
        client = self.client
        where = "the default client" if client is None else repr(client)
        return f"<forkwait.backend on {where}>"


def backend(client: Any = "dask") -> ClusterBackend:
    """Run the forks of a ``with`` block on a Dask distributed cluster.

    Inside ``with fw.backend(client):`` the forks made by the thread that
    entered the block, outside any forkwait task, are submitted to the
    cluster (``pure=False``: two identical forks run twice). Forks made inside
    a task, on the cluster or locally, run on the local pool of the machine
    that runs the task; other threads and code outside the block are not
    affected. A cluster fork returns a :class:`forkwait.Future`: ``wait``,
    ``result(timeout)``, ``then``, ``collect_all``, ``await`` ... work as for
    a local one, and a task's exception arrives with its type and the
    remote traceback. A forkwait future passed as an argument of a cluster
    fork (also inside a list, tuple or dict) becomes a Dask dependency: the
    data moves from worker to worker, and the function receives a finished
    forkwait future, as it would locally.

    Parameters
    ----------
    client : distributed.Client or "dask"
        The client to submit through; ``"dask"`` (the default) means the
        current default client (``distributed.get_client()``), looked up
        when the block is entered. Inside a task running on the cluster,
        entering the block secedes from the worker's thread pool until the
        block ends (as ``distributed.worker_client`` does), so nested waits
        never starve the cluster.

    Returns
    -------
    ClusterBackend
        A context manager; it may be entered again, nested, or from other
        threads.

    Raises
    ------
    ImportError
        If ``distributed`` is not installed (``pip install "forkwait[dask]"``).
    TypeError, ValueError
        If `client` is neither a ``distributed.Client`` nor ``"dask"``; when
        the block is entered with ``"dask"`` and no client is running.

    Notes
    -----
    Each cluster task costs Dask's own round trip (milliseconds, see
    ``docs/distributed.md``): send coarse work there, and let the work inside
    each task fork locally.

    Examples
    --------
    >>> import forkwait as fw
    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
    ...                        dashboard_address=None)
    >>> client = Client(cluster)
    >>> with fw.backend(client):
    ...     a = fw.fork(pow, 2, 10)                      # runs on a worker
    ...     b = fw.fork(lambda f: fw.wait(f) // 4, a)    # gets `a` as a finished future
    ...     fw.wait_all([a, b])
    [1024, 256]
    >>> client.close(); cluster.close()
    """
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            'fw.backend() needs Dask distributed: pip install "forkwait[dask]"'
        ) from exc
    if isinstance(client, str):
        if client != "dask":
            raise ValueError(
                f'fw.backend() takes a distributed.Client or "dask", got the string {client!r}'
            )
        return ClusterBackend(None)
    if not isinstance(client, distributed.Client):
        raise TypeError(
            'fw.backend() takes a distributed.Client or "dask", got '
            f"{type(client).__name__}: {_short(client)}"
        )
    return ClusterBackend(client)


def _default_client() -> Any:
    import distributed

    try:
        return distributed.get_client()
    except ValueError as exc:
        raise ValueError(
            'fw.backend("dask") found no running Dask client: start one first '
            "(distributed.Client(address) or Client(LocalCluster())), or pass it: "
            "fw.backend(client)"
        ) from exc


def _check_client(client: Any) -> None:
    status = getattr(client, "status", "running")
    if status not in ("running", "connecting", "newly-created"):
        raise RuntimeError(f"fw.backend(): the Dask client is {status}, not running: {client!r}")


def _in_dask_task() -> bool:
    """True in a thread that runs a task of a Dask worker."""
    try:
        from distributed.worker import get_worker, thread_state
    except ImportError:  # pragma: no cover
        return False
    if getattr(thread_state, "key", None) is None:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def _activate(delta: int) -> None:
    """Count a block entered (+1) or left (-1); the hook is in place while any is."""
    global _n_active, _outer_hook
    with _state_lock:
        _n_active += delta
        if delta > 0 and _n_active == 1:
            _outer_hook = pool._set_fork_hook(_hook)
        elif delta < 0 and _n_active == 0:
            pool._set_fork_hook(_outer_hook)
            _outer_hook = None


def _hook(fn: Any, args: tuple, kwargs: dict) -> Future | None:
    """fork()'s hook outside any task: submit when this thread is in a block."""
    stack = getattr(_tls, "stack", None)
    if not stack:
        outer = _outer_hook
        return outer(fn, args, kwargs) if outer is not None else None
    return _submit(stack[-1].client, fn, args, kwargs)


# ------------------------------------------------------------------ submitting


class _Dep:
    """Stands for the i-th Dask dependency of a cluster task."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> tuple:
        return (_Dep, (self.i,))


class _Given:
    """A forkwait future that was done when it was sent: its outcome."""

    __slots__ = ("ok", "value", "cancelled")

    def __init__(self, ok: bool, value: Any, cancelled: bool = False) -> None:
        self.ok = ok
        self.value = value
        self.cancelled = cancelled

    def __reduce__(self) -> tuple:
        return (_Given, (self.ok, self.value, self.cancelled))

    @classmethod
    def of(cls, fut: Future) -> _Given:
        if fut.cancelled():
            return cls(False, None, True)
        exc = fut.exception()
        return cls(False, exc) if exc is not None else cls(True, fut.value())


def _swap(obj: Any, client: Any, deps: list, pending: list) -> Any:
    """`obj` with forkwait futures replaced by what a worker can rebuild them from.

    Looks into plain tuples, lists and dicts (not subclasses, not other
    objects). A cluster future of this client becomes a Dask dependency; a
    done future its outcome; a pending local one is collected in `pending`.
    """
    t = type(obj)
    if t is Future:
        dfut = _dask_of.get(obj)
        if dfut is not None and dfut.client is client:
            for i, d in enumerate(deps):
                if d is dfut:
                    return _Dep(i)
            deps.append(dfut)
            return _Dep(len(deps) - 1)
        if not obj.done():
            pending.append(obj)
            return obj
        return _Given.of(obj)
    if t is tuple or t is list:
        items = [_swap(x, client, deps, pending) for x in obj]
        if any(a is not b for a, b in zip(items, obj)):
            return t(items)
        return obj
    if t is dict:
        swapped = {k: _swap(v, client, deps, pending) for k, v in obj.items()}
        if any(swapped[k] is not v for k, v in obj.items()):
            return swapped
        return obj
    return obj


def _submit(client: Any, fn: Any, args: tuple, kwargs: dict) -> Future:
    out: Future = Future()
    _submit_into(client, out, fn, args, kwargs)
    return out


def _submit_into(client: Any, out: Future, fn: Any, args: tuple, kwargs: dict) -> None:
    deps: list = []
    pending: list = []
    sargs = _swap(args, client, deps, pending)
    skwargs = _swap(kwargs, client, deps, pending) if kwargs else None
    if pending:
        # Local futures that are not done yet: submit once they are.
        def later(_: Future) -> None:
            if out.done():  # cancelled meanwhile
                return
            try:
                _submit_into(client, out, fn, args, kwargs)
            except BaseException as exc:
                if not out.done():
                    out.set_exception(exc)

        pool.collect_all(pending).add_done_callback(later)
        return
    marked = sargs is not args or (skwargs is not None and skwargs is not kwargs) or bool(deps)
    name = _task_name(fn)
    key = f"{name}-{_key_base}{next(_key_count):08x}"
    rec = _recorder
    if rec is not None:  # before the submit: the outcome may come back at once
        rec.submitted(key, name, client)
    try:
        dfut = client.submit(
            _run_on_worker, fn, sargs, skwargs, deps, marked, rec is not None,
            key=key, pure=False,
        )
    except Exception as exc:
        if rec is not None:
            rec.forget(key)
        raise _explain_submit_error(exc, fn, args, kwargs) from exc
    _dask_of[out] = dfut
    out.add_done_callback(_propagate_cancel)
    _pump_of(client).add(client, (dfut, out, key, name))


# Dask keys: the function's name, then 32 hex digits unique to this process
# and fork (os.urandom, which uuid4 calls, costs about 0.1 ms here: once).
_key_base = uuid.uuid4().hex[:24]
_key_count = itertools.count()


def _new_key_base() -> None:
    global _key_base, _key_count
    _key_base = uuid.uuid4().hex[:24]
    _key_count = itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_key_base)


def _task_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__


def _short(obj: Any, limit: int = 80) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_futures(obj: Any) -> Any:
    """`obj` with the forkwait futures that _swap handles replaced by None."""
    t = type(obj)
    if t is Future:
        return None
    if t is tuple or t is list:
        return t(_without_futures(x) for x in obj)
    if t is dict:
        return {k: _without_futures(v) for k, v in obj.items()}
    return obj


def _explain_submit_error(exc: Exception, fn: Any, args: tuple, kwargs: dict) -> Exception:
    """When Dask could not serialize the task: say which object it was."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - distributed depends on it
        return exc
    parts: list[tuple[str, Any]] = [("the function", fn)]
    parts += [(f"argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
    for what, obj in parts:
        try:
            cloudpickle.dumps(_without_futures(obj))
        except Exception as inner:
            hint = ""
            if "forkwait" in str(inner) and "Future" in str(inner):
                hint = (" A forkwait future can be an argument itself, or inside a plain "
                        "list, tuple or dict, not inside other objects.")
            return TypeError(
                f"fork({_task_name(fn)}) on the Dask cluster: {what} cannot be pickled, "
                f"so it cannot be sent to a worker: {_short(obj)} ({type(inner).__name__}: "
                f"{inner}). Functions and arguments of cluster forks must be picklable "
                f"(module-level functions, plain data).{hint}"
            )
    return exc


# ------------------------------------------------------------------ completing


class _Pump:
    """On one client's event loop: hands cluster outcomes to the completer.

    Each task's coroutine waits for its Dask future's state; results are then
    fetched with one gather for all the tasks that finished meanwhile (what
    ``client.gather`` does for a list), not one request per task: a request
    costs the client and the scheduler about a millisecond of CPU here. While
    results stream in (the previous request carried more than one), a request
    waits up to GATHER_WINDOW_S for more to join it, unless nothing else is
    pending or MAX_BATCH are ready; an isolated result goes at once.
    """

    GATHER_WINDOW_S = 0.02
    MAX_BATCH = 1024

    def __init__(self) -> None:
        self.ready: list[tuple] = []
        self.draining = False
        self.watching = 0  # tasks whose Dask future is still pending
        self.last_batch = 0
        self.last_end = 0.0
        self.flush: Any = None  # an asyncio.Event, made on the loop
        self.lock = threading.Lock()
        self.incoming: list[tuple] = []  # submitted, not yet watched
        self.tasks: set = set()  # the watching coroutines (asyncio keeps weak references)

    def add(self, client: Any, item: tuple) -> None:
        """From any thread: watch a submitted task (one loop wake-up per burst)."""
        with self.lock:
            self.incoming.append(item)
            first = len(self.incoming) == 1
        if first:
            client.loop.add_callback(self.register)

    def register(self) -> None:
        import asyncio

        with self.lock:
            items, self.incoming = self.incoming, []
        for item in items:
            task = asyncio.ensure_future(self.watch(*item))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def watch(self, dfut: Any, out: Future, key: str, name: str) -> None:
        try:
            state = getattr(dfut, "_state", None)
            if state is not None and hasattr(state, "wait"):
                self.watching += 1
                try:
                    while dfut.status == "pending":
                        await state.wait()
                finally:
                    self.watching -= 1
            if dfut.status == "finished" and state is not None:
                self.ready.append((dfut, out, key, name))
                if not self.draining:
                    self.draining = True
                    dfut.client.loop.add_callback(self.drain)
                elif self.flush is not None and (
                        self.watching == 0 or len(self.ready) >= self.MAX_BATCH):
                    self.flush.set()
                return
            value = await dfut
        except BaseException as exc:  # noqa: B036 - asyncio.CancelledError too: the loop closes
            _completer.put([(out, False, exc, key, name)])
        else:
            _completer.put([(out, True, value, key, name)])

    async def drain(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            while self.ready:
                streaming = self.last_batch > 1 and loop.time() - self.last_end < 0.1
                if streaming and self.watching > 0 and len(self.ready) < self.MAX_BATCH:
                    if self.flush is None:
                        self.flush = asyncio.Event()
                    self.flush.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.flush.wait(), self.GATHER_WINDOW_S)
                batch, self.ready = self.ready, []
                try:
                    client = batch[0][0].client
                    values = await client.gather([b[0] for b in batch], asynchronous=True)
                except BaseException:  # noqa: B036 - one failed (lost data): one by one
                    for dfut, out, key, name in batch:
                        try:
                            value = await dfut
                        except BaseException as exc:  # noqa: B036
                            _completer.put([(out, False, exc, key, name)])
                        else:
                            _completer.put([(out, True, value, key, name)])
                else:
                    _completer.put([(out, True, value, key, name)
                                    for (_, out, key, name), value in zip(batch, values)])
                self.last_batch = len(batch)
                self.last_end = loop.time()
        finally:
            self.draining = False


_pumps: weakref.WeakKeyDictionary[Any, _Pump] = weakref.WeakKeyDictionary()


def _pump_of(client: Any) -> _Pump:
    p = _pumps.get(client)
    if p is None:
        with _configure_lock:
            p = _pumps.get(client)
            if p is None:
                p = _pumps[client] = _Pump()
    return p


def _propagate_cancel(fut: Future) -> None:
    if fut.cancelled():
        dfut = _dask_of.get(fut)
        if dfut is not None:
            # Not in this thread: the caller of cancel() may be the event loop.
            _completer.put([(None, False, dfut, "", "")])


def _explain_failure(exc: BaseException, key: str, name: str) -> BaseException:
    """Dask's error for a task the cluster gave up on, with a note that says so."""
    try:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover
        return exc
    note = None
    if isinstance(exc, KilledWorker):
        note = (f"forkwait: the Dask cluster gave up on fork({name}) (key {key!r}): every "
                "worker that ran it died (a crash, a kill, or running out of memory); "
                "see the workers' logs")
    elif isinstance(exc, FutureCancelledError):
        note = (f"forkwait: the Dask cluster cancelled fork({name}) (key {key!r}); a lost "
                "scheduler connection or a closed client cancels every pending task")
    elif type(exc).__name__ == "CancelledError":  # the event loop closed under the task
        wrapped = RuntimeError(
            f"forkwait: fork({name}) (key {key!r}) on the Dask cluster: the client's event "
            "loop closed before the result arrived (was the client closed?)"
        )
        wrapped.__cause__ = exc
        return wrapped
    if note is not None and hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


class _Completer:
    """Threads that finish cluster forks' futures, off the client's event loop.

    Items are lists of outcomes (a whole gathered batch: one wake-up). A
    thread puts the rest of a batch back before it finishes one future, whose
    callbacks may block (on another cluster future, say); a watchdog starts
    one more thread when every thread has been busy for STUCK_S while
    outcomes wait, so a blocking callback never holds up other completions.
    Extra threads retire after a second idle; the watchdog after ten.
    """

    MAX_THREADS = 64
    STUCK_S = 0.05

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._busy_since: dict[int, float] = {}
        self._watchdog = False
        self._pid = os.getpid()
        self._names = itertools.count(1)

    def put(self, items: list) -> None:
        self._queue.put(items)
        start = False
        with self._lock:
            if self._pid != os.getpid():  # the child of os.fork(): no threads here
                self._pid, self._threads, self._idle = os.getpid(), 0, 0
                self._busy_since.clear()
                self._watchdog = False
            if self._threads == 0:
                self._threads = self._idle = 1
                start = True
            watch = not self._watchdog
            self._watchdog = True
        if start:
            self._start(self._main)
        if watch:
            self._start(self._watch)

    def _start(self, target: Any) -> None:
        threading.Thread(target=target, name=f"forkwait-dask-{next(self._names)}",
                         daemon=True).start()

    def _watch(self) -> None:
        quiet = 0.0
        while True:
            time.sleep(self.STUCK_S)
            start = False
            with self._lock:
                if self._pid != os.getpid():
                    return
                waiting = not self._queue.empty()
                now = time.monotonic()
                if (waiting and self._idle == 0 and self._threads < self.MAX_THREADS
                        and all(now - t > self.STUCK_S for t in self._busy_since.values())):
                    self._threads += 1
                    self._idle += 1
                    start = True
                quiet = 0.0 if (waiting or self._busy_since) else quiet + self.STUCK_S
                if quiet > 10.0:
                    self._watchdog = False
                    return
            if start:
                self._start(self._main)

    def _main(self) -> None:
        me = threading.get_ident()
        while True:
            try:
                # the last thread sleeps until there is work; extras retire
                items = self._queue.get(timeout=1.0 if self._threads > 1 else None)
            except queue.Empty:
                with self._lock:
                    if self._threads > 1:
                        self._threads -= 1
                        self._idle -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._busy_since[me] = time.monotonic()
            if len(items) > 1:
                self._queue.put(items[1:])
            try:
                self._finish(*items[0])
            except BaseException:  # pragma: no cover - _finish catches what it can
                _logger.exception("forkwait: completing a cluster future failed")
            with self._lock:
                self._idle += 1
                del self._busy_since[me]

    @staticmethod
    def _finish(out: Future | None, ok: bool, value: Any, key: str, name: str) -> None:
        if out is None:  # a cancel request: `value` is the Dask future
            try:
                value.cancel()
            except Exception:
                _logger.debug("forkwait: cancelling a Dask future failed", exc_info=True)
            return
        rec = _recorder
        if rec is not None:
            rec.finished(key, "finished" if ok else ("cancelled" if out.cancelled() else "failed"))
        if out.done():  # cancelled by its owner; the cluster's outcome is dropped
            return
        try:
            if ok:
                out.set_result(value)
            else:
                out.set_exception(_explain_failure(value, key, name))
        except Exception:  # InvalidStateError: cancelled just now
            if not out.done():
                raise


_completer = _Completer()


# ------------------------------------------------------------- on the worker


class _WorkerLog:
    """Runs of cluster tasks in this worker process, while the client records."""

    entries: deque = deque(maxlen=100_000)


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


def _worker_entry(t0: float, t1: float, cpu: float) -> tuple:
    from distributed.worker import get_worker, thread_state

    try:
        address = get_worker().address
    except ValueError:
        address = ""
    return (getattr(thread_state, "key", ""), t0, t1, cpu, address, os.getpid(),
            threading.get_ident())


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


def _drain_worker_log() -> list:
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
            ident = await worker.scheduler.identity(n_workers=-1)
            workers = ident.get("workers", workers) or workers
        except Exception:
            _logger.debug("forkwait: scheduler identity unavailable", exc_info=True)
        from distributed.comm import get_address_host

        nthreads = worker.state.nthreads if hasattr(worker, "state") else worker.nthreads
        self.apply(nthreads, _host_threads(workers, get_address_host(worker.address)))

    @staticmethod
    def apply(nthreads: int, host_threads: int) -> None:
        from forkwait import _threads
        from forkwait._native import _runtime

        cpus = _threads.available_cpus()
        worker_cpus, per_task = _share(cpus, nthreads, host_threads)
        _runtime._set_cpu_budget(worker_cpus)
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


# ----------------------------------------------------------------- recording


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


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, list] = {}  # key -> [name, submit, thread, done, outcome]
        self.clients: weakref.WeakSet[Any] = weakref.WeakSet()
        self.records: list[ClusterRecord] | None = None

    def submitted(self, key: str, name: str, client: Any) -> None:
        with self.lock:
            self.sent[key] = [name, pool._now(), threading.get_ident(), math.nan, "pending"]
            if client not in self.clients:
                self.clients.add(client)

    def forget(self, key: str) -> None:
        with self.lock:
            self.sent.pop(key, None)

    def finished(self, key: str, outcome: str) -> None:
        with self.lock:
            entry = self.sent.get(key)
            if entry is not None:
                entry[3] = pool._now()
                entry[4] = outcome

    def collect(self) -> list[ClusterRecord]:
        runs: dict[str, tuple] = {}
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
                for e in entries:
                    runs[e[0]] = e  # the last run of a key that ran twice
        offset = time.time() - pool._now()  # wall clock -> forkwait's clock
        out = []
        with self.lock:
            for key, (name, submit, thread, done, outcome) in self.sent.items():
                run = runs.get(key)
                if run is None:
                    out.append(ClusterRecord(key, name, submit, thread, math.nan, math.nan, done,
                                             "", 0, 0, 0.0, outcome))
                else:
                    _, t0, t1, cpu, address, pid, wthread = run
                    out.append(ClusterRecord(key, name, submit, thread, t0 - offset,
                                             t1 - offset, done, address, pid, wthread, cpu,
                                             outcome))
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
