"""Waiting on many futures, the Executor, and structured scopes.

These are the standard library's shapes over forkwait's one pool. Every wait
here helps as :func:`forkwait.wait` does: unstarted futures run in the
waiting thread, and while they run elsewhere the waiter runs queued tasks of
their subtrees, so they are safe inside tasks with any pool size. No future
gets a condition variable of its own: one hand-made future per wait is the
signal, completed by the members' done-callbacks.
"""

from __future__ import annotations

import collections
import concurrent.futures as _cf
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from forkwait._native import pool
from forkwait._native.pool import Future, InvalidStateError, fork

if sys.version_info >= (3, 11):
    _ExceptionGroup = ExceptionGroup  # noqa: F821
else:  # pragma: no cover - exercised on Python 3.10 only
    from exceptiongroup import ExceptionGroup as _ExceptionGroup

T = TypeVar("T")

__all__ = ["Executor", "as_completed", "scope", "wait_any"]


def _futures_list(futures: Iterable[Future], caller: str) -> list[Future]:
    try:
        futs = list(futures)
    except TypeError:
        raise TypeError(
            f"{caller}() needs an iterable of forkwait.Future, got {type(futures).__name__}"
        ) from None
    for i, f in enumerate(futs):
        if not isinstance(f, pool.FutureCore):
            raise TypeError(
                f"{caller}() needs forkwait.Future items; item {i} is {type(f).__name__}"
            )
    return futs


def _settle(signal: Future) -> None:
    try:
        signal.set_result(None)
    except InvalidStateError:
        pass


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    t = float(timeout)
    if t != t:
        raise ValueError("timeout must be a number of seconds, got nan")
    return time.monotonic() + max(t, 0.0)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def wait_any(futures: Iterable[Future[T]], timeout: float | None = None) -> Future[T]:
    """The first of `futures` to be done (finished, failed or cancelled).

    If one is done already, the first such in the given order is returned at
    once. Otherwise the waiting thread helps (it runs unstarted futures, in
    order, and tasks of the running ones' subtrees) until one is done.

    Parameters
    ----------
    futures : iterable of Future
        At least one.
    timeout : float, optional
        Seconds to wait at most.

    Returns
    -------
    Future
        The future that was done first. Its value is not read (a failure is
        not raised here: call ``.result()`` on it). However the call ends
        (a result, a timeout, Ctrl-C), it leaves nothing on the members: a
        long-lived member (a stop signal, say) can be polled in a loop.

    Raises
    ------
    TimeoutError
        If none is done within `timeout` seconds.
    ValueError
        If `futures` is empty.

    Examples
    --------
    >>> import forkwait as fw
    >>> never = fw.Future()
    >>> first = fw.wait_any([never, fw.fork(pow, 2, 5)])
    >>> first.result()
    32
    """
    futs = _futures_list(futures, "wait_any")
    if not futs:
        raise ValueError("wait_any() needs at least one future")
    for f in futs:
        if f.done():
            return f
    signal = Future()
    first: list[Future] = []

    def on_done(f: Future) -> None:
        first.append(f)
        _settle(signal)

    try:
        for f in futs:
            f.add_done_callback(on_done)
        pool._wait_on(signal, futs, timeout)
    finally:
        # Taken back from every member, however the wait ended: a member
        # that outlives the call (a stop signal, a slow task) must not keep
        # this call's closure, and through it the returned future, alive.
        for f in futs:
            f._remove_done_callback(on_done)
    return first[0]


def as_completed(
    futures: Iterable[Future[T]], timeout: float | None = None
) -> Iterator[Future[T]]:
    """Yield `futures` as they are done, in the order they finish.

    As :func:`concurrent.futures.as_completed`: futures done already come
    first; duplicates are yielded once; `timeout` counts from the call, and
    ``TimeoutError`` is raised from the iteration when it passes. Unlike the
    standard library's, the waiting thread helps (runs unstarted futures and
    tasks of the running ones' subtrees), so it works inside a task whose
    children are still queued, with any pool size. When the iteration ends
    (exhausted, closed, dropped, or a timeout), the members not yet yielded
    keep nothing of it.

    Examples
    --------
    >>> import forkwait as fw
    >>> futs = [fw.fork(pow, 2, i) for i in range(4)]
    >>> sorted(f.result() for f in fw.as_completed(futs))
    [1, 2, 4, 8]
    """
    futs = list(dict.fromkeys(_futures_list(futures, "as_completed")))
    deadline = _deadline(timeout)
    return _as_completed(futs, deadline)


def _as_completed(futs: list[Future], deadline: float | None) -> Iterator[Future]:
    order: collections.deque[Future] = collections.deque()
    box = [Future()]

    def on_done(f: Future) -> None:
        order.append(f)
        _settle(box[0])

    remaining = len(futs)
    rest = futs
    yielded: set[int] = set()
    try:
        for f in futs:
            f.add_done_callback(on_done)  # done ones are appended at once, in order
        while remaining:
            if not order:
                box[0] = Future()
                if not order:  # a callback may have run before the swap
                    if len(yielded) * 2 > len(rest):
                        rest = [f for f in rest if id(f) not in yielded]
                        yielded.clear()
                    try:
                        pool._wait_on(box[0], rest, _left(deadline))
                    except TimeoutError:
                        raise TimeoutError(
                            f"{remaining} (of {len(futs)}) futures unfinished"
                        ) from None
                    continue
            f = order.popleft()
            yielded.add(id(f))
            remaining -= 1
            yield f
    finally:
        # However the iteration ends (exhausted, closed early, collected, a
        # timeout, Ctrl-C), the members not yet yielded give the callback
        # back: a long-lived member keeps nothing of this iteration alive.
        # (A yielded member is done: its callbacks have run and are gone.)
        if remaining:
            for f in rest:
                if id(f) not in yielded:
                    f._remove_done_callback(on_done)


# ---------------------------------------------------------------- Executor


class Executor(_cf.Executor):
    """A :class:`concurrent.futures.Executor` over forkwait's shared pool.

    Programs written for :class:`~concurrent.futures.ThreadPoolExecutor` port
    by changing the line that creates the executor. Several executors share
    the one inter-op pool (sized by :func:`forkwait.set_num_interop_threads`);
    an executor is a view with its own shutdown: ``shutdown(wait=True)``
    waits only for this executor's calls. Its futures are forkwait futures
    (and so ``concurrent.futures`` futures), and a wait on them helps, so
    ``submit`` inside a forked task cannot deadlock the pool.

    Parameters
    ----------
    max_workers : int, optional
        Accepted for ThreadPoolExecutor compatibility and checked (a
        positive int), but the shared pool's size is what bounds the calls
        running at once.
    thread_name_prefix, initializer, initargs
        ThreadPoolExecutor's other parameters: accepted; `initializer` is
        refused (pool threads are shared, so a per-executor initializer has
        no thread to run in), with a message that says so.

    Examples
    --------
    >>> import forkwait as fw
    >>> with fw.Executor() as ex:
    ...     fut = ex.submit(pow, 2, 8)
    ...     squares = list(ex.map(lambda x: x * x, range(4)))
    >>> fut.result(), squares
    (256, [0, 1, 4, 9])
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple = (),
    ) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int) \
                    or max_workers <= 0:
                raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
        if initializer is not None:
            raise TypeError(
                "forkwait.Executor runs on the shared pool's threads, which no executor "
                "owns, so it cannot run a per-thread initializer; call it at the start "
                "of the submitted function instead"
            )
        self._lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._shutdown = False

    def _forget(self, f: Future) -> None:
        with self._lock:
            self._pending.pop(id(f), None)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; its Future at once (see
        :func:`forkwait.fork`).

        Raises
        ------
        RuntimeError
            After :meth:`shutdown`.

        Examples
        --------
        >>> import forkwait as fw
        >>> ex = fw.Executor()
        >>> ex.submit(divmod, 7, 2).result()
        (3, 1)
        >>> ex.shutdown()
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            f = fork(fn, *args, **kwargs)
            self._pending[id(f)] = f
        f.add_done_callback(self._forget)
        return f

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` with the calls on the pool, results in order.

        As :meth:`concurrent.futures.Executor.map`: `timeout` counts from the
        call; `buffersize` (Python 3.14's parameter) bounds the calls submitted
        ahead of the results consumed; `chunksize` is accepted and ignored, as
        ThreadPoolExecutor does.

        Examples
        --------
        >>> import forkwait as fw
        >>> with fw.Executor() as ex:
        ...     list(ex.map(pow, [2, 3], [3, 2]))
        [8, 9]
        """
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int) \
                    or buffersize < 1:
                raise ValueError(f"buffersize must be None or an int >= 1, got {buffersize!r}")
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be an int >= 1, got {chunksize!r}")
        deadline = _deadline(timeout)
        args = zip(*iterables)  # noqa: B905 - map stops at the shortest, as the stdlib's
        if buffersize is None:
            futs = collections.deque(self.submit(fn, *a) for a in args)
        else:
            futs = collections.deque(
                self.submit(fn, *a) for a in itertools.islice(args, buffersize)
            )
        return self._results(futs, args if buffersize is not None else None, fn, deadline)

    def _results(self, futs, more, fn, deadline):
        try:
            while futs:
                f = futs.popleft()
                if more is not None:
                    for a in itertools.islice(more, 1):
                        futs.append(self.submit(fn, *a))
                yield f.result(_left(deadline))
        finally:
            for f in futs:
                f.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; optionally cancel unstarted ones and wait for the rest.

        Only this executor's calls are cancelled or waited for; the shared
        pool keeps running.

        Examples
        --------
        >>> import forkwait as fw
        >>> ex = fw.Executor()
        >>> f = ex.submit(sum, [1, 2])
        >>> ex.shutdown(wait=True)
        >>> f.done()
        True
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending.values())
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            for f in pending:
                try:
                    f.exception()
                except _cf.CancelledError:
                    pass


# ---------------------------------------------------------------- scope


class scope:  # noqa: N801 - used as ``with fw.scope() as s``
    """A structured block of forks: leaving it waits for every one.

    ``s.fork(fn, *args)`` forks inside the scope (from the block or from one
    of the scope's own tasks); leaving the ``with`` block waits for all of
    them, helping as a wait does. When a task fails, the scope's tasks that
    have not started are cancelled, the running ones finish, and the block
    raises: one failure as itself, several as an ``ExceptionGroup``. An
    exception in the block itself (``KeyboardInterrupt`` included) cancels
    what has not started, waits for what runs, and is raised. So does a
    Ctrl-C while the end of the block waits: the scope counts as failed (a
    running task's new ``s.fork`` is cancelled at once), what has not
    started is cancelled, and ``KeyboardInterrupt`` is raised once no task
    of the scope runs. A second Ctrl-C during that wait goes through at once:
    the scope is left with its running tasks still running (they are not
    stopped; nothing waits for them). Scopes nest.

    This is oneTBB's ``task_group`` (``run``/``wait``, cancellation of the
    group on a failure) with trio's nursery and Python 3.11's
    ``asyncio.TaskGroup`` rules for raising.

    Examples
    --------
    >>> import forkwait as fw
    >>> with fw.scope() as s:
    ...     a = s.fork(sum, [1, 2])
    ...     b = s.fork(max, 3, 4)
    >>> a.result() + b.result()
    7
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: list[Future] = []
        self._failed = False
        self._closed = False

    def __enter__(self) -> scope:
        return self

    def fork(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Fork ``fn(*args, **kwargs)`` inside the scope; its Future.

        After a task of the scope failed, new forks are cancelled at once
        (they never run). After the block is left, forking raises.

        Examples
        --------
        >>> import forkwait as fw
        >>> with fw.scope() as s:
        ...     f = s.fork(abs, -2)
        >>> f.result()
        2
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("this forkwait.scope has been left; fork in an open scope")
            if self._failed:
                # never forked, so never run (a fork cancelled after the
                # fact could already run on a pool thread: without a GIL,
                # at once)
                f: Future[T] = Future()
                f.cancel()
                self._futures.append(f)
                return f
            f = fork(fn, *args, **kwargs)
            self._futures.append(f)
        f.add_done_callback(self._on_done)
        return f

    def _on_done(self, f: Future) -> None:
        if f.cancelled() or f.exception() is None:
            return
        with self._lock:
            self._failed = True
            futs = list(self._futures)
        for other in futs:
            other.cancel()

    def _cancel_all(self) -> None:
        """Fail the scope: cancel what has not started, and every later fork."""
        with self._lock:
            self._failed = True
            futs = list(self._futures)
        for f in futs:
            f.cancel()

    def _wait_all(self) -> None:
        """Wait for every task, including those forked meanwhile by tasks."""
        seen = 0
        while True:
            with self._lock:
                futs = self._futures[seen:]
                if not futs:
                    self._closed = True
                    return
            seen += len(futs)
            for f in futs:
                try:
                    f.exception()
                except _cf.CancelledError:
                    pass

    def _wait_running(self) -> None:
        """After an interrupted wait: wait for the tasks that run. A second
        interruption (Ctrl-C again) goes through: the caller asked twice."""
        try:
            self._wait_all()
        finally:
            self._closed = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self._cancel_all()
        try:
            self._wait_all()
        except BaseException:  # Ctrl-C (or another signal's exception) while waiting
            self._cancel_all()
            self._wait_running()
            raise
        errors = [
            f.exception() for f in self._futures
            if not f.cancelled() and f.exception() is not None
        ]
        if exc is not None:
            if errors and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise _ExceptionGroup("a forkwait.scope block and its tasks failed",
                                      [exc, *errors])
            return False  # the block's own exception goes on
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise _ExceptionGroup(f"{len(errors)} tasks of a forkwait.scope failed", errors)
        return False
