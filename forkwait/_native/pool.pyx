"""The inter-op pool: its queue, its worker loop and the Future core.

One process-wide queue (an intrusive doubly linked list of the futures' nodes)
is guarded by one pthread mutex and one condition variable (``_fw_sync.h``).
Workers sleep on the condition variable without the GIL. Every state change of
every future happens under that mutex, so a future is finished exactly once.

Locking rule: code that holds the mutex never waits for the GIL, never runs
Python code and never allocates a Python object (an allocation may start the
garbage collector, which may run a finalizer, which may lock the mutex again).
A thread that holds the GIL may therefore take the mutex at any time.

No deadlock, whatever the nesting: ``wait`` on a future that has not started
takes it out of the queue and runs it in the waiting thread; ``wait`` on a
running future runs other queued tasks meanwhile (help-while-waiting).

Deep nesting: every task run inside a wait adds frames to the waiter's stack.
When the waiting thread is near Python's recursion limit (fewer than a quarter
of ``sys.getrecursionlimit()`` frames left) or near the end of its C stack, it
neither runs the task inline nor helps. It blocks instead, and the pool starts
a *compensating* thread (a "spare", with a fresh stack) for as long as it
is blocked, as Java's ForkJoinPool does for managed blocking: there are always
at least as many spare threads as threads blocked this way, so progress never
depends on a blocked thread. Spares retire when they are no longer needed.

Life in the process: at interpreter exit the queued tasks still run (workers
drain the queue; a task that runs then may fork children), after which
``fork`` raises RuntimeError. In the child of ``os.fork()`` the pool restarts
at the next fork; tasks that other threads of the parent were running (in a
worker or inline in a wait) fail with RuntimeError, since their threads do not
exist in the child.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport PyThread_get_thread_ident

from forkwait._native._team cimport get_local_threads, set_local_threads

import _thread
import logging
import os
import threading
import types
from concurrent.futures import CancelledError, InvalidStateError
from concurrent.futures import TimeoutError as FuturesTimeoutError

cdef extern from "_fw_sync.h" nogil:
    void fw_sync_init()
    void fw_lock()
    void fw_unlock()
    void fw_signal()
    void fw_broadcast()
    void fw_cond_wait()
    int fw_cond_wait_until(double deadline)
    double fw_now()
    int fw_prof_on
    long long fw_cur_task
    double fw_wait_acc
    unsigned long fw_thread_id()
    int fw_task_depth
    size_t fw_stack_left()
    size_t fw_stack_total()

cdef extern from "_fw_sync.h":
    int fw_py_frames_left()
    int Py_GetRecursionLimit()

_logger = logging.getLogger("forkwait")

# Future states (the first two are "not done").
cdef enum:
    PENDING = 0
    RUNNING = 1
    FINISHED = 2
    FAILED = 3
    CANCELLED = 4

cdef tuple _STATE_NAMES = ("pending", "running", "finished", "failed", "cancelled")

# Pool states.
cdef enum:
    POOL_IDLE = 0        # no worker started yet (or after os.fork() in the child)
    POOL_RUNNING = 1
    POOL_DRAINING = 2    # interpreter exit: workers finish the queue, then stop
    POOL_CLOSED = 3

# What a waiter does next.
cdef enum:
    W_DONE = 0
    W_RUN = 1
    W_POLL = 2           # main thread: look at signals (Ctrl-C), then wait again
    W_TIMEOUT = 3

DEF MAX_INTEROP = 4096
MAX_INTEROP_THREADS = MAX_INTEROP
# Compensating threads at most (beyond it, a deep waiter helps inline anyway).
DEF MAX_SPARES = 2048
# A deep waiter blocks when fewer C stack bytes than this are left
# (or a quarter of the thread's stack, when that is smaller).
DEF STACK_MARGIN = 512 * 1024
# The main thread wakes this often while it waits, so that Ctrl-C is seen.
cdef double SIGNAL_POLL_S = 0.05

ctypedef struct Node:
    PyObject *fut       # the Future that embeds this node (borrowed)
    Node *prev
    Node *next
    int state
    int queued          # linked in the queue; the queue then owns one reference
    int waiters         # threads sleeping until this future is done
    unsigned long runner  # while RUNNING: the thread that runs it (fw_thread_id)

# ---------------------------------------------------------------- pool state
# All of it is guarded by the mutex in _fw_sync.h.
cdef Node *q_head = NULL
cdef Node *q_tail = NULL
cdef Py_ssize_t q_len = 0
cdef int n_sleeping = 0          # threads in a condition wait (workers and waiters)
cdef int n_passive = 0           # of those, threads that would not take queued work
cdef Node *r_head = NULL         # running tasks (linked through prev/next)
cdef int n_deep = 0              # threads blocked in a wait because they are too deep
cdef int n_spares = 0            # live compensating threads
cdef long long n_completed = 0   # forked tasks finished (any outcome), for stats
cdef long long n_spawned_spares = 0
cdef long long n_spare_failures = 0  # spares that could not be started
cdef int n_running = 0           # tasks running now, in workers or inline
cdef int target_workers = 1
cdef int live_workers = 0
cdef int pool_state = POOL_IDLE
cdef char slot_alive[MAX_INTEROP]
cdef unsigned long main_ident = 0

fw_sync_init()
main_ident = PyThread_get_thread_ident()


cdef inline void q_push(Node *n) noexcept nogil:
    global q_head, q_tail, q_len
    n.prev = q_tail
    n.next = NULL
    if q_tail != NULL:
        q_tail.next = n
    else:
        q_head = n
    q_tail = n
    n.queued = 1
    q_len += 1


cdef inline void q_unlink(Node *n) noexcept nogil:
    global q_head, q_tail, q_len
    if n.prev != NULL:
        n.prev.next = n.next
    else:
        q_head = n.next
    if n.next != NULL:
        n.next.prev = n.prev
    else:
        q_tail = n.prev
    n.prev = NULL
    n.next = NULL
    n.queued = 0
    q_len -= 1


cdef inline Node *q_claim(Node *n) noexcept nogil:
    """Take a queued node out of the queue and mark it running (mutex held).

    A running node is linked in the running list, so that the child of
    os.fork() can fail the tasks whose threads it does not have.
    """
    global n_running, r_head
    q_unlink(n)
    n.state = RUNNING
    n.runner = fw_thread_id()
    n.prev = NULL
    n.next = r_head
    if r_head != NULL:
        r_head.prev = n
    r_head = n
    n_running += 1
    return n


cdef inline void r_unlink(Node *n) noexcept nogil:
    """Take a running node out of the running list (mutex held)."""
    global r_head
    if n.prev != NULL:
        n.prev.next = n.next
    else:
        r_head = n.next
    if n.next != NULL:
        n.next.prev = n.prev
    n.prev = NULL
    n.next = NULL


# ---------------------------------------------------------------- the Future

# No @cython.freelist: an object that the cyclic GC finalized keeps its
# 'finalized' flag in a freelist, and __del__ would then never run again.
@cython.final
cdef class Future:
    """The result of an asynchronous call, as in ``torch.futures.Future``.

    A `Future` comes from :func:`fork` (it then belongs to a forked task) or
    from ``Future()`` (it is then completed by hand with :meth:`set_result` or
    :meth:`set_exception`). It goes from pending to running to finished,
    failed or cancelled, exactly once.

    Examples
    --------
    >>> import forkwait as fw
    >>> fut = fw.fork(sum, [1, 2, 3])
    >>> fut.wait()
    6
    >>> manual = fw.Future()
    >>> manual.set_result("ready")
    >>> manual.value()
    'ready'
    """

    cdef Node node
    cdef object _fn
    cdef tuple _args
    cdef dict _kwargs
    cdef object _result
    cdef object _exc
    cdef list _callbacks
    cdef int _intra
    cdef bint _is_task
    cdef bint _retrieved
    # profiling (only set while forkwait.profile() records)
    cdef long long _prof_id
    cdef long long _prof_parent
    cdef double _t_fork
    cdef unsigned long _fork_thread
    cdef object __weakref__

    def __cinit__(self):
        self.node.fut = <PyObject *>self
        self.node.prev = NULL
        self.node.next = NULL
        self.node.state = PENDING
        self.node.queued = 0
        self.node.waiters = 0
        self.node.runner = 0

    __class_getitem__ = classmethod(types.GenericAlias)

    # -- state -----------------------------------------------------------
    def done(self):
        """True when the future has finished, failed or been cancelled.

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.Future()
        >>> f.done()
        False
        >>> f.set_result(1)
        >>> f.done()
        True
        """
        return self.node.state >= FINISHED

    def running(self):
        """True while a thread runs the forked call.

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.fork(abs, -1)
        >>> f.wait()
        1
        >>> f.running()
        False
        """
        return self.node.state == RUNNING

    def cancelled(self):
        """True when the future was cancelled before it started.

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.Future()
        >>> f.cancel()
        True
        >>> f.cancelled()
        True
        """
        return self.node.state == CANCELLED

    # -- waiting and values ------------------------------------------------
    def wait(self):
        """Block until done and return the value (see :func:`forkwait.wait`).

        Examples
        --------
        >>> import forkwait as fw
        >>> fw.fork(pow, 2, 10).wait()
        1024
        """
        _wait_done(self, -1.0, True)
        return self._outcome()

    def value(self):
        """The value of a future that is done; re-raises its exception.

        Raises
        ------
        concurrent.futures.InvalidStateError
            If the future is not done yet: call :meth:`wait` first.

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.fork(len, "abc")
        >>> _ = f.wait()
        >>> f.value()
        3
        """
        if self.node.state < FINISHED:
            raise InvalidStateError(
                f"value() called on a {_STATE_NAMES[self.node.state]} future: "
                "call wait() first, or use then()/add_done_callback()"
            )
        return self._outcome()

    def result(self, timeout=None):
        """The value, waiting at most `timeout` seconds (``concurrent.futures``).

        With ``timeout=None`` this is :meth:`wait`. With a timeout the caller
        only sleeps (it runs no task itself), so that the timeout holds.

        Raises
        ------
        TimeoutError
            If the future is not done within `timeout` seconds.

        Examples
        --------
        >>> import forkwait as fw
        >>> fw.fork(max, 3, 7).result(timeout=10)
        7
        """
        _wait_done(self, _check_timeout(timeout), timeout is None)
        return self._outcome()

    def exception(self, timeout=None):
        """The exception the call raised, or None (``concurrent.futures``).

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.fork(int, "x")
        >>> type(f.exception())
        <class 'ValueError'>
        """
        _wait_done(self, _check_timeout(timeout), timeout is None)
        if self.node.state == CANCELLED:
            raise CancelledError()
        self._retrieved = True
        return self._exc

    cdef object _outcome(self):
        cdef int state = self.node.state
        if state == FINISHED:
            return self._result
        if state == FAILED:
            self._retrieved = True
            raise self._exc
        if state == CANCELLED:
            raise CancelledError()
        raise InvalidStateError("future is not done")  # unreachable after a wait

    def __await__(self):
        """``await fut`` inside asyncio: the event loop keeps running meanwhile."""
        return _await_future(self).__await__()

    # -- completion by hand --------------------------------------------------
    def set_result(self, result):
        """Complete a future made with ``Future()`` with `result`.

        Raises
        ------
        concurrent.futures.InvalidStateError
            If the future is already done, or belongs to a forked task.

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.Future()
        >>> f.set_result(42)
        >>> f.wait()
        42
        """
        self._check_manual("set_result")
        if not _finish(self, FINISHED, result, None):
            raise InvalidStateError(
                f"set_result() on a future that is already {_STATE_NAMES[self.node.state]}"
            )

    def set_exception(self, exception):
        """Complete a future made with ``Future()`` with an exception.

        Waiters get `exception` raised. It must be an exception instance
        (or class, which is instantiated).

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.Future()
        >>> f.set_exception(KeyError("k"))
        >>> f.exception()
        KeyError('k')
        """
        self._check_manual("set_exception")
        if isinstance(exception, type) and issubclass(exception, BaseException):
            exception = exception()
        if not isinstance(exception, BaseException):
            raise TypeError(
                "set_exception() needs an exception instance, got "
                f"{type(exception).__name__}"
            )
        if not _finish(self, FAILED, None, exception):
            raise InvalidStateError(
                f"set_exception() on a future that is already "
                f"{_STATE_NAMES[self.node.state]}"
            )

    cdef _check_manual(self, str what):
        if self._is_task:
            raise InvalidStateError(
                f"{what}() on a future that belongs to a forked task; only futures "
                "made with Future() are completed by hand"
            )

    def cancel(self):
        """Cancel the call if it has not started; True if it is cancelled.

        A running or finished call cannot be cancelled (returns False).

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.Future()
        >>> f.cancel(), f.cancelled()
        (True, True)
        """
        if self.node.state == CANCELLED:
            return True
        return _finish(self, CANCELLED, None, None, True)

    # -- callbacks -------------------------------------------------------------
    def add_done_callback(self, fn):
        """Call ``fn(future)`` once when the future is done.

        It runs in the thread that completes the future, after the future's
        state is final, or at once in the calling thread if it is done
        already. An exception raised by `fn` is logged (logger ``forkwait``),
        never raised into that thread.

        Examples
        --------
        >>> import forkwait as fw
        >>> seen = []
        >>> f = fw.Future()
        >>> f.add_done_callback(lambda fut: seen.append(fut.value()))
        >>> f.set_result(5)
        >>> seen
        [5]
        """
        if not callable(fn):
            raise TypeError(f"add_done_callback() needs a callable, got {type(fn).__name__}")
        cdef list fresh = [fn]
        cdef bint added = False
        fw_lock()
        if self.node.state < FINISHED:
            if self._callbacks is None:
                self._callbacks = fresh
            else:
                self._callbacks.append(fn)
            added = True
        fw_unlock()
        if not added:
            _call_callback(fn, self)

    def then(self, callback):
        """A new Future with the value of ``callback(self)``, once this is done.

        As ``torch.futures.Future.then``: `callback` runs in the thread that
        completes this future (or now, if it is done already); if it raises,
        the returned future fails with that exception.

        Examples
        --------
        >>> import forkwait as fw
        >>> fw.fork(pow, 3, 2).then(lambda f: f.value() + 1).wait()
        10
        """
        if not callable(callback):
            raise TypeError(f"then() needs a callable, got {type(callback).__name__}")
        cdef Future child = Future()
        self.add_done_callback(_Chain(callback, child))
        return child

    # -- reporting -------------------------------------------------------------
    def __repr__(self):
        cdef int state = self.node.state
        extra = ""
        if state == FINISHED:
            extra = f" returned {type(self._result).__name__}"
        elif state == FAILED:
            extra = f" raised {type(self._exc).__name__}"
        name = ""
        if self._fn is not None:
            name = " " + getattr(self._fn, "__qualname__", type(self._fn).__name__)
        return f"<forkwait.Future{name} at {id(self):#x} state={_STATE_NAMES[state]}{extra}>"

    def __del__(self):
        if self.node.state == FAILED and not self._retrieved:
            _report_unretrieved(self)


cdef void _report_unretrieved(Future fut):
    try:
        exc = fut._exc
        _logger.error(
            "forkwait: a future failed and nobody retrieved its exception: %s",
            repr(fut),  # a string: the record must not keep the future alive
            exc_info=(type(exc), exc, exc.__traceback__),
        )
    except BaseException:  # interpreter shutdown: logging may be gone
        pass


cdef void _call_callback(object fn, Future fut):
    try:
        fn(fut)
    except BaseException:
        try:
            _logger.exception("forkwait: exception in callback %r of %r", fn, fut)
        except BaseException:
            pass


@cython.final
cdef class _Chain:
    """The done-callback behind Future.then()."""
    cdef object callback
    cdef Future child

    def __cinit__(self, callback, Future child):
        self.callback = callback
        self.child = child

    def __call__(self, Future fut):
        try:
            value = self.callback(fut)
        except BaseException as exc:
            _finish(self.child, FAILED, None, exc)
        else:
            _finish(self.child, FINISHED, value, None)


async def _await_future(Future fut):
    if fut.node.state < FINISHED:
        import asyncio

        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def wake(_):
            def settle():
                if not waiter.done():
                    waiter.set_result(None)
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop was closed meanwhile
                pass

        fut.add_done_callback(wake)
        await waiter
    return fut._outcome()


cdef double _check_timeout(timeout) except? -2.0:
    if timeout is None:
        return -1.0
    t = float(timeout)
    if t != t:
        raise ValueError("timeout must be a number of seconds, got nan")
    return t if t > 0.0 else 0.0


# ---------------------------------------------------------------- completing

cdef bint _finish(Future fut, int state, object result, object exc,
                  bint only_pending=False) except -1:
    """Move `fut` to a final state once; run its callbacks. False if done
    already (or, with `only_pending`, if it has started)."""
    global n_running, n_completed
    cdef bint ok = False
    cdef bint unqueued = False
    cdef list callbacks = None
    fw_lock()
    if fut.node.state == PENDING or (fut.node.state == RUNNING and not only_pending):
        if fut.node.queued:
            q_unlink(&fut.node)
            unqueued = True
        if fut.node.state == RUNNING:
            r_unlink(&fut.node)
            n_running -= 1
        if fut._is_task:
            n_completed += 1
        # Old values are None: these assignments free nothing, run no code.
        fut._result = result
        fut._exc = exc
        callbacks = fut._callbacks
        fut._callbacks = None
        fut.node.state = state
        if fut.node.waiters > 0:
            fw_broadcast()
        ok = True
    fw_unlock()
    if unqueued:
        Py_DECREF(fut)  # the queue's reference; the caller still holds one
    if ok:
        fut._fn = None
        fut._args = None
        fut._kwargs = None
        if callbacks is not None:
            for cb in callbacks:
                _call_callback(cb, fut)
    return ok


cdef int _run_task(Future fut) except -1:
    """Run a claimed task in this thread and finish its future.

    Returns 1 when the task raised KeyboardInterrupt in the main thread (the
    waiter must then raise it too, so Ctrl-C is never swallowed), else 0.
    """
    global fw_cur_task, fw_wait_acc, fw_task_depth
    cdef int saved = get_local_threads()
    cdef int interrupted = 0
    cdef long long outer_task = 0
    cdef double outer_wait = 0.0, t0 = 0.0, t1
    cdef bint profiled = fw_prof_on and fut._prof_id != 0
    cdef object name
    if profiled:
        name = _task_name(fut._fn)
        outer_task = fw_cur_task
        outer_wait = fw_wait_acc
        fw_cur_task = fut._prof_id
        fw_wait_acc = 0.0
        t0 = fw_now()
    set_local_threads(fut._intra)
    fw_task_depth += 1
    try:
        if fut._kwargs is None:
            value = fut._fn(*fut._args)
        else:
            value = fut._fn(*fut._args, **fut._kwargs)
    except BaseException as exc:
        fw_task_depth -= 1
        set_local_threads(saved)
        if isinstance(exc, KeyboardInterrupt) and PyThread_get_thread_ident() == main_ident:
            interrupted = 1
        if profiled:
            t1 = fw_now()
            _record_task(fut, name, t0, t1, outer_task, outer_wait, "failed")
        _finish(fut, FAILED, None, exc)
    else:
        fw_task_depth -= 1
        set_local_threads(saved)
        if profiled:
            t1 = fw_now()
            _record_task(fut, name, t0, t1, outer_task, outer_wait, "finished")
        _finish(fut, FINISHED, value, None)
    return interrupted


cdef object _prof_sink = None   # a list that profile() owns while it records
cdef long long _prof_next_id = 0


cdef object _task_name(fn):
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__name__
    return name


cdef void _record_task(Future fut, object name, double t0, double t1,
                       long long outer_task, double outer_wait, str outcome):
    global fw_cur_task, fw_wait_acc
    cdef double waited = fw_wait_acc
    fw_cur_task = outer_task
    fw_wait_acc = outer_wait
    sink = _prof_sink
    if sink is not None:
        sink.append((
            "task", fut._prof_id, fut._prof_parent, name, fut._t_fork, fut._fork_thread,
            t0, t1, PyThread_get_thread_ident(), waited, outcome,
        ))


cdef void _prof_fork(Future fut) noexcept:
    global _prof_next_id
    _prof_next_id += 1
    fut._prof_id = _prof_next_id
    fut._prof_parent = fw_cur_task
    fut._t_fork = fw_now()
    fut._fork_thread = PyThread_get_thread_ident()


def _set_profiler(sink):
    """Start recording into the list `sink` (None stops). Returns the old one."""
    global _prof_sink, fw_prof_on
    old = _prof_sink
    _prof_sink = sink
    fw_prof_on = sink is not None
    return old


def _current_task():
    """The profiling id of the task running in this thread (0: none)."""
    return fw_cur_task


# ---------------------------------------------------------------- waiting

cdef int _next_for_waiter(Node *target, double deadline, bint helps, bint is_main,
                          Node **other) noexcept nogil:
    """Under the mutex: decide what a thread waiting on `target` does next."""
    cdef int action, timed_out
    cdef double until, now, slept_from = 0.0
    fw_lock()
    while True:
        if target.state >= FINISHED:
            action = W_DONE
            break
        if helps and q_tail != NULL:
            # Newest first: most likely a child of the task being waited on.
            other[0] = q_claim(q_tail)
            action = W_RUN
            break
        now = fw_now()
        if deadline >= 0.0 and now >= deadline:
            action = W_TIMEOUT
            break
        until = deadline
        if is_main and (until < 0.0 or until > now + SIGNAL_POLL_S):
            until = now + SIGNAL_POLL_S
        target.waiters += 1
        n_sleeping_add(1)
        if not helps:
            n_passive_add(1)
        if fw_prof_on:
            slept_from = fw_now()
        if until < 0.0:
            fw_cond_wait()
            timed_out = 0
        else:
            timed_out = fw_cond_wait_until(until)
        if fw_prof_on:
            _add_wait(fw_now() - slept_from)
        target.waiters -= 1
        n_sleeping_add(-1)
        if not helps:
            n_passive_add(-1)
        if timed_out and is_main and (deadline < 0.0 or until < deadline):
            action = W_POLL
            break
    fw_unlock()
    return action


cdef inline void _add_wait(double seconds) noexcept nogil:
    global fw_wait_acc
    fw_wait_acc += seconds


cdef inline void n_sleeping_add(int d) noexcept nogil:
    global n_sleeping
    n_sleeping += d


cdef inline void n_passive_add(int d) noexcept nogil:
    global n_passive
    n_passive += d


cdef inline void _wake_for_work() noexcept nogil:
    """A task was queued (mutex held): wake a thread that will take it.

    A signal may wake any sleeper; when some sleepers would not take work
    (waiters that do not help), wake them all so that the wake-up is not lost.
    """
    if n_sleeping > 0:
        if n_passive > 0:
            fw_broadcast()
        else:
            fw_signal()


cdef bint _too_deep():
    """True when a task run inline here could overflow the Python or C stack.

    Needs the GIL. The margin is a quarter of the recursion limit (at least
    50 frames) and STACK_MARGIN bytes of C stack (at most a quarter of it).
    """
    cdef int limit = Py_GetRecursionLimit()
    cdef int margin = limit // 4
    cdef size_t total = fw_stack_total()
    cdef size_t smargin = STACK_MARGIN
    if margin < 50:
        margin = 50
    if total != <size_t>-1 and total // 4 < smargin:
        smargin = total // 4
    return fw_py_frames_left() < margin or fw_stack_left() < smargin


cdef bint _begin_blocking() except -1:
    """This thread blocks in a wait without helping: keep the pool's capacity.

    Counts it as blocked and starts a spare thread when the spares are fewer
    than the blocked threads. False when no spare could be had (the caller
    then helps as usual, deep or not).
    """
    global n_deep, n_spares, n_spawned_spares, n_spare_failures
    cdef bint spawn = False
    fw_lock()
    if n_spares < n_deep + 1 and n_spares >= MAX_SPARES:
        fw_unlock()
        return False
    n_deep += 1
    if n_spares < n_deep:
        n_spares += 1
        n_spawned_spares += 1
        spawn = True
    fw_unlock()
    if spawn:
        # _thread, not threading: start_new_thread runs no Python code, so no
        # signal handler (Ctrl-C) can interrupt it half way and leave the
        # count wrong; either the thread exists or it raised. Such a thread
        # is never joined at exit (like a daemon thread).
        try:
            _thread.start_new_thread(_spare_main, ())
        except Exception:
            fw_lock()
            n_spares -= 1
            n_deep -= 1
            n_spare_failures += 1
            fw_unlock()
            return False
    return True


cdef void _end_blocking() noexcept nogil:
    global n_deep
    fw_lock()
    n_deep -= 1
    if n_spares > n_deep:
        fw_broadcast()  # a spare that is not needed any more retires
    fw_unlock()


cdef int _wait_done(Future fut, double timeout, bint helps) except -1:
    """Return once `fut` is done (or raise TimeoutError / KeyboardInterrupt).

    `helps`: run the future itself if it has not started, and other queued
    tasks while it runs elsewhere. Without it the caller only sleeps. A
    thread too deep to run more tasks on its stack (see the module
    docstring) does not help either; a spare thread works meanwhile.
    """
    cdef Node *node = &fut.node
    cdef bint deep = False
    if node.state >= FINISHED:
        return 0
    if helps and _too_deep() and _begin_blocking():
        helps = False
        deep = True
    if helps:
        fw_lock()
        if node.queued:
            q_claim(node)
            fw_unlock()
            Py_DECREF(fut)  # the queue's reference; our caller holds one
            _run_task(fut)
            return 0
        fw_unlock()
    if not deep:
        return _wait_loop(fut, timeout, helps)
    try:
        return _wait_loop(fut, timeout, False)
    finally:
        with nogil:
            _end_blocking()


cdef int _wait_loop(Future fut, double timeout, bint helps) except -1:
    cdef Node *other = NULL
    cdef Node *node = &fut.node
    cdef int action
    cdef double deadline = -1.0
    cdef bint is_main
    if timeout >= 0.0:
        deadline = fw_now() + timeout
    is_main = PyThread_get_thread_ident() == main_ident
    cdef double w0 = fw_now() if fw_prof_on else 0.0
    while True:
        with nogil:
            action = _next_for_waiter(node, deadline, helps, is_main, &other)
        if action == W_DONE:
            if fw_prof_on and _prof_sink is not None and w0 > 0.0:
                _prof_sink.append(
                    ("wait", fut._prof_id, w0, fw_now(), PyThread_get_thread_ident())
                )
            return 0
        if action == W_RUN:
            task = <Future>other.fut
            Py_DECREF(task)  # the queue's reference; `task` holds one
            if _run_task(task):
                raise KeyboardInterrupt
            task = None
        elif action == W_POLL:
            PyErr_CheckSignals()
        else:
            raise FuturesTimeoutError(f"future not done after {timeout:g} s")


# ---------------------------------------------------------------- workers

cdef Node *_worker_next(int slot, bint block, bint *stop) noexcept nogil:
    """Under the mutex: the next task for worker `slot`.

    NULL with ``stop[0]`` set: the worker stops (pool shrunk or exiting).
    NULL otherwise: no work and `block` was false.
    """
    global live_workers, pool_state
    cdef Node *n = NULL
    fw_lock()
    while True:
        if slot >= target_workers or pool_state == POOL_CLOSED:
            break
        if q_head != NULL:
            n = q_claim(q_head)
            fw_unlock()
            return n
        if pool_state == POOL_DRAINING:
            break
        if not block:
            fw_unlock()
            return NULL
        n_sleeping_add(1)
        fw_cond_wait()
        n_sleeping_add(-1)
    slot_alive[slot] = 0
    live_workers -= 1
    if pool_state == POOL_DRAINING and live_workers == 0:
        pool_state = POOL_CLOSED  # the queue is empty and nobody can drain it
    stop[0] = True
    fw_unlock()
    return NULL


cdef void _run_guarded(Future task):
    """Run a claimed task in a pool thread; nothing it raises ends the thread."""
    try:
        _run_task(task)
    except BaseException as exc:  # an internal failure (e.g. MemoryError)
        try:
            _finish(task, FAILED, None, exc)
            _logger.error(
                "forkwait: internal error running %r", repr(task), exc_info=True
            )
        except BaseException:
            pass


def _worker_main(int slot):
    """The loop of inter-op worker `slot` (the target of its Python thread)."""
    global live_workers
    cdef Node *n
    cdef bint stop = False
    try:
        while not stop:
            with nogil:
                n = _worker_next(slot, True, &stop)
            while n != NULL:
                task = <Future>n.fut
                Py_DECREF(task)  # the queue's reference; `task` holds one
                _run_guarded(task)
                task = None
                # Keep the GIL while there is more work: no release per task.
                n = _worker_next(slot, False, &stop)
    finally:
        if not stop:  # left by an exception: free the slot for a new worker
            fw_lock()
            slot_alive[slot] = 0
            live_workers -= 1
            fw_unlock()


cdef Node *_spare_next(bint *stop) noexcept nogil:
    """Under the mutex: the next task for a spare, or NULL and ``stop[0]``
    when it is not needed any more (no more blocked threads than spares)."""
    global n_spares
    cdef Node *n = NULL
    fw_lock()
    while True:
        if n_spares > n_deep or pool_state == POOL_CLOSED:
            break
        if q_head != NULL:
            n = q_claim(q_head)
            fw_unlock()
            return n
        n_sleeping_add(1)
        fw_cond_wait()
        n_sleeping_add(-1)
    n_spares -= 1
    stop[0] = True
    fw_unlock()
    return NULL


def _spare_main():
    """The loop of a compensating thread: run queued tasks while a thread of
    the pool is blocked too deep to help (see the module docstring)."""
    cdef Node *n
    cdef bint stop = False
    while True:
        with nogil:
            n = _spare_next(&stop)
        if stop:
            return
        task = <Future>n.fut
        Py_DECREF(task)  # the queue's reference; `task` holds one
        _run_guarded(task)
        task = None


# ---------------------------------------------------------------- public calls

def fork(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on the inter-op pool; return its Future now.

    Unlike eager ``torch.jit.fork``, the call never runs inside `fork`: it is
    queued and a pool thread (or a thread that waits on the future) runs it.
    Forked calls run at the same time when they release the GIL, as NumPy,
    BLAS and forkwait's own kernels do. The task inherits the calling
    thread's intra-op setting (``with forkwait.num_threads(n)``).

    Parameters
    ----------
    fn : callable
        The function to call.
    *args, **kwargs
        Its arguments.

    Returns
    -------
    Future
        Completed with the call's return value or exception.

    Raises
    ------
    TypeError
        If `fn` is not callable.
    RuntimeError
        If the pool has shut down (the interpreter is exiting).

    Examples
    --------
    >>> import forkwait as fw
    >>> import numpy as np
    >>> a = np.ones((64, 64))
    >>> f1 = fw.fork(np.dot, a, a)
    >>> f2 = fw.fork(np.tanh, a)
    >>> float(fw.wait(f1)[0, 0]), float(fw.wait(f2)[0, 0].round(3))
    (64.0, 0.762)
    """
    if not callable(fn):
        raise TypeError(
            f"fork() needs a callable as its first argument, got {type(fn).__name__}: "
            f"{_short_repr(fn)}"
        )
    if pool_state == POOL_IDLE:
        _start_pool()
    cdef Future fut = Future.__new__(Future)
    fut._fn = fn
    fut._args = args
    fut._kwargs = kwargs if kwargs else None
    fut._intra = get_local_threads()
    fut._is_task = True
    if fw_prof_on:
        _prof_fork(fut)
    Py_INCREF(fut)  # owned by the queue while linked
    fw_lock()
    # While the pool drains at exit, a running task may still fork (its
    # children run before the workers stop); nothing else may.
    if pool_state == POOL_RUNNING or (
        pool_state == POOL_DRAINING and fw_task_depth > 0 and live_workers > 0
    ):
        q_push(&fut.node)
        _wake_for_work()
        fw_unlock()
        return fut
    fw_unlock()
    Py_DECREF(fut)
    fut._fn = fut._args = fut._kwargs = None
    _refuse_fork()


cdef _refuse_fork():
    raise RuntimeError(
        "forkwait's inter-op pool has shut down (the interpreter is exiting); "
        "fork() is not possible any more. Wait on your futures before the main "
        "thread ends, or run the call directly."
    )


def wait(fut):
    """Wait for a future and return its value, as ``torch.jit.wait``.

    If the forked call has not started yet, the waiting thread runs it; if it
    is running elsewhere, the waiting thread runs other queued tasks
    meanwhile. So a task may fork and wait on its own children to any depth,
    with any pool size, without deadlock. In the main thread Ctrl-C
    interrupts the wait.

    Parameters
    ----------
    fut : Future

    Returns
    -------
    object
        The call's return value.

    Raises
    ------
    BaseException
        The exception the call raised: the same object, whose traceback
        holds the call's own frames.
    concurrent.futures.CancelledError
        If the future was cancelled.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.wait(fw.fork(divmod, 17, 5))
    (3, 2)
    """
    if type(fut) is not Future:
        raise TypeError(f"wait() needs a forkwait.Future, got {type(fut).__name__}")
    cdef Future f = <Future>fut
    _wait_done(f, -1.0, True)
    return f._outcome()


def wait_all(futures):
    """Wait for every future and return their values, in order.

    As ``torch.futures.wait_all``: if a future failed, its exception is raised
    (the first failure in list order) and the values are lost.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.wait_all([fw.fork(abs, -i) for i in range(4)])
    [0, 1, 2, 3]
    """
    cdef list futs = _as_future_list(futures, "wait_all")
    cdef list out = []
    cdef Future f
    for f in futs:
        _wait_done(f, -1.0, True)
        out.append(f._outcome())
    return out


@cython.final
cdef class _Collector:
    cdef Future out
    cdef list futs
    cdef Py_ssize_t remaining

    def __call__(self, Future f):
        # Runs with the GIL and calls nothing that could release it between
        # the read and the write of `remaining`.
        self.remaining -= 1
        if f.node.state == FAILED and not self.out.done():
            f._retrieved = True
            _finish(self.out, FAILED, None, f._exc)
        elif f.node.state == CANCELLED and not self.out.done():
            _finish(self.out, FAILED, None, CancelledError("a collected future was cancelled"))
        if self.remaining == 0:
            _finish(self.out, FINISHED, self.futs, None)


def collect_all(futures):
    """A Future that completes when all `futures` are done, as in torch.

    Its value is the list of the given futures. If one of them fails, the
    collected future fails with that exception (the first to fail).

    Examples
    --------
    >>> import forkwait as fw
    >>> futs = [fw.fork(pow, 2, i) for i in range(5)]
    >>> [f.value() for f in fw.collect_all(futs).wait()]
    [1, 2, 4, 8, 16]
    """
    cdef list futs = _as_future_list(futures, "collect_all")
    cdef Future out = Future()
    cdef _Collector coll = _Collector.__new__(_Collector)
    cdef Future f
    coll.out = out
    coll.futs = futs
    coll.remaining = len(futs)
    if not futs:
        _finish(out, FINISHED, futs, None)
        return out
    for f in futs:
        f.add_done_callback(coll)
    return out


cdef list _as_future_list(futures, str caller):
    try:
        futs = list(futures)
    except TypeError:
        raise TypeError(
            f"{caller}() needs an iterable of forkwait.Future, got {type(futures).__name__}"
        ) from None
    for i, f in enumerate(futs):
        if type(f) is not Future:
            raise TypeError(
                f"{caller}() needs forkwait.Future items; item {i} is {type(f).__name__}"
            )
    return futs


cdef str _short_repr(obj):
    r = repr(obj)
    return r if len(r) <= 80 else r[:77] + "..."


# ---------------------------------------------------------------- pool control

_spawn_lock = threading.Lock()
_atexit_registered = False


def _start_pool():
    """Start the workers (first fork), or refuse once the pool has shut down."""
    global pool_state, _atexit_registered
    with _spawn_lock:
        if pool_state >= POOL_DRAINING:
            _refuse_fork()
        if not _atexit_registered:
            threading._register_atexit(_shutdown_at_exit)
            _atexit_registered = True
        pool_state = POOL_RUNNING
        _spawn_missing()


cdef _spawn_missing():
    """Start a worker for every slot below the target that has none (spawn lock held)."""
    global live_workers
    cdef int slot
    cdef bint start
    for slot in range(MAX_INTEROP):
        fw_lock()
        if slot >= target_workers:
            fw_unlock()
            break
        start = not slot_alive[slot]
        if start:
            slot_alive[slot] = 1
            live_workers += 1
        fw_unlock()
        if start:
            t = threading.Thread(
                target=_worker_main, args=(slot,), name=f"forkwait-interop-{slot}",
                daemon=False,
            )
            try:
                t.start()
            except BaseException:
                fw_lock()
                slot_alive[slot] = 0
                live_workers -= 1
                fw_unlock()
                raise


def _set_interop_threads(int n):
    """Resize the pool: growing starts workers now, shrinking stops the extra
    ones when they finish their current task."""
    global target_workers
    fw_lock()
    target_workers = n
    fw_broadcast()
    fw_unlock()
    if pool_state == POOL_RUNNING:
        with _spawn_lock:
            if pool_state == POOL_RUNNING:
                _spawn_missing()


def _get_interop_threads():
    return target_workers


def _shutdown_at_exit():
    """threading's at-exit hook: queued tasks still run, then the workers stop.

    Called before the interpreter joins its non-daemon threads (which include
    the workers), as concurrent.futures does. From here on only a running
    task may fork (so that queued fork trees complete); anything else gets
    RuntimeError. Queued tasks are never dropped: where no worker runs (the
    child of os.fork() before its first fork), workers start to drain them.
    """
    global pool_state
    cdef bint start
    with _spawn_lock:
        fw_lock()
        start = pool_state == POOL_IDLE and q_head != NULL
        if start:
            pool_state = POOL_RUNNING
        fw_unlock()
        if start:
            try:
                _spawn_missing()
            except BaseException:
                pass
        fw_lock()
        pool_state = POOL_DRAINING if live_workers > 0 else POOL_CLOSED
        fw_broadcast()
        fw_unlock()


def _now():
    """The pool's clock (monotonic seconds), as used in profile records."""
    return fw_now()


def _stats():
    """A snapshot of the pool for parallel_info() and tests."""
    fw_lock()
    d = (q_len, n_running, n_sleeping, live_workers, target_workers, pool_state,
         n_spares, n_deep, n_completed, n_spawned_spares, n_spare_failures)
    fw_unlock()
    return {
        "queued": d[0], "running": d[1], "sleeping": d[2], "workers": d[3],
        "target": d[4],
        "state": ("idle", "running", "draining", "closed")[d[5]],
        "spares": d[6], "blocked_deep": d[7], "completed": d[8],
        "spares_started": d[9], "spare_failures": d[10],
    }


# ---------------------------------------------------------------- os.fork()

def _before_fork():
    fw_lock()


def _after_fork_parent():
    fw_unlock()


def _after_fork_child():
    """The child has only the thread that forked: reset the pool around it.

    Queued tasks stay queued (the child's pool starts at its next fork; a wait
    runs them inline meanwhile; at exit they are drained). Tasks that other
    threads of the parent were running, in a worker, a spare or inline in a
    wait, cannot finish in the child: their futures fail with RuntimeError.
    The forking thread's own running tasks (os.fork() called from a task)
    carry on. (The intra-op runtime has its own at-fork handler, see
    docs/reliability.md on GCC bug 60035.)
    """
    global pool_state, live_workers, n_sleeping, n_passive, n_running, main_ident
    global _spawn_lock, n_deep, n_spares, r_head
    cdef int slot
    cdef list orphans = []
    cdef Node *n
    cdef Node *keep = NULL
    cdef Node *nxt
    cdef unsigned long me = fw_thread_id()
    fw_sync_init()
    main_ident = PyThread_get_thread_ident()
    _spawn_lock = threading.Lock()
    # Split the running list: this thread's tasks stay, the others are orphans.
    n = r_head
    r_head = NULL
    while n != NULL:
        nxt = n.next
        n.prev = NULL
        n.next = NULL
        if n.runner == me:
            n.next = r_head
            if r_head != NULL:
                r_head.prev = n
            r_head = n
        else:
            n.next = keep
            keep = n  # a private list of orphans, linked through next
        n = nxt
    n_running = 0
    n = r_head
    while n != NULL:
        n_running += 1
        n = n.next
    n = keep
    while n != NULL:
        nxt = n.next
        n.next = NULL
        n.state = PENDING  # so that _finish takes it without unlinking it
        orphans.append(<Future>n.fut)
        n = nxt
    for slot in range(MAX_INTEROP):
        slot_alive[slot] = 0
    live_workers = 0
    n_sleeping = 0
    n_passive = 0
    n_deep = 0
    n_spares = 0
    if pool_state == POOL_RUNNING:
        pool_state = POOL_IDLE
    for fut in orphans:
        _finish(fut, FAILED, None, RuntimeError(
            "this task was running in another thread of the parent process when "
            "os.fork() was called; the child process has no copy of that thread"
        ))


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_parent,
    after_in_child=_after_fork_child,
)
