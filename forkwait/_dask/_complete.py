"""Completing cluster forks: the event-loop pump and the completion threads."""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import time
import weakref
from typing import Any

from forkwait._dask import _record
from forkwait._dask._shared import _configure_lock, _dask_of, _logger
from forkwait._native.pool import Future


class _Pump:
    """On one client's event loop: hands cluster outcomes to the completer.

    The client sets each task's Dask state when the task settles (see
    :meth:`register`); results are then fetched with one gather for all the
    tasks that finished meanwhile (what ``client.gather`` does for a list),
    not one request per task: a request costs the client and the scheduler a
    millisecond or more of CPU here, and with one request per 20 ms a stream
    of results cost 4 to 15 % more CPU than one gather at the end. An
    isolated result goes at once. While results stream in (the previous
    request carried more than one, and ended less than STREAM_GAP_S ago), a
    request waits for more to join it, up to GATHER_WINDOW_S or STREAM_SHARE
    of the time the stream has lasted, whichever is longer, at most
    MAX_WINDOW_S; it goes at once when nothing else is pending (the last of a
    ``wait_all``) or MAX_BATCH are ready. So a result waits at most a
    fraction of the time its stream has taken so far, and a long stream
    costs a few requests per second.
    """

    GATHER_WINDOW_S = 0.02
    STREAM_SHARE = 0.25
    MAX_WINDOW_S = 0.5
    STREAM_GAP_S = 0.1
    MAX_BATCH = 1024

    def __init__(self) -> None:
        self.ready: list[tuple] = []
        self.draining = False
        self.watching = 0  # tasks whose Dask future is still pending
        self.last_batch = 0
        self.last_end = 0.0
        self.stream_start = 0.0  # when the current stream of results began
        self.flush: Any = None  # an asyncio.Event, made on the loop
        self.lock = threading.Lock()
        self.incoming: list[tuple] = []  # submitted, not yet watched
        self.tasks: set = set()  # the watching coroutines (asyncio keeps weak references)
        self.hooked: dict[int, tuple] = {}  # pending tasks watched through a _Settled event
        self.guard: Any = None  # guard_loop's task while any task is hooked
        self.unhooked: Any = None  # the asyncio.Event that ends it
        self.loop_thread = 0

    def add(self, client: Any, item: tuple) -> None:
        """From any thread: watch a submitted task (one loop wake-up per burst)."""
        with self.lock:
            self.incoming.append(item)
            first = len(self.incoming) == 1
        if first:
            client.loop.add_callback(self.register)

    def register(self) -> None:
        """On the loop: watch what was submitted since the last call.

        A pending task's Dask ``FutureState`` gets a :class:`_Settled` event
        (the state makes its event on first use; the client sets it when the
        task finishes, fails or is cancelled), so that watching costs no
        coroutine per task. A state that already has an event, or is no
        longer pending, is watched by a :meth:`watch` coroutine instead.
        """
        with self.lock:
            items, self.incoming = self.incoming, []
        settled_cls = _settled_class()
        for item in items:
            state = getattr(item[0], "_state", None)
            if (state is not None and getattr(state, "_event", 0) is None
                    and getattr(state, "status", None) == "pending"):
                state._event = settled_cls(self, item)
                self.hooked[id(item)] = item
                self.watching += 1
            else:
                self.spawn(item)
        if self.hooked and self.guard is None:
            import asyncio

            self.loop_thread = threading.get_ident()
            self.unhooked = asyncio.Event()
            self.guard = asyncio.ensure_future(self.guard_loop())

    def settled(self, item: tuple) -> None:
        """A hooked task's state was set (finished, failed or cancelled)."""
        if threading.get_ident() != self.loop_thread:  # pragma: no cover - Dask sets it there
            item[0].client.loop.add_callback(self.settled, item)
            return
        if self.hooked.pop(id(item), None) is None:
            return
        self.watching -= 1
        if not self.hooked and self.unhooked is not None:
            self.unhooked.set()  # the guard ends until more are hooked
        if item[0].status == "finished":
            self.finished(item)
        else:
            self.spawn(item)  # its coroutine gets the exception

    def spawn(self, item: tuple) -> None:
        import asyncio

        task = asyncio.ensure_future(self.watch(*item))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def guard_loop(self) -> None:
        """Runs while tasks are hooked. If the loop closes meanwhile (it cancels
        its tasks as it closes), the hooked tasks fail, as the coroutines
        that watch the others do."""
        try:
            while self.hooked:
                self.unhooked.clear()
                await self.unhooked.wait()
        except BaseException as exc:  # noqa: B036 - CancelledError: the loop closes
            items, self.hooked = list(self.hooked.values()), {}
            self.watching -= len(items)
            if items:
                _completer.put([_failure(item, exc) for item in items])
            raise
        finally:
            self.guard = self.unhooked = None

    def finished(self, item: tuple) -> None:
        """A task whose result is on the cluster: gather it with the others."""
        self.ready.append(item)
        if not self.draining:
            self.draining = True
            item[0].client.loop.add_callback(self.drain)
        elif self.flush is not None and (
                self.watching == 0 or len(self.ready) >= self.MAX_BATCH):
            self.flush.set()

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
                self.finished((dfut, out, key, name))
                return
            value = await dfut
        except BaseException as exc:  # noqa: B036 - asyncio.CancelledError too: the loop closes
            _completer.put([_failure((dfut, out, key, name), exc)])
        else:
            _completer.put([(out, True, value, key, name)])

    async def drain(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            while self.ready:
                now = loop.time()
                if not (self.last_batch > 1 and now - self.last_end < self.STREAM_GAP_S):
                    self.stream_start = now  # not streaming: this request goes now
                elif self.watching > 0 and len(self.ready) < self.MAX_BATCH:
                    window = min(self.MAX_WINDOW_S, max(
                        self.GATHER_WINDOW_S, self.STREAM_SHARE * (now - self.stream_start)))
                    if self.flush is None:
                        self.flush = asyncio.Event()
                    self.flush.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.flush.wait(), window)
                batch, self.ready = self.ready, []
                try:
                    client = batch[0][0].client
                    values = await client.gather([b[0] for b in batch], asynchronous=True)
                except BaseException:  # noqa: B036 - one failed (lost data): one by one
                    for dfut, out, key, name in batch:
                        try:
                            value = await dfut
                        except BaseException as exc:  # noqa: B036
                            _completer.put([_failure((dfut, out, key, name), exc)])
                        else:
                            _completer.put([(out, True, value, key, name)])
                else:
                    _completer.put([(out, True, value, key, name) for (_, out, key, name), value
                                    in zip(batch, values, strict=True)])
                self.last_batch = len(batch)
                self.last_end = loop.time()
        finally:
            self.draining = False


_settled_cls: Any = None


def _settled_class() -> Any:
    """The asyncio.Event subclass that tells the pump when a task settles.

    Made on first use (asyncio is imported only by the Dask backend). Its
    `set` sets the event as usual, then hands the task to the pump once;
    ``clear`` (a lost result that Dask recomputes) is the usual one. The item
    is dropped at the first `set`, so the state and the Dask future do not
    keep each other alive after that.
    """
    global _settled_cls
    if _settled_cls is None:
        import asyncio

        class _Settled(asyncio.Event):
            def __init__(self, pump: _Pump, item: tuple) -> None:
                super().__init__()
                self._fw_pump: _Pump | None = pump
                self._fw_item: tuple | None = item

            def set(self) -> None:
                super().set()
                pump, item = self._fw_pump, self._fw_item
                if pump is not None and item is not None:
                    self._fw_pump = self._fw_item = None
                    try:
                        pump.settled(item)
                    except Exception:  # pragma: no cover - never into Dask's handler
                        _logger.exception("forkwait: handing a cluster outcome on failed")

        _settled_cls = _Settled
    return _settled_cls


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


def _failure(item: tuple, exc: BaseException) -> tuple:
    """The completer's outcome for a watched task (Dask future, forkwait
    future, key, name) that ended with `exc`: explained here, on the event
    loop, where the Dask future's status still tells whose exception it is."""
    dfut, out, key, name = item
    try:
        status = dfut.status
    except Exception:  # pragma: no cover - a Dask future always has one
        status = None
    return (out, False, _explain_failure(exc, key, name, status), key, name)


def _explain_failure(exc: BaseException, key: str, name: str,
                     status: str | None = None) -> BaseException:
    """`exc` as the fork's failure: the task's own exception as it is; Dask's
    error for a task the cluster gave up on, with a note that says so; a
    cancellation that is not the task's own as a RuntimeError that says what
    happened.

    `status` is the Dask future's status when `exc` came: ``"error"`` means
    the task raised `exc` (a function may raise ``CancelledError`` itself, or
    wait on a cancelled future: that arrives as itself, as it does locally);
    ``"cancelled"`` that the cluster cancelled the key. A ``CancelledError``
    with any other status is the client's event loop closing under the
    coroutine that watched the task (asyncio cancels its tasks as it closes).
    """
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover
        KilledWorker = ()  # noqa: N806
    try:
        from distributed.client import FutureCancelledError
    except ImportError:  # older distributed (2023.1, say) raises a CancelledError(key)
        FutureCancelledError = ()  # noqa: N806
    cancelled = (f"forkwait: the Dask cluster cancelled fork({name}) (key {key!r}); a lost "
                 "scheduler connection or a closed client cancels every pending task")
    note = None
    if isinstance(exc, KilledWorker):
        note = (f"forkwait: the Dask cluster gave up on fork({name}) (key {key!r}): every "
                "worker that ran it died (a crash, a kill, or running out of memory); "
                "see the workers' logs")
    elif status == "error":  # the task raised it: its own exception, whatever its type
        return exc
    elif isinstance(exc, FutureCancelledError):
        note = cancelled
    elif type(exc).__name__ == "CancelledError":
        if status == "cancelled" or (exc.args and str(exc.args[0]) == key):
            # the cluster cancelled it (older distributed: a bare CancelledError(key))
            wrapped = RuntimeError(cancelled)
        else:  # the event loop closed under the task
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
            # Hold nothing while idle: a done future (and its Dask future, and the
            # value on the cluster) lives only as long as its owner keeps it.
            items = None
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
        rec = _record._recorder
        if rec is not None:
            rec.finished(key, "finished" if ok else ("cancelled" if out.cancelled() else "failed"))
        if out.done():  # cancelled by its owner; the cluster's outcome is dropped
            return
        try:
            if ok:
                out.set_result(value)
            else:
                out.set_exception(value)  # explained by _failure
        except Exception:  # InvalidStateError: cancelled just now
            if not out.done():
                raise


_completer = _Completer()
