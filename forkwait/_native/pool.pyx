"""The inter-op pool: a work-stealing scheduler and the Future core.

Scheduling (``_fw_sched.h`` holds the C core and its locking rules):

- Every pool thread (worker or compensating spare) owns a deque. A fork made
  by a task on a pool thread goes on that thread's deque; the owner takes
  its newest task first, idle threads steal the oldest. Forks from any other
  thread go to a shared injection queue.
- Idle pool threads look for work for a few microseconds, then sleep. A fork
  wakes one only when none is awake and none is already being woken, so a
  fork into a busy pool costs no system call (Rayon's sleep rule).
- A pool thread claims a task only while it holds the GIL (it needs it to
  run the task anyway), so a thread that forks and then waits finds its
  task still queued and runs it itself, with no hand-off.

Waiting (the isolation rule of docs/guide.md): a wait on future X runs X in
the waiting thread if X has not started; while X runs elsewhere, the waiter
runs only queued tasks of X's own subtree (forked by X or its descendants),
never unrelated work: "leapfrogging" (Wagner and Calder). Timed waits help
the same way. A wait that would close a cycle (a task waiting on itself, or
A on B while B waits on A) raises RuntimeError.

Deep nesting: a waiting thread near Python's recursion limit or the end of
its C stack runs nothing more inline. It blocks, and the pool starts a
compensating thread for as long as it is blocked (Java's ForkJoinPool's
managed blocking), so progress never depends on a blocked thread.

Completion is iterative: a future's callbacks, and the ``then`` chains they
complete, run in a loop in the completing thread, never by recursion.

Life in the process: at interpreter exit the queued tasks still run, after
which ``fork`` raises RuntimeError. ``os.fork()``: pthread_atfork handlers
hold the pool's locks only inside fork() itself; the child resets the pool
around its one thread, starts workers for the tasks queued at the fork, and
fails the tasks that other threads of the parent were running.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.pythread cimport PyThread_get_thread_ident

from forkwait._native._atomic cimport FW_ADD as _fw_add_int, FW_ADDLL as _fw_add_ll, fw_cas_int
from forkwait._native._blas cimport blas_atfork_child, blas_tasks
from forkwait._native._team cimport get_local_threads, set_local_threads, team_atfork_child

import _thread
import collections
import concurrent.futures as _cf
import logging
import os
import threading
import types
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FuturesTimeoutError

cdef extern from "Python.h":
    void PyObject_GC_Track(object op)
    void PyObject_GC_UnTrack(object op)
    int PyObject_GC_IsTracked(object op)
    int PyObject_IS_GC(object op)
    object PyContext_CopyCurrent()
    int PyContext_Enter(object ctx) except -1
    int PyContext_Exit(object ctx) except -1
    int Py_AddPendingCall(int (*func)(void *) noexcept, void *arg)
    int Py_GetRecursionLimit()

cdef extern from "_fw_sched.h" nogil:
    enum:
        FW_MAX_INTEROP
        FW_MAX_SPARES
        FW_PENDING
        FW_RUNNING
        FW_FINISHED
        FW_FAILED
        FW_CANCELLED
        FW_POOL_IDLE
        FW_POOL_RUNNING
        FW_POOL_DRAINING
        FW_POOL_CLOSED
        FW_W_DONE
        FW_W_RESCAN
        FW_W_POLL
        FW_W_TIMEOUT
        FW_W_CYCLE

    ctypedef struct fw_gil_free_call:
        void (*run)(fw_gil_free_call *c) noexcept nogil
        int intra
    const char *FW_GIL_FREE_CAPSULE

    ctypedef struct fw_queue:
        Py_ssize_t len
    ctypedef struct fw_thread:
        pass
    ctypedef struct fw_node:
        fw_node *parent
        fw_thread *runner
        int state
        int depth
        int waiters
        int help_waiters
        int cf_watched
        int cb_adders
        int is_task
        int live_children
        long long mark
        fw_gil_free_call *gil_free
        fw_node *next

    ctypedef struct pthread_mutex_t:
        pass

    ctypedef struct fw_pool:
        pthread_mutex_t sleep_lock
        pthread_mutex_t cb_lock
        fw_queue inject
        int n_slots
        int sleepers
        int searching
        int target_workers
        int live_workers
        int state
        int n_deep
        int n_spares
        long long n_running
        long long n_running_pool
        long long n_completed
        long long n_spawned_spares
        long long n_spare_failures
        long long n_steals
        long long n_helped
        int n_kernels
        int n_kernels_out
        long long n_gil_free
        char *slot_alive
        char *slot_used

    fw_pool fw_P

    int FW_LOAD(...)
    long long FW_LOADLL "FW_LOAD"(...)
    void FW_STORE(...)
    void FW_ADD(...)

    int fw_sched_init()
    void fw_lock(pthread_mutex_t *m)
    void fw_unlock(pthread_mutex_t *m)
    double fw_now()
    fw_thread *fw_me_get()
    int fw_get_slot()
    void fw_set_slot(int s)
    PyObject *fw_get_cur()
    void fw_set_cur(PyObject *f)
    int fw_task_depth
    Py_ssize_t fw_node_offset
    PyObject *FW_FUT_OF(fw_node *n)
    int fw_push(fw_node *n)
    int fw_claim_node(fw_node *n, int to_state)
    fw_node *fw_find_work(int slot)
    int fw_any_work()
    fw_node *fw_claim_subtree(const fw_node *root, long long mark)
    void fw_notify_helpers(const fw_node *parent)
    void fw_notify_work()
    void fw_notify_pushed()
    void fw_notify_pushed_gil_free()
    long long fw_stats_running()
    long long fw_stats_completed()
    void fw_tickle()
    void fw_wake_all_idle()
    int fw_idle(int worker_index, int spare)
    fw_node *fw_find_gil_free_work(int slot)
    void fw_defer_push(fw_node *n)
    fw_node *fw_defer_take_all()
    int fw_any_deferred()
    double FW_GIL_FREE_SPIN_S
    int fw_spin_until_done(fw_node *n, double seconds, double deadline)
    void fw_searching_done()
    int fw_sleep_wait(fw_node *target, double deadline, double poll_s,
                      fw_node *help_node, unsigned long long epoch,
                      int check_cycle, double *slept)
    unsigned long long fw_help_begin(fw_node *n)
    void fw_help_end(fw_node *n)
    void fw_wake_waiters(fw_node *n)
    int fw_settle(fw_node *n, int final_state, int from_running)
    int fw_cas_state(fw_node *n, int frm, int to)
    int fw_slot_acquire(int want)
    Py_ssize_t fw_child_reset(fw_node ***out)
    void free(void *p)
    int fw_stack_low(size_t margin)
    int fw_prof_on
    long long fw_cur_task
    double fw_wait_acc

cdef extern from "_fw_sched.h":
    int fw_recursion_low(int py_margin)

_logger = logging.getLogger("forkwait")

cdef extern from "<pthread.h>" nogil:
    int pthread_atfork(void (*prepare)() noexcept nogil, void (*parent)() noexcept nogil,
                       void (*child)() noexcept nogil)

cdef extern from "_fw_sched.h" nogil:
    void fw_atfork_prepare()
    void fw_atfork_parent()
    void fw_atfork_child()


cdef void _atfork_child() noexcept nogil:
    """The one C-level child handler of os.fork(): each native module's
    reset, in this order: the pool (its locks), the intra-op teams, BLAS."""
    fw_atfork_child()
    team_atfork_child()
    blas_atfork_child()


if fw_sched_init() != 0 or pthread_atfork(fw_atfork_prepare, fw_atfork_parent,
                                          _atfork_child) != 0:
    raise ImportError("forkwait: could not set up the pool (pthread_atfork failed)")

MAX_INTEROP_THREADS = FW_MAX_INTEROP
# A deep waiter blocks when fewer C stack bytes than this are left
# (or a quarter of the thread's stack, when that is smaller).
DEF STACK_MARGIN = 512 * 1024
# The main thread wakes this often while it waits, so that Ctrl-C is seen.
cdef double SIGNAL_POLL_S = 0.05

cdef tuple _STATE_NAMES = ("pending", "running", "finished", "finished", "cancelled")
cdef tuple _CF_STATES = ("PENDING", "RUNNING", "FINISHED", "FINISHED", "CANCELLED_AND_NOTIFIED")
cdef unsigned long main_ident = PyThread_get_thread_ident()
cdef long long _wait_tokens = 0


class InvalidStateError(_cf.InvalidStateError, RuntimeError):
    """A future was completed twice, or read before it was done.

    It is both :class:`concurrent.futures.InvalidStateError` (what the
    standard library raises) and :class:`RuntimeError` (what torch raises),
    so either ``except`` clause catches it.

    Examples
    --------
    >>> import forkwait as fw
    >>> f = fw.Future()
    >>> f.set_result(1)
    >>> try:
    ...     f.set_result(2)
    ... except RuntimeError as exc:
    ...     print(type(exc).__name__)
    InvalidStateError
    """


# The lock that concurrent.futures.wait/as_completed take as `_condition`
# of every forkwait future (one re-entrant lock for all, not one per future).
_cf_lock = threading.RLock()


# ---------------------------------------------------------------- the Future

cdef class FutureCore:
    """The C-level part of :class:`Future` (see there)."""

    # _result and _exc first, then node (its state first): next to the object
    # header, in its cache line, for wait_all's pass over many futures
    cdef object _result
    cdef object _exc
    cdef fw_node node
    cdef object _fn
    cdef tuple _args        # None: the call's positional arguments are _a0, _a1
    cdef dict _kwargs
    cdef object _a0          # up to two positional arguments of a call without
    cdef object _a1          # keywords, kept here instead of in a tuple
    cdef int _nargs
    cdef object _ctx        # the context it runs in; a GIL-free call's capsule instead
    cdef object _callbacks   # None, one callable, or a list of them
    cdef list _cf_waiters
    cdef FutureCore _parent
    cdef int _intra
    cdef int _completing
    cdef _FailureGuard _guard  # set while a failure is not retrieved
    # profiling (only set while forkwait.profile() records)
    cdef long long _prof_id
    cdef long long _prof_parent
    cdef double _t_fork
    cdef unsigned long _fork_thread
    cdef object __weakref__

    # No __cinit__: a new object is zeroed (node.state is FW_PENDING, 0), and
    # the node finds its Future by its offset (FW_FUT_OF).

    def __init__(self):
        pass

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
        return FW_LOAD(&self.node.state) >= FW_FINISHED

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
        return FW_LOAD(&self.node.state) == FW_RUNNING

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
        return FW_LOAD(&self.node.state) == FW_CANCELLED

    # -- waiting and values ------------------------------------------------
    def wait(self, timeout=None):
        """Block until done and return the value (see :func:`forkwait.wait`).

        Examples
        --------
        >>> import forkwait as fw
        >>> fw.fork(pow, 2, 10).wait()
        1024
        """
        _wait_done(self, _check_timeout(timeout))
        return self._outcome()

    def value(self):
        """The value of a future that is done; re-raises its exception.

        Raises
        ------
        forkwait.InvalidStateError
            If the future is not done yet: call :meth:`wait` first.

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.fork(len, "abc")
        >>> _ = f.wait()
        >>> f.value()
        3
        """
        cdef int state = FW_LOAD(&self.node.state)
        if state < FW_FINISHED:
            raise InvalidStateError(
                f"value() called on a {_STATE_NAMES[state]} future: "
                "call wait() first, or use then()/add_done_callback()"
            )
        return self._outcome()

    def result(self, timeout=None):
        """The value, waiting at most `timeout` seconds (``concurrent.futures``).

        The wait helps as :func:`forkwait.wait` does (it runs the call itself
        if it has not started, and tasks of its subtree meanwhile) until the
        deadline.

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
        _wait_done(self, _check_timeout(timeout))
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
        _wait_done(self, _check_timeout(timeout))
        if FW_LOAD(&self.node.state) == FW_CANCELLED:
            raise CancelledError()
        _mark_retrieved(self)
        return self._exc

    cdef object _outcome(self):
        cdef int state = FW_LOAD(&self.node.state)
        if state == FW_FINISHED:
            return self._result
        if state == FW_FAILED:
            _mark_retrieved(self)
            raise self._exc
        if state == FW_CANCELLED:
            raise CancelledError()
        raise InvalidStateError("future is not done")  # unreachable after a wait

    def __await__(self):
        """``await fut`` in asyncio: the event loop keeps running meanwhile.

        Cancelling the awaiting task cancels the future if it has not
        started; awaiting a cancelled future raises ``asyncio.CancelledError``.
        """
        import asyncio

        return asyncio.wrap_future(self).__await__()

    # -- completion by hand --------------------------------------------------
    def set_result(self, result):
        """Complete a future made with ``Future()`` with `result`.

        Raises
        ------
        forkwait.InvalidStateError
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
        if not _complete_manual(self, FW_FINISHED, result, None):
            raise InvalidStateError(
                f"set_result() on a future that is already {self._state_name()}"
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
        if not _complete_manual(self, FW_FAILED, None, exception):
            raise InvalidStateError(
                f"set_exception() on a future that is already {self._state_name()}"
            )

    def set_running_or_notify_cancel(self):
        """Mark a hand-made future running; False if it was cancelled.

        As ``concurrent.futures.Future.set_running_or_notify_cancel``: code
        that completes futures by hand calls it before starting the work.

        Raises
        ------
        forkwait.InvalidStateError
            If the future is already running or done (other than cancelled).

        Examples
        --------
        >>> import forkwait as fw
        >>> f = fw.Future()
        >>> f.set_running_or_notify_cancel(), f.running()
        (True, True)
        """
        self._check_manual("set_running_or_notify_cancel")
        if fw_cas_state(&self.node, FW_PENDING, FW_RUNNING):
            return True
        if FW_LOAD(&self.node.state) == FW_CANCELLED:
            return False
        raise InvalidStateError(
            f"set_running_or_notify_cancel() on a future that is {self._state_name()}"
        )

    cdef _check_manual(self, str what):
        if self.node.is_task:
            raise InvalidStateError(
                f"{what}() on a future that belongs to a forked task; only futures "
                "made with Future() are completed by hand"
            )

    cdef str _state_name(self):
        return _STATE_NAMES[FW_LOAD(&self.node.state)]

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
        cdef int state = FW_LOAD(&self.node.state)
        if state == FW_CANCELLED:
            return True
        if state != FW_PENDING:
            return False
        if self.node.is_task:
            if not fw_claim_node(&self.node, FW_CANCELLED):
                return FW_LOAD(&self.node.state) == FW_CANCELLED
            _gc_retrack(self)
            Py_DECREF(self)  # the queue's reference; our caller holds one
            FW_ADD(&fw_P.n_completed, 1)
            _after_final(self)
            return True
        return _complete_manual(self, FW_CANCELLED, None, None)

    # -- callbacks -------------------------------------------------------------
    def add_done_callback(self, fn):
        """Call ``fn(future)`` once when the future is done.

        It runs in the thread that completes the future, after the future's
        state is final, or at once in the calling thread if it is done
        already. An ``Exception`` raised by `fn` is logged (logger
        ``forkwait``), never raised into that thread; ``KeyboardInterrupt``
        and ``SystemExit`` go through, as in ``concurrent.futures``.

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
        if not self._add_callback(fn):
            _run_callbacks(self, fn)

    cdef bint _add_callback(self, fn) except -1:
        """Append `fn` unless the future is done (then False). The first
        callback is kept as it is; a list is made for a second one."""
        cdef object cbs
        cdef list more = None
        # Before reading the state (Dekker with _after_final: the completer
        # settles the state, then reads cb_adders; both seq_cst)
        FW_ADD(&self.node.cb_adders, 1)
        while True:
            cbs = self._callbacks
            if cbs is not None and type(cbs) is not list:
                more = [cbs, fn]  # allocated outside the lock
            fw_lock(&fw_P.cb_lock)
            if FW_LOAD(&self.node.state) >= FW_FINISHED:
                fw_unlock(&fw_P.cb_lock)
                return False
            if self._callbacks is not cbs:  # changed meanwhile: try again
                fw_unlock(&fw_P.cb_lock)
                continue
            if cbs is None:
                self._callbacks = fn
            elif more is not None:
                self._callbacks = more
            else:
                (<list>cbs).append(fn)
            fw_unlock(&fw_P.cb_lock)
            return True

    def then(self, callback):
        """A new Future with the value of ``callback(self)``, once this is done.

        As ``torch.futures.Future.then``: `callback` runs in the thread that
        completes this future (or now, if it is done already), in the
        ``contextvars`` context of the caller of ``then``; if it raises, the
        returned future fails with that exception (torch wraps it in
        RuntimeError; forkwait keeps it as it is).

        Examples
        --------
        >>> import forkwait as fw
        >>> fw.fork(pow, 3, 2).then(lambda f: f.value() + 1).wait()
        10
        """
        if not callable(callback):
            raise TypeError(f"then() needs a callable, got {type(callback).__name__}")
        cdef FutureCore child = _new_future()
        cdef _Chain chain = _Chain.__new__(_Chain)
        chain.callback = callback
        chain.child = child
        chain.ctx = PyContext_CopyCurrent()
        self.add_done_callback(chain)
        return child

    # -- concurrent.futures' waiter protocol -----------------------------------
    @property
    def _condition(self):
        # concurrent.futures.wait/as_completed take this lock before they read
        # _state and install a waiter; the flag makes the completing thread
        # take it too (only for futures that were ever watched this way).
        FW_STORE(&self.node.cf_watched, 1)
        return _cf_lock

    @property
    def _state(self):
        return _CF_STATES[FW_LOAD(&self.node.state)]

    @property
    def _waiters(self):
        FW_STORE(&self.node.cf_watched, 1)
        if self._cf_waiters is None:
            self._cf_waiters = []
        return self._cf_waiters

    @property
    def _exception(self):
        return self._exc

    # -- reporting -------------------------------------------------------------
    def __repr__(self):
        cdef int state = FW_LOAD(&self.node.state)
        extra = ""
        if state == FW_FINISHED:
            extra = f" returned {type(self._result).__name__}"
        elif state == FW_FAILED:
            extra = f" raised {type(self._exc).__name__}"
        name = ""
        if self._fn is not None:
            name = " " + _task_name(self._fn)
        return f"<forkwait.Future{name} at {id(self):#x} state={_STATE_NAMES[state]}{extra}>"


@cython.final
cdef class _FailureGuard:
    """Reports a failure that nobody retrieved when its future dies.

    Only a failed future has one (asyncio's old ``_TracebackLogger`` design),
    so the other futures have no finalizer at all: a finalizer on the Future
    type would cost every fork a finalizer call at deallocation. Its
    ``__del__`` runs as tp_finalize, before the cyclic GC clears anything in
    a cycle, so the exception it holds is intact (and kept alive by the
    report)."""
    cdef object exc
    cdef size_t addr

    def __del__(self):
        if self.exc is not None:
            _defer_unretrieved_report(self.addr, self.exc)
            self.exc = None


cdef inline int _arm_guard(FutureCore fut, object exc) except -1:
    """Before `fut` is seen failed: report `exc` if nobody retrieves it."""
    cdef _FailureGuard g = _FailureGuard.__new__(_FailureGuard)
    g.exc = exc
    g.addr = <size_t><void *>fut
    fut._guard = g
    return 0


cdef inline void _mark_retrieved(FutureCore fut):
    """The failure of `fut` was seen by the user (or never happened, when a
    hand-made future's completion lost a race): nothing to report."""
    cdef _FailureGuard g = fut._guard
    if g is not None:
        g.exc = None
        fut._guard = None


class Future(FutureCore, _cf.Future):
    """The result of an asynchronous call, as in ``torch.futures.Future``.

    A `Future` comes from :func:`fork` (it then belongs to a forked task) or
    from ``Future()`` (it is then completed by hand with :meth:`set_result` or
    :meth:`set_exception`). It goes from pending to running to finished,
    failed or cancelled, exactly once.

    It is a :class:`concurrent.futures.Future`, so it goes wherever one goes:
    ``concurrent.futures.wait`` and ``as_completed``, ``asyncio.wrap_future``
    and ``await``.

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
    >>> import concurrent.futures
    >>> isinstance(fut, concurrent.futures.Future)
    True
    """

    __class_getitem__ = classmethod(types.GenericAlias)

    def __setattr__(self, name, value):
        # A forked task's future stays out of the cyclic GC while it holds no
        # reference that could close a cycle (see _track_if_needed); an
        # attribute of the user's may, so setting one puts it back under the GC.
        _gc_track_self(self)
        object.__setattr__(self, name, value)


cdef object _FutureType = Future


cdef _set_node_offset():
    global fw_node_offset
    cdef FutureCore probe = FutureCore.__new__(FutureCore)
    fw_node_offset = <char *>&probe.node - <char *><PyObject *>probe
    assert <PyObject *>FW_FUT_OF(&probe.node) == <PyObject *>probe


_set_node_offset()


cdef extern from *:
    """
    /* A free list of Future objects' memory (CPython keeps such lists for
     * its own small objects: tuples, floats, frames). Future's tp_free puts
     * the memory of an exact Future here instead of freeing it, and its
     * tp_alloc takes it back: the GC header and pre-header stay as the
     * dealloc left them (untracked, no dict), so a reuse skips the
     * allocator, the GC's link and unlink and their counters (which stay
     * balanced: counted at the first allocation, uncounted at the last
     * free). The GIL guards it: objects are only made and freed with it.
     * Off when the type has a finalizer (a reused object would keep the
     * GC header's "finalized" mark). */
    #define FW_FREE_MAX 256
    static PyTypeObject *fw_fl_type = NULL;
    static void *fw_fl[FW_FREE_MAX];
    static int fw_fl_n = 0;

    static int fw_fl_untracked = 0;  /* fork's allocation: leave it out of the GC */

    static PyObject *fw_future_alloc(PyTypeObject *t, Py_ssize_t nitems) {
        PyObject *o;
        if (t != fw_fl_type || fw_fl_n == 0 || nitems != 0)
            return PyType_GenericAlloc(t, nitems);  /* tracked: fw_new_untracked sees to it */
        o = (PyObject *)fw_fl[--fw_fl_n];
        memset(o, 0, (size_t)t->tp_basicsize);
        PyObject_Init(o, t);   /* the type (a heap type: a reference) and refcount 1 */
        if (!fw_fl_untracked)
            PyObject_GC_Track(o);  /* as PyType_GenericAlloc leaves it */
        return o;
    }

    static void fw_future_free(void *o) {
        if (Py_TYPE((PyObject *)o) == fw_fl_type && fw_fl_n < FW_FREE_MAX) {
            fw_fl[fw_fl_n++] = o;
            return;
        }
        PyObject_GC_Del(o);
    }

    /* Future's dealloc. The class statement gives it CPython's generic
     * subtype_dealloc, which looks for finalizers, slots and weak references
     * that Future does not have, then calls FutureCore's; this does only
     * what Future needs: the trashcan (long chains of futures die without
     * deep recursion), the instance dict, FutureCore's dealloc, the type's
     * reference. A subclass keeps subtype_dealloc, which calls this one as
     * its base's (then only FutureCore's part and the reference are left). */
    static destructor fw_core_dealloc = NULL;

    static void fw_future_dealloc(PyObject *self) {
        PyTypeObject *type = Py_TYPE(self);
        PyObject **dp;
        if (type != fw_fl_type) {
            fw_core_dealloc(self);
            Py_DECREF(type);   /* subtype_dealloc leaves it to a heap base */
            return;
        }
        PyObject_GC_UnTrack(self);
        Py_TRASHCAN_BEGIN(self, fw_future_dealloc)
        dp = _PyObject_GetDictPtr(self);
        if (dp != NULL && *dp != NULL) Py_CLEAR(*dp);
        fw_core_dealloc(self);
        Py_DECREF(type);
        Py_TRASHCAN_END
    }

    static void fw_future_install(PyObject *type) {
        PyTypeObject *t = (PyTypeObject *)type;
    #ifdef Py_GIL_DISABLED
        return;  /* the list and the flag below lean on the GIL */
    #endif
        if (t->tp_finalize != NULL || t->tp_del != NULL || t->tp_free != PyObject_GC_Del ||
            t->tp_alloc != PyType_GenericAlloc || t->tp_itemsize != 0 ||
            !(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_base == NULL)
            return;
        fw_fl_type = t;
        t->tp_alloc = fw_future_alloc;
        t->tp_free = fw_future_free;
    #if PY_VERSION_HEX < 0x030E0000
        /* only where the dict pointer call is known (3.11-3.13), and only
         * over the dealloc this was written against: weak references and
         * everything else in FutureCore's own */
        if (t->tp_base->tp_weaklistoffset != 0 && t->tp_weaklistoffset == t->tp_base->tp_weaklistoffset
                && t->tp_base->tp_dealloc != NULL && !(t->tp_base->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            fw_core_dealloc = t->tp_base->tp_dealloc;
            t->tp_dealloc = fw_future_dealloc;
        }
    #endif
    }
    """
    void fw_future_install(object type)


fw_future_install(Future)


cdef extern from *:
    """
    static PyObject *fw_empty_tuple = NULL;
    static inline PyObject *fw_new_of(PyObject *type) {
        if (fw_empty_tuple == NULL && (fw_empty_tuple = PyTuple_New(0)) == NULL) return NULL;
        return ((PyTypeObject *)type)->tp_new((PyTypeObject *)type, fw_empty_tuple, NULL);
    }
    /* fw_new_of(Future), the object not tracked by the GC (fork's): memory
     * from the free list is never tracked; fresh memory (or no list) is
     * untracked after */
    static inline PyObject *fw_new_untracked(PyObject *type) {
        PyObject *o;
        fw_fl_untracked = 1;
        o = fw_new_of(type);
        fw_fl_untracked = 0;
        if (o != NULL && PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
        return o;
    }
    """
    object fw_new_of(object type)
    object fw_new_untracked(object type)


cdef inline FutureCore _new_future():
    # The type's tp_new slot directly (FutureCore.__new__(Future) would look
    # up and call __new__ through a wrapper on every fork).
    return <FutureCore>fw_new_of(_FutureType)


cdef inline FutureCore _new_task_future():
    # A forked task's: out of the cyclic GC from the start (see _fork_impl).
    return <FutureCore>fw_new_untracked(_FutureType)


# ---------------------------------------------------------------- reports

cdef list _unretrieved = []
cdef bint _report_scheduled = False


cdef int _report_pending(void *arg) noexcept with gil:
    global _report_scheduled
    _report_scheduled = False
    _flush_unretrieved()
    return 0


def _flush_unretrieved():
    """Log the failures collected by finalizers (a safe point, not a finalizer)."""
    global _unretrieved
    items = _unretrieved
    _unretrieved = []
    for text, exc in items:
        try:
            _logger.error(
                "forkwait: a future failed and nobody retrieved its exception: %s",
                text, exc_info=(type(exc), exc, exc.__traceback__),
            )
        except BaseException:  # interpreter shutdown: logging may be gone
            pass


cdef void _defer_unretrieved_report(size_t addr, object exc):
    """From a dying future: keep the failure and log it later, at a safe point.

    Formatting a traceback while an object is collected runs arbitrary code
    (linecache, and on CPython 3.11 even ast.parse) in the middle of whatever
    the collecting thread was doing, which broke an ast.parse running there.
    """
    global _report_scheduled
    try:
        _unretrieved.append((
            f"<forkwait.Future at {addr:#x} state=finished raised {type(exc).__name__}>", exc,
        ))
        if not _report_scheduled:
            if Py_AddPendingCall(_report_pending, NULL) == 0:
                _report_scheduled = True
    except BaseException:
        pass


# ---------------------------------------------------------------- completing

cdef extern from *:
    """
    /* Per thread: 1 while _run_callbacks runs here, and the completions that
     * callbacks caused meanwhile (a deque, made on the first one). */
    static __thread int fw_draining = 0;
    static __thread PyObject *fw_drain_queue = NULL;
    """
    int fw_draining
    PyObject *fw_drain_queue


cdef inline int _invoke(object fn, FutureCore fut) except -1:
    # forkwait's own callbacks are called directly, others through Python.
    if type(fn) is _Collector:
        (<_Collector>fn).member_done(fut)
        return 0
    if type(fn) is _Chain:
        (<_Chain>fn).parent_done(fut)
        return 0
    try:
        fn(fut)
    except Exception:
        try:
            _logger.exception("forkwait: exception in callback %r of %r", fn, fut)
        except Exception:
            pass
    return 0


cdef object _run_one(FutureCore fut, object callbacks):
    """Run one future's callbacks; the first BaseException they raised, or None."""
    cdef object cb
    cdef object first = None
    if type(callbacks) is list:
        for cb in <list>callbacks:
            try:
                _invoke(cb, fut)
            except BaseException as exc:
                if first is None:
                    first = exc
    else:
        try:
            _invoke(callbacks, fut)
        except BaseException as exc:
            first = exc
    return first


cdef int _run_callbacks(FutureCore fut, object callbacks) except -1:
    """Run `callbacks` of `fut`, and every completion they cause, in a loop.

    A callback that completes another future (a ``then`` chain) queues that
    future's callbacks here instead of recursing, so a chain of any length
    completes on a flat stack. KeyboardInterrupt or SystemExit from a
    callback is raised once the loop has run every other callback.
    """
    global fw_draining, fw_drain_queue
    cdef object queue
    cdef object first = None
    if fw_draining:
        if fw_drain_queue == NULL:
            queue = collections.deque()
            Py_INCREF(queue)
            fw_drain_queue = <PyObject *>queue
        (<object>fw_drain_queue).append((fut, callbacks))
        return 0
    fw_draining = 1
    try:
        first = _run_one(fut, callbacks)
        while fw_drain_queue != NULL and len(<object>fw_drain_queue):
            f, cbs = (<object>fw_drain_queue).popleft()
            exc = _run_one(<FutureCore>f, cbs)
            if first is None:
                first = exc
    finally:
        fw_draining = 0
        if fw_drain_queue != NULL:
            queue = <object>fw_drain_queue
            fw_drain_queue = NULL
            Py_DECREF(queue)
    if first is not None:
        raise first
    return 0


cdef inline int _after_final(FutureCore fut) except -1:
    """`fut` just reached its final state: wake, notify, run callbacks."""
    fw_wake_waiters(&fut.node)
    return _after_wake(fut)


cdef int _after_wake(FutureCore fut) except -1:
    """_after_final once the waiters are woken."""
    cdef object callbacks
    # No callback was ever added: none can be added any more either (an adder
    # counts itself in cb_adders before it reads the state, which is final
    # now), so the shared callback lock is not needed.
    if FW_LOAD(&fut.node.cb_adders) == 0:
        callbacks = None
    else:
        fw_lock(&fw_P.cb_lock)
        callbacks = fut._callbacks
        fut._callbacks = None
        fw_unlock(&fw_P.cb_lock)
    if FW_LOAD(&fut.node.cf_watched):
        _notify_cf_waiters(fut)
    _release_call(fut)
    if callbacks is not None:
        _run_callbacks(fut, callbacks)
    return 0


cdef inline void _release_call(FutureCore fut):
    """A task is final: what only its run needed goes (with the GIL)."""
    fut._fn = None
    fut._args = None
    fut._kwargs = None
    fut._a0 = fut._a1 = None
    if fut.node.gil_free != NULL:
        fut.node.gil_free = NULL  # before its capsule goes (a flag to waiters only now)
        if FW_LOAD(&fut.node.state) == FW_CANCELLED:
            fut._result = None  # the result array made at fork
    fut._ctx = None
    if fut.node.is_task:
        _unlink_parent(fut)


cdef inline void _unlink_parent(FutureCore fut):
    """A task is done: its parent has one live child less, and links that
    no queued descendant needs any more go (so a finished task does not keep
    its ancestors' results alive). A done task keeps its own parent link
    while it has live children: helpers walk through it to find the subtree."""
    cdef FutureCore p = fut._parent
    if p is not None:
        if _fw_add_int(&p.node.live_children, -1) == 0 and FW_LOAD(&p.node.state) >= FW_FINISHED:
            p.node.parent = NULL
            p._parent = None
    if FW_LOAD(&fut.node.live_children) == 0:
        fut.node.parent = NULL
        fut._parent = None


cdef _notify_cf_waiters(FutureCore fut):
    cdef int state
    with _cf_lock:
        waiters = fut._cf_waiters
        if not waiters:
            return
        state = FW_LOAD(&fut.node.state)
        for w in list(waiters):
            if state == FW_FINISHED:
                w.add_result(fut)
            elif state == FW_FAILED:
                w.add_exception(fut)
            else:
                w.add_cancelled(fut)


cdef bint _complete_manual(FutureCore fut, int state, object result, object exc) except -1:
    """Complete a hand-made future once (False if it is done already)."""
    if not fw_cas_int(&fut._completing, 0, 1):
        return False
    fut._result = result
    fut._exc = exc
    if state == FW_FAILED:
        _arm_guard(fut, exc)
    if not fw_settle(&fut.node, state, 0):
        _mark_retrieved(fut)  # this failure did not happen: disarm its guard
        fut._result = fut._exc = None
        FW_STORE(&fut._completing, 0)
        return False
    _after_final(fut)
    return True


cdef int _complete_task(FutureCore fut, int state, object result, object exc) except -1:
    """The thread that ran a task completes its future."""
    fut._result = result
    fut._exc = exc
    if state == FW_FAILED:
        _arm_guard(fut, exc)
    fw_settle(&fut.node, state, 1)
    _after_final(fut)
    _track_if_needed(fut)
    if FW_LOAD(&fw_P.state) == FW_POOL_DRAINING:
        fw_wake_all_idle()  # workers at exit wait for running pool tasks
    return 0


@cython.final
cdef class _Chain:
    """The done-callback behind Future.then()."""
    cdef object callback
    cdef FutureCore child
    cdef object ctx

    def __call__(self, FutureCore fut):
        self.parent_done(fut)

    cdef int parent_done(self, FutureCore fut) except -1:
        cdef FutureCore child = self.child
        try:
            value = self.ctx.run(self.callback, fut)
        except BaseException as exc:
            _complete_manual(child, FW_FAILED, None, exc)
        else:
            _complete_manual(child, FW_FINISHED, value, None)
        return 0


cdef inline double _check_timeout(timeout) except? -2.0:
    """A timeout argument in seconds: -1.0 for none, else >= 0."""
    if timeout is None:
        return -1.0
    return _parse_timeout(timeout)


cdef double _parse_timeout(timeout) except? -2.0:
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise TypeError(
            f"timeout must be a number of seconds or None, got {type(timeout).__name__}"
        ) from None
    if t != t:
        raise ValueError("timeout must be a number of seconds, got nan")
    if t == float("inf"):
        return -1.0
    return t if t > 0.0 else 0.0


# ---------------------------------------------------------------- running

def _gc_track_self(FutureCore fut):
    if not PyObject_GC_IsTracked(fut):
        PyObject_GC_Track(fut)


cdef inline void _track_if_needed(FutureCore fut):
    """A forked task's future is out of the cyclic GC from fork to completion
    (the queue, then the running thread, keeps it alive). Done, it goes back
    under the GC only if it holds a reference that could close a cycle: a
    result that the GC tracks (a noop's None, an int or a NumPy array does
    not), an exception (its traceback holds frames), its parent link, cf
    waiters, callbacks. So 100k finished no-op futures in a list cost the
    collector nothing, as tuples of atomic values do (CPython untracks them).
    Attributes set later go through Future.__setattr__, which tracks it."""
    cdef object r
    if PyObject_GC_IsTracked(fut):
        return
    r = fut._result
    if (fut._exc is not None or fut._parent is not None or fut._cf_waiters
            or fut._callbacks is not None
            or (r is not None and PyObject_IS_GC(r) and PyObject_GC_IsTracked(r))):
        PyObject_GC_Track(fut)


cdef inline void _gc_retrack(FutureCore fut):
    """A task left its queue (claimed or cancelled): back under the GC."""
    if not PyObject_GC_IsTracked(fut):
        PyObject_GC_Track(fut)
    ctx = fut._ctx
    if ctx is not None and fut.node.gil_free == NULL and not PyObject_GC_IsTracked(ctx):
        PyObject_GC_Track(ctx)


cdef inline void _blas_asleep(int delta) noexcept nogil:
    """A task blocks in a wait (-1) or goes on (+1): not running, for the budget."""
    if fw_task_depth > 0:
        blas_tasks(delta)


cdef extern from *:
    """
    /* fn(*args, **kwargs) (kwargs None: none). On failure: NULL, the error
     * indicator cleared and the exception, normalized and with its
     * traceback, in *exc (a new reference). No Cython try block around the
     * call: that would save and restore the thread's handled-exception
     * state on every task. */
    static PyObject *fw_caught(PyObject **exc);

    static PyObject *fw_call_caught(PyObject *fn, PyObject *args, PyObject *kwargs,
                                    PyObject **exc) {
        PyObject *r = PyObject_Call(fn, args, kwargs == Py_None ? NULL : kwargs);
        return r != NULL ? r : fw_caught(exc);
    }

    /* The same for fn(a0, a1) with `nargs` (0-2) of them (the inline form). */
    static PyObject *fw_call2_caught(PyObject *fn, PyObject *a0, PyObject *a1, int nargs,
                                     PyObject **exc) {
        PyObject *argv[2];
        PyObject *r;
        argv[0] = a0;
        argv[1] = a1;
        r = PyObject_Vectorcall(fn, argv, (size_t)nargs, NULL);
        return r != NULL ? r : fw_caught(exc);
    }

    static PyObject *fw_caught(PyObject **exc) {
        PyObject *v;
    #if PY_VERSION_HEX >= 0x030C0000
        v = PyErr_GetRaisedException();   /* normalized, with its traceback */
    #else
        {
            PyObject *t, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyErr_NormalizeException(&t, &v, &tb);
            if (v != NULL && tb != NULL) PyException_SetTraceback(v, tb);
            Py_XDECREF(tb);
            Py_XDECREF(t);
        }
    #endif
        if (v == NULL) {   /* cannot happen after a failed call; be safe */
            v = PyObject_CallNoArgs(PyExc_SystemError);
            if (v == NULL) { PyErr_Clear(); v = Py_NewRef(Py_None); }
        }
        *exc = v;
        return NULL;
    }
    """
    PyObject *fw_call_caught(PyObject *fn, PyObject *args, PyObject *kwargs, PyObject **exc)
    PyObject *fw_call2_caught(PyObject *fn, PyObject *a0, PyObject *a1, int nargs,
                              PyObject **exc)


cdef int _run_task(FutureCore fut) except -1:
    """Run a claimed task in this thread and complete its future.

    Returns 1 when the task raised KeyboardInterrupt in the main thread (the
    waiter must then raise it too, so Ctrl-C is never swallowed), else 0.
    """
    global fw_cur_task, fw_wait_acc, fw_task_depth
    if fut.node.gil_free != NULL:
        return _run_gil_free(fut)
    cdef int saved = get_local_threads()
    cdef int interrupted = 0
    cdef long long outer_task = 0
    cdef double outer_wait = 0.0, t0 = 0.0
    cdef bint profiled = fw_prof_on and fut._prof_id != 0
    cdef PyObject *outer_fut = fw_get_cur()
    cdef object ctx = fut._ctx
    cdef object name = None
    cdef PyObject *raw
    cdef PyObject *raw_exc = NULL
    cdef object value, exc
    # The future stays out of the GC (see _track_if_needed); the context goes
    # back now: CPython's context dealloc untracks without checking.
    if ctx is not None and not PyObject_GC_IsTracked(ctx):
        PyObject_GC_Track(ctx)
    if profiled:
        name = _task_name(fut._fn)
        outer_task = fw_cur_task
        outer_wait = fw_wait_acc
        fw_cur_task = fut._prof_id
        fw_wait_acc = 0.0
        t0 = fw_now()
    if saved != fut._intra:
        set_local_threads(fut._intra)
    fw_set_cur(<PyObject *>fut)
    fw_task_depth += 1
    if fw_task_depth == 1:
        blas_tasks(1)   # the BLAS budget counts threads running task code
    PyContext_Enter(ctx)
    if fut._args is None:
        raw = fw_call2_caught(<PyObject *>fut._fn, <PyObject *>fut._a0, <PyObject *>fut._a1,
                              fut._nargs, &raw_exc)
    else:
        raw = fw_call_caught(<PyObject *>fut._fn, <PyObject *>fut._args,
                             <PyObject *>fut._kwargs, &raw_exc)
    PyContext_Exit(ctx)
    fw_task_depth -= 1
    if fw_task_depth == 0:
        blas_tasks(-1)
    fw_set_cur(outer_fut)
    if get_local_threads() != saved:  # the task's own override ends with it
        set_local_threads(saved)
    if raw == NULL:
        exc = <object>raw_exc
        Py_DECREF(exc)  # fw_call_caught's reference; `exc` holds its own
        if isinstance(exc, KeyboardInterrupt) and PyThread_get_thread_ident() == main_ident:
            interrupted = 1
        if profiled:
            _record_task(fut, name, t0, fw_now(), outer_task, outer_wait, "failed")
        _complete_task(fut, FW_FAILED, None, exc)
    else:
        value = <object>raw
        Py_DECREF(value)
        if profiled:
            _record_task(fut, name, t0, fw_now(), outer_task, outer_wait, "finished")
        _complete_task(fut, FW_FINISHED, value, None)
    return interrupted


# ---------------------------------------------------------------- GIL-free tasks

DEF MAX_GIL_FREE = 32
cdef list _gil_free_fns = []   # [(fn, prepare), ...] (see _register_gil_free); holds them
DEF GIL_FREE_SLOTS = 64   # a power of two, at least twice MAX_GIL_FREE
# fork's identity check: an open-addressed table of their fns (borrowed) and
# prepare functions, by address, so that a fork of any other function costs
# one load and compare (the common case), not a pass over all of them
cdef PyObject *_gil_free_fn[GIL_FREE_SLOTS]
cdef PyObject *_gil_free_prep[GIL_FREE_SLOTS]
cdef int _n_gil_free_fns = 0


cdef inline size_t _gil_free_slot(PyObject *fn) noexcept:
    return (<size_t>fn >> 4) & (GIL_FREE_SLOTS - 1)


def _register_gil_free(fn, prepare):
    """Make ``fork(fn, ...)`` a GIL-free task wherever ``prepare(args,
    kwargs)`` accepts the call (``kwargs`` None without keywords): it
    returns ``(capsule, result)`` (see ``_fw_gil_free.h``) or None for the
    ordinary path. ``prepare=None`` removes `fn`."""
    global _n_gil_free_fns
    if prepare is not None and not callable(prepare):
        raise TypeError(f"prepare must be callable, got {type(prepare).__name__}")
    cdef int i
    entries = [e for e in _gil_free_fns if e[0] is not fn]
    if prepare is not None:
        if len(entries) >= MAX_GIL_FREE:
            raise ValueError(f"at most {MAX_GIL_FREE} GIL-free functions")
        entries.append((fn, prepare))
    cdef size_t j
    _n_gil_free_fns = 0
    _gil_free_fns[:] = entries
    for i in range(GIL_FREE_SLOTS):
        _gil_free_fn[i] = NULL
        _gil_free_prep[i] = NULL
    for i in range(len(entries)):
        j = _gil_free_slot(<PyObject *>entries[i][0])
        while _gil_free_fn[j] != NULL:
            j = (j + 1) & (GIL_FREE_SLOTS - 1)
        _gil_free_fn[j] = <PyObject *>entries[i][0]
        _gil_free_prep[j] = <PyObject *>entries[i][1]
    _n_gil_free_fns = len(entries)


cdef inline PyObject *_gil_free_prepare(object fn) noexcept:
    """`fn`'s prepare function (borrowed: _gil_free_fns holds it), or NULL."""
    cdef size_t j = _gil_free_slot(<PyObject *>fn)
    while _gil_free_fn[j] != NULL:
        if _gil_free_fn[j] == <PyObject *>fn:
            return _gil_free_prep[j]
        j = (j + 1) & (GIL_FREE_SLOTS - 1)
    return NULL


cdef bint _make_gil_free(FutureCore fut, object prepare) except -1:
    """Make a new task's future a GIL-free call if `prepare` accepts it."""
    prepared = prepare(fut._args, fut._kwargs)
    if prepared is None:
        return False
    capsule = (<tuple>prepared)[0]
    fut.node.gil_free = <fw_gil_free_call *>PyCapsule_GetPointer(capsule, FW_GIL_FREE_CAPSULE)
    fut._ctx = capsule  # no Python code runs in it: its context slot holds the call
    fut._result = (<tuple>prepared)[1]
    fut.node.gil_free.intra = fut._intra
    return True


cdef inline void _gil_free_body(fw_node *n) noexcept nogil:
    """Run claimed GIL-free call `n` in this thread at the forking thread's
    intra-op setting, counted as task code for the BLAS budget."""
    global fw_task_depth
    cdef int saved = get_local_threads()
    if saved != n.gil_free.intra:
        set_local_threads(n.gil_free.intra)
    fw_task_depth += 1
    if fw_task_depth == 1:
        blas_tasks(1)
    cdef bint out = fw_get_slot() < 0
    FW_ADD(&fw_P.n_kernels, 1)
    if out:
        FW_ADD(&fw_P.n_kernels_out, 1)
    n.gil_free.run(n.gil_free)
    if out:
        FW_ADD(&fw_P.n_kernels_out, -1)
    FW_ADD(&fw_P.n_kernels, -1)
    fw_task_depth -= 1
    if fw_task_depth == 0:
        blas_tasks(-1)
    if get_local_threads() != saved:
        set_local_threads(saved)
    FW_ADD(&fw_P.n_gil_free, 1)


cdef int _run_gil_free(FutureCore fut) except -1:
    """_run_task of a GIL-free call (a wait that runs it, a worker that holds
    the GIL already): the kernel runs with the GIL released."""
    with nogil:
        _gil_free_body(&fut.node)
    _complete_task(fut, FW_FINISHED, fut._result, None)
    return 0


cdef void _run_gil_free_nogil(fw_node *n) noexcept nogil:
    """A worker runs and completes GIL-free task `n` (claimed; the queue's
    reference still held) without taking the GIL. The GIL is needed only if
    a callback or a concurrent.futures waiter was ever added: each adder
    counts itself before it reads the state (Dekker with the settle here),
    so when neither count is set after the settle, none will be found
    later. The Python side of completion (dropping the call's references)
    then waits on fw_P.deferred for a thread that holds the GIL."""
    _gil_free_body(n)
    fw_settle(n, FW_FINISHED, 1)
    fw_wake_waiters(n)
    if FW_LOAD(&n.cb_adders) != 0 or FW_LOAD(&n.cf_watched) != 0:
        _finish_gil_free(n)
    else:
        fw_defer_push(n)
    if FW_LOAD(&fw_P.state) == FW_POOL_DRAINING:
        fw_wake_all_idle()  # workers at exit wait for running pool tasks


cdef void _finish_gil_free(fw_node *n) noexcept with gil:
    cdef FutureCore fut = <FutureCore>FW_FUT_OF(n)
    Py_DECREF(fut)  # the queue's reference; `fut` holds one
    try:
        _after_wake(fut)
        _track_if_needed(fut)
    except BaseException:  # a callback's KeyboardInterrupt: nothing to raise it in
        try:
            _logger.error("forkwait: error in a pool thread after running %r", fut,
                          exc_info=True)
        except BaseException:
            pass


cdef void _drain_deferred() noexcept:
    """Release the Python side of GIL-free tasks that workers completed
    without the GIL (their queue reference, the call's arguments)."""
    cdef fw_node *n = fw_defer_take_all()
    cdef fw_node *nx
    cdef FutureCore fut
    while n != NULL:
        nx = n.next
        fut = <FutureCore>FW_FUT_OF(n)
        Py_DECREF(fut)  # the queue's reference; `fut` holds one
        _release_call(fut)
        _track_if_needed(fut)
        fut = None
        n = nx


cdef inline void _drain_if_any() noexcept:
    if fw_any_deferred():
        _drain_deferred()


cdef int _run_gil_free_run(fw_node *n, int slot, int worker_index,
                           int spare) noexcept nogil:
    """A worker without the GIL runs GIL-free task `n` (claimed) and then
    those it finds next. 1 when other tasks are queued (for the GIL), 0 when
    it should look again from idle (none, or the pool shrank)."""
    while n != NULL:
        fw_tickle()
        _run_gil_free_nogil(n)
        if not spare and worker_index >= FW_LOAD(&fw_P.target_workers):
            return 0  # the pool shrank: stop after this task
        n = fw_find_gil_free_work(slot)
    return fw_any_work()


cdef object _prof_hook = None   # the hook object of the profile that records
cdef long long _prof_next_id = 0


cdef str _task_name(fn):
    """A task's name for reports; never raises (a callable's __getattr__ may)."""
    try:
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
        if isinstance(name, str):
            return name
    except Exception:
        pass
    try:
        return type(fn).__qualname__
    except Exception:
        return "<callable>"


cdef void _record_task(FutureCore fut, object name, double t0, double t1,
                       long long outer_task, double outer_wait, str outcome):
    global fw_cur_task, fw_wait_acc
    cdef double waited = fw_wait_acc
    fw_cur_task = outer_task
    fw_wait_acc = outer_wait
    hook = _prof_hook
    if hook is not None:
        try:
            hook.on_task(
                id=fut._prof_id, parent=fut._prof_parent, name=name,
                fork_time=fut._t_fork, fork_thread=fut._fork_thread, start=t0, end=t1,
                thread=PyThread_get_thread_ident(), wait_time=waited, outcome=outcome,
            )
        except Exception:
            pass


cdef void _record_wait(FutureCore fut, double t0):
    hook = _prof_hook
    if hook is not None:
        try:
            hook.on_wait(task=fut._prof_id, start=t0, end=fw_now(),
                         thread=PyThread_get_thread_ident())
        except Exception:
            pass


cdef void _prof_fork(FutureCore fut) noexcept:
    fut._prof_id = _fw_add_ll(&_prof_next_id, 1)
    fut._prof_parent = fw_cur_task
    fut._t_fork = fw_now()
    fut._fork_thread = PyThread_get_thread_ident()


def _set_profiler(hook):
    """Start calling `hook` (None stops); returns the old hook.

    While set, the thread that ran a task calls ``hook.on_task(id=, parent=,
    name=, fork_time=, fork_thread=, start=, end=, thread=, wait_time=,
    outcome=)`` and a wait that slept calls ``hook.on_wait(task=, start=,
    end=, thread=)``.
    """
    global _prof_hook, fw_prof_on
    old = _prof_hook
    _prof_hook = hook
    fw_prof_on = hook is not None
    return old


def _current_task():
    """The profiling id of the task running in this thread (0: none)."""
    return fw_cur_task


# ---------------------------------------------------------------- waiting

cdef inline bint _too_deep() noexcept:
    """True when a task run inline here could overflow the Python or C stack.

    The margin is a quarter of the recursion limit (at least 50 frames; on
    CPython 3.12-3.13 also a quarter of its separate C recursion count) and
    STACK_MARGIN bytes of C stack (at most a quarter of it). The C stack is
    looked at only below a few nested tasks (it is what they use up).
    """
    cdef int limit = Py_GetRecursionLimit()
    cdef int margin = limit // 4
    if margin < 50:
        margin = 50
    if fw_recursion_low(margin):
        return True
    if fw_task_depth < 8:
        return False
    return fw_stack_low(STACK_MARGIN)


cdef bint _begin_blocking() except -1:
    """This thread blocks in a wait without helping: keep the pool's capacity.

    Counts it as blocked and starts a spare thread when the spares are fewer
    than the blocked threads. False when no spare could be had (the caller
    then helps as usual, deep or not).
    """
    cdef bint spawn = False
    fw_lock(&fw_P.sleep_lock)
    if fw_P.n_spares < fw_P.n_deep + 1 and fw_P.n_spares >= FW_MAX_SPARES:
        fw_unlock(&fw_P.sleep_lock)
        return False
    FW_ADD(&fw_P.n_deep, 1)
    if fw_P.n_spares < fw_P.n_deep:
        FW_ADD(&fw_P.n_spares, 1)
        fw_P.n_spawned_spares += 1
        spawn = True
    fw_unlock(&fw_P.sleep_lock)
    if spawn:
        # _thread, not threading: start_new_thread runs no Python code, so no
        # signal handler (Ctrl-C) can interrupt it half way and leave the
        # count wrong. Such a thread is never joined at exit (like a daemon).
        try:
            _thread.start_new_thread(_spare_main, ())
        except Exception:
            fw_lock(&fw_P.sleep_lock)
            FW_ADD(&fw_P.n_spares, -1)
            FW_ADD(&fw_P.n_deep, -1)
            fw_P.n_spare_failures += 1
            fw_unlock(&fw_P.sleep_lock)
            return False
    return True


cdef void _end_blocking() noexcept nogil:
    FW_ADD(&fw_P.n_deep, -1)
    fw_wake_all_idle()  # a spare that is not needed any more retires


cdef inline int _run_claimed(fw_node *n) except -1:
    """Run a task this thread claimed from a queue (the queue's reference
    passes to us). Raises KeyboardInterrupt if the task took Ctrl-C here."""
    cdef FutureCore task = <FutureCore>FW_FUT_OF(n)
    Py_DECREF(task)
    if _run_task(task):
        raise KeyboardInterrupt
    return 0


cdef int _check_not_own_ancestor(FutureCore fut) except -1:
    if FW_LOAD(&fut.node.state) == FW_RUNNING and fut.node.runner != NULL \
            and fut.node.runner == fw_me_get():
        raise RuntimeError(
            f"deadlock: {fut!r} waits on itself (the waiting code runs inside that "
            "task, directly or through tasks it waits on)"
        )
    return 0


cdef int _wait_done(FutureCore fut, double timeout) except -1:
    """Return once `fut` is done (or raise TimeoutError / KeyboardInterrupt /
    RuntimeError on a cycle of waits).

    Runs `fut` itself if it has not started, then, while it runs elsewhere,
    queued tasks of its subtree. `timeout` < 0: no deadline; 0: only look.
    """
    cdef fw_node *node = &fut.node
    cdef bint deep = False
    cdef double deadline = -1.0
    _drain_if_any()
    if FW_LOAD(&node.state) >= FW_FINISHED:
        return 0
    if timeout >= 0.0:
        deadline = fw_now() + timeout
    if timeout != 0.0 and node.is_task:
        if _too_deep() and _begin_blocking():
            deep = True
        elif fw_claim_node(node, FW_RUNNING):
            Py_DECREF(fut)  # the queue's reference; our caller holds one
            if _run_task(fut):
                raise KeyboardInterrupt
            return 0
    if not deep:
        return _wait_loop(fut, deadline, timeout != 0.0 and node.is_task)
    try:
        return _wait_loop(fut, deadline, False)
    finally:
        with nogil:
            _end_blocking()


cdef int _wait_loop(FutureCore fut, double deadline, bint helps) except -1:
    cdef fw_node *node = &fut.node
    cdef fw_node *other
    cdef fw_node *help_node = node
    cdef int action
    cdef unsigned long long epoch = 0
    cdef double slept = 0.0, w0 = 0.0
    cdef double poll = SIGNAL_POLL_S if PyThread_get_thread_ident() == main_ident else 0.0
    cdef bint registered
    cdef bint spun = False
    if node.is_task:
        _check_not_own_ancestor(fut)
    if fw_prof_on:
        w0 = fw_now()
    try:
        while True:
            if FW_LOAD(&node.state) >= FW_FINISHED:
                break
            if not spun and node.gil_free != NULL and FW_LOAD(&node.state) == FW_RUNNING:
                # A GIL-free task completes without the GIL: a short kernel's
                # end is seen here without a futex wake of this thread.
                spun = True
                with nogil:
                    fw_spin_until_done(node, FW_GIL_FREE_SPIN_S, deadline)
                continue
            registered = False
            if helps and (deadline < 0.0 or fw_now() < deadline):
                # The target itself may still be queued (a deep waiter's
                # spare may not have taken it), else a task of its subtree.
                if fw_claim_node(node, FW_RUNNING):
                    Py_DECREF(fut)
                    if _run_task(fut):
                        raise KeyboardInterrupt
                    break
                epoch = fw_help_begin(node)
                other = fw_claim_subtree(node, 0)
                if other != NULL:
                    fw_help_end(node)
                    _run_claimed(other)
                    continue
                registered = True
            with nogil:
                _blas_asleep(-1)
                action = fw_sleep_wait(node, deadline, poll, help_node if registered else NULL,
                                       epoch, node.is_task, &slept)
                _blas_asleep(1)
            if registered:
                fw_help_end(node)
            if action == FW_W_DONE or action == FW_W_RESCAN:
                continue
            if action == FW_W_POLL:
                PyErr_CheckSignals()
            elif action == FW_W_TIMEOUT:
                raise FuturesTimeoutError(f"{fut!r} not done within the timeout")
            else:
                raise RuntimeError(
                    f"deadlock: waiting on {fut!r} closes a cycle of waits (the task "
                    "it runs waits, directly or through other tasks, on this thread's "
                    "own task)"
                )
    finally:
        if fw_prof_on:
            _add_wait(slept)
            if w0 > 0.0:
                _record_wait(fut, w0)
    return 0


cdef inline void _add_wait(double seconds) noexcept:
    global fw_wait_acc
    fw_wait_acc += seconds


cdef int _wait_many(list futs, FutureCore done, double deadline) except -1:
    """Wait until `done` (a hand-made future that the members complete) is
    done, running the unstarted members and the subtrees of running ones.
    A thread too deep to run more inline blocks with a spare started, as
    _wait_done does."""
    if deadline != 0.0 and _too_deep() and _begin_blocking():
        try:
            return _wait_many_loop(futs, done, deadline, False)
        finally:
            with nogil:
                _end_blocking()
    return _wait_many_loop(futs, done, deadline, deadline != 0.0)


cdef int _wait_many_loop(list futs, FutureCore done, double deadline, bint helps) except -1:
    cdef FutureCore f
    cdef fw_node *other
    cdef long long token
    cdef int action
    cdef unsigned long long epoch
    cdef double slept = 0.0
    cdef double poll = SIGNAL_POLL_S if PyThread_get_thread_ident() == main_ident else 0.0
    cdef list running
    for f in futs:
        _check_not_own_ancestor(f)
    # Unstarted members first, in order, until done (e.g. the first failure).
    if helps:
        for f in futs:
            if FW_LOAD(&done.node.state) >= FW_FINISHED:
                return 0
            if deadline >= 0.0 and fw_now() >= deadline:
                break
            if f.node.is_task and fw_claim_node(&f.node, FW_RUNNING):
                Py_DECREF(f)
                if _run_task(f):
                    raise KeyboardInterrupt
    while FW_LOAD(&done.node.state) < FW_FINISHED:
        epoch = 0
        running = None
        if helps and (deadline < 0.0 or fw_now() < deadline):
            running = [f for f in futs if FW_LOAD(&f.node.state) == FW_RUNNING
                       and f.node.is_task]
            if running:
                token = _fw_add_ll(&_wait_tokens, 1)
                for f in running:
                    f.node.mark = token
                epoch = fw_help_begin(&done.node)
                for f in running:
                    FW_ADD(&f.node.help_waiters, 1)
                other = fw_claim_subtree(NULL, token)
                if other != NULL:
                    for f in running:
                        FW_ADD(&f.node.help_waiters, -1)
                    fw_help_end(&done.node)
                    _run_claimed(other)
                    continue
        with nogil:
            _blas_asleep(-1)
            action = fw_sleep_wait(&done.node, deadline, poll,
                                   &done.node if running else NULL, epoch, 0, &slept)
            _blas_asleep(1)
        if running:
            for f in running:
                FW_ADD(&f.node.help_waiters, -1)
            fw_help_end(&done.node)
        if action == FW_W_POLL:
            PyErr_CheckSignals()
        elif action == FW_W_TIMEOUT:
            raise FuturesTimeoutError("futures not done within the timeout")
    return 0


# ---------------------------------------------------------------- workers

cdef void _run_guarded(FutureCore task):
    """Run a claimed task in a pool thread; nothing it raises ends the thread."""
    try:
        _run_task(task)
    except BaseException as exc:  # an internal failure, or a callback's KeyboardInterrupt
        try:
            if FW_LOAD(&task.node.state) < FW_FINISHED:
                _complete_task(task, FW_FAILED, None, exc)
            _logger.error("forkwait: error in a pool thread after running %r", task,
                          exc_info=True)
        except BaseException:
            pass


cdef void _pool_thread_loop(int slot, int worker_index, int spare):
    """Look for work, run it, sleep; return when this thread must stop."""
    cdef fw_node *n
    cdef int r
    cdef FutureCore task
    while True:
        with nogil:
            # GIL-free tasks run here, one after the other, without the GIL;
            # the GIL is taken only for other work (taking it between two
            # GIL-free tasks made the forking thread wait for this one at its
            # next release of the GIL)
            while True:
                FW_ADD(&fw_P.searching, 1)
                r = fw_idle(worker_index, spare)
                if r == 1:
                    if not spare and worker_index >= FW_LOAD(&fw_P.target_workers):
                        fw_searching_done()
                        r = 0  # the pool shrank meanwhile: leave the work to the others
                    else:
                        n = fw_find_gil_free_work(slot)
                        if n != NULL:
                            fw_searching_done()
                            r = 3 if not _run_gil_free_run(n, slot, worker_index, spare) else 4
                if r != 3:
                    break  # r == 3: nothing for the GIL, idle again
        if r == 0:
            return
        if r == 2:
            _drain_deferred()  # idle now: release what GIL-free tasks left
            continue
        n = fw_find_work(slot)
        if r == 1:
            # still counted as searching from fw_idle until this claim, so
            # that a fork meanwhile wakes nobody else for the same work
            fw_searching_done()
        while n != NULL:
            if n.gil_free != NULL:
                with nogil:
                    r = _run_gil_free_run(n, slot, worker_index, spare)
                if not r:
                    break
                n = fw_find_work(slot)
                continue
            fw_tickle()
            task = <FutureCore>FW_FUT_OF(n)
            Py_DECREF(task)  # the queue's reference; `task` holds one
            _run_guarded(task)
            task = None
            _drain_if_any()
            if not spare and worker_index >= FW_LOAD(&fw_P.target_workers):
                break  # the pool shrank: stop after this task
            # Keep the GIL while there is more work: no release per task.
            n = fw_find_work(slot)


def _worker_main(int index):
    """The loop of inter-op worker `index` (the target of its Python thread)."""
    cdef int slot
    fw_me_get()
    fw_lock(&fw_P.sleep_lock)
    slot = fw_slot_acquire(index)
    fw_unlock(&fw_P.sleep_lock)
    fw_set_slot(slot)
    try:
        while True:
            _pool_thread_loop(slot, index, 0)
            # The loop returned because the pool shrank below this index (or
            # is closing). If it grew back meanwhile, _spawn_missing saw this
            # thread alive and started none: stay. Decided under the sleep
            # lock, where _spawn_missing reads slot_alive, and slot_alive is
            # cleared under the same hold (finally), so either this thread
            # stays or the next resize finds its slot free.
            fw_lock(&fw_P.sleep_lock)
            if FW_LOAD(&fw_P.state) == FW_POOL_RUNNING and index < fw_P.target_workers:
                fw_unlock(&fw_P.sleep_lock)
                continue
            break
    except BaseException:
        fw_lock(&fw_P.sleep_lock)
        raise
    finally:
        # (the sleep lock is held here)
        fw_set_slot(-1)
        fw_P.slot_alive[index] = 0
        fw_P.slot_used[slot] = 0
        FW_ADD(&fw_P.live_workers, -1)
        if FW_LOAD(&fw_P.state) == FW_POOL_DRAINING and fw_P.live_workers == 0:
            FW_STORE(&fw_P.state, FW_POOL_CLOSED)
        fw_unlock(&fw_P.sleep_lock)
        if fw_any_work():
            fw_notify_work()  # what this worker leaves in its deque


def _spare_main():
    """The loop of a compensating thread: run queued tasks while a pool
    thread is blocked too deep to help (see the module docstring)."""
    cdef int slot
    fw_me_get()
    fw_lock(&fw_P.sleep_lock)
    slot = fw_slot_acquire(-1)
    fw_unlock(&fw_P.sleep_lock)
    if slot < 0:
        fw_lock(&fw_P.sleep_lock)
        FW_ADD(&fw_P.n_spares, -1)
        fw_unlock(&fw_P.sleep_lock)
        return
    fw_set_slot(slot)
    try:
        _pool_thread_loop(slot, -1, 1)
    finally:
        fw_set_slot(-1)
        fw_lock(&fw_P.sleep_lock)
        fw_P.slot_used[slot] = 0
        fw_unlock(&fw_P.sleep_lock)
        if fw_any_work():
            fw_notify_work()


# ---------------------------------------------------------------- public calls

cdef object _fork_hook = None   # forkwait's Dask backend while a block is active


def _set_fork_hook(hook):
    """Install ``hook(fn, args, kwargs) -> Future or None`` for forks made
    outside any task (None removes it); returns the old one."""
    global _fork_hook
    old = _fork_hook
    _fork_hook = hook
    return old


cdef extern from "_fw_fastcall.h":
    ctypedef object (*fw_fork_impl_t)(object fn, PyObject **argv, Py_ssize_t nargs,
                                      object kwargs)
    object fw_make_fork(fw_fork_impl_t impl, object module_name, const char *doc)
    tuple fw_args_tuple(PyObject **argv, Py_ssize_t nargs)
    ctypedef object (*fw_wait_impl_t)(object fut, object timeout)
    object fw_make_wait(fw_wait_impl_t impl, object module_name, const char *doc)


cdef object _fork_impl(object fn, PyObject **argv, Py_ssize_t nargs, object kwargs):
    """The body of fork(): `fn` and its `nargs` positional arguments `argv`
    (borrowed); `kwargs` is None when the call had no keywords."""
    if not callable(fn):
        raise TypeError(
            f"fork() needs a callable as its first argument, got {type(fn).__name__}: "
            f"{_short_repr(fn)}"
        )
    if _fork_hook is not None and fw_task_depth == 0:
        hooked = _fork_hook(fn, fw_args_tuple(argv, nargs), {} if kwargs is None else kwargs)
        if hooked is not None:
            return hooked
    if FW_LOAD(&fw_P.state) == FW_POOL_IDLE:
        _start_pool()
    cdef PyObject *prepare = NULL
    if _n_gil_free_fns != 0 and not fw_prof_on:
        prepare = _gil_free_prepare(fn)
    cdef FutureCore fut = _new_task_future()
    cdef PyObject *cur = fw_get_cur()
    cdef FutureCore parent
    fut._fn = fn
    if prepare != NULL or kwargs is not None or nargs > 2:
        fut._args = fw_args_tuple(argv, nargs)
        fut._kwargs = kwargs
    else:  # the common call: no tuple (see FutureCore._a0)
        fut._nargs = <int>nargs
        if nargs >= 1:
            fut._a0 = <object>argv[0]
            if nargs == 2:
                fut._a1 = <object>argv[1]
    fut._intra = get_local_threads()
    if prepare == NULL or not _make_gil_free(fut, <object>prepare):
        fut._ctx = PyContext_CopyCurrent()
    fut.node.is_task = 1
    if cur != NULL:
        parent = <FutureCore>cur
        fut._parent = parent
        fut.node.parent = &parent.node
        fut.node.depth = parent.node.depth + 1
        FW_ADD(&parent.node.live_children, 1)
    if fw_prof_on:
        _prof_fork(fut)
    # While queued, the future (made untracked) and its context are alive
    # through the queue: out of the cyclic GC's lists until claimed (10^6
    # queued futures would otherwise make every full collection scan them all).
    if fut.node.gil_free == NULL:
        PyObject_GC_UnTrack(fut._ctx)
    Py_INCREF(fut)  # owned by the queue while linked
    if fw_push(&fut.node):
        if fut.node.gil_free != NULL:
            fw_notify_pushed_gil_free()
        else:
            fw_notify_pushed()
        if cur != NULL:
            fw_notify_helpers(fut.node.parent)
        return fut
    _gc_retrack(fut)
    Py_DECREF(fut)
    if cur != NULL:
        _fw_add_int(&parent.node.live_children, -1)
    fut._fn = fut._args = fut._kwargs = fut._ctx = fut._parent = None
    fut._a0 = fut._a1 = None
    fut.node.parent = NULL
    fut.node.gil_free = NULL
    fut._result = None
    _refuse_fork()


cdef _refuse_fork():
    raise RuntimeError(
        "forkwait's inter-op pool has shut down (the interpreter is exiting); "
        "fork() is not possible any more. Wait on your futures before the main "
        "thread ends, or run the call directly."
    )


# fork(): a vectorcall builtin over _fork_impl (see _fw_fastcall.h), with this doc
cdef bytes _FORK_DOC = ("fork(fn, /, *args, **kwargs)\n--\n\n" + """Run ``fn(*args, **kwargs)`` on the inter-op pool; return its Future now.

    Unlike eager ``torch.jit.fork``, the call never runs inside `fork`: it is
    queued and a pool thread (or a thread that waits on the future) runs it.
    Forked calls run at the same time when they release the GIL, as NumPy,
    BLAS and forkwait's own kernels do. The task runs in a copy of the
    caller's ``contextvars`` context and with the caller's intra-op setting
    (``with forkwait.num_threads(n)``), whichever thread runs it.
    ``fork(forkwait.ops.matmul, a, b)`` of plain 2-D float arrays, and
    ``fork(forkwait.ops.exp, x)`` (and the other unary ops) of a plain float
    array, are GIL-free tasks: checked here, run and (on a pool thread)
    completed without the GIL (see the user guide, "Forked kernels run
    without the GIL"); any other call of them is an ordinary task.

    Parameters
    ----------
    fn : callable
        The function to call (positional-only, so `fn` may take a keyword
        argument named ``fn``).
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
    """).encode()
fork = fw_make_fork(<fw_fork_impl_t>_fork_impl, __name__, _FORK_DOC)


cdef object _wait_impl(object fut, object timeout):
    """The body of wait() (see _fw_fastcall.h)."""
    if not isinstance(fut, FutureCore):
        raise TypeError(f"wait() needs a forkwait.Future, got {type(fut).__name__}")
    cdef FutureCore f = <FutureCore>fut
    _wait_done(f, _check_timeout(timeout))
    return f._outcome()


# wait(): a vectorcall builtin over _wait_impl, with this doc
cdef bytes _WAIT_DOC = ("wait(fut, timeout=None)\n--\n\n" + """Wait for a future and return its value, as ``torch.jit.wait``.

    If the forked call has not started yet, the waiting thread runs it. If it
    is running elsewhere, the waiting thread runs queued tasks of that call's
    own subtree meanwhile (tasks it forked, and theirs), and nothing else. So
    a task may fork and wait on its own children to any depth, with any pool
    size, without deadlock, and a wait never runs unrelated work (which
    could need a lock the waiter holds). In the main thread Ctrl-C
    interrupts the wait.

    Parameters
    ----------
    fut : Future
    timeout : float, optional
        Seconds to wait at most; None waits until done.

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
    TimeoutError
        If `timeout` passed first (the future keeps running).
    RuntimeError
        If the wait closes a cycle (a task waiting on its own future).

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.wait(fw.fork(divmod, 17, 5))
    (3, 2)
    """).encode()
wait = fw_make_wait(<fw_wait_impl_t>_wait_impl, __name__, _WAIT_DOC)


def wait_all(futures, timeout=None):
    """Wait for every future and return their values, in order.

    As ``torch.futures.wait_all``: it fails fast, raising the exception of
    the first future to fail (in time, not in list order) without waiting
    for the others. Unstarted futures run in the waiting thread.

    Parameters
    ----------
    futures : iterable of Future
    timeout : float, optional
        Seconds to wait at most; TimeoutError then (the futures keep running).

    Returns
    -------
    list
        The values, in the order of `futures`.

    Raises
    ------
    BaseException
        The exception of the first member to fail.
    TypeError
        If a member is not a Future (before any member runs).
    RuntimeError
        If this thread runs one of the members (a wait on itself; before any
        member runs).
    TimeoutError
        If `timeout` passed first.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.wait_all([fw.fork(abs, -i) for i in range(4)])
    [0, 1, 2, 3]
    """
    cdef list futs = _as_future_list(futures, "wait_all", True)
    cdef double t = _check_timeout(timeout)
    cdef double deadline = -1.0 if t < 0.0 else fw_now() + t
    cdef FutureCore f
    cdef FutureCore coll
    cdef Py_ssize_t i, n = len(futs)
    if n == 1:
        f = futs[0]
        _wait_done(f, t)
        return [f._outcome()]
    cdef int state
    cdef bint helps = t != 0.0 and not _too_deep()
    cdef list values = [None] * n
    cdef list rest = []
    cdef list rest_at = []
    # One pass, in order, failing fast: a member that is done gives its
    # value now, an unstarted one runs here (no callbacks are needed for
    # what this thread runs itself), the others are waited on below. One
    # pass, not one per step: 10^5 futures do not fit in the caches, and
    # every pass over them costs a cache miss per future.
    for i in range(n):
        f = <FutureCore>futs[i]
        state = FW_LOAD(&f.node.state)
        if state < FW_FINISHED and helps and f.node.is_task \
                and (deadline < 0.0 or fw_now() < deadline) \
                and fw_claim_node(&f.node, FW_RUNNING):
            Py_DECREF(f)
            if _run_task(f):
                raise KeyboardInterrupt
            state = FW_LOAD(&f.node.state)
        if state == FW_FINISHED:
            values[i] = f._result
        elif state >= FW_FINISHED:
            f._outcome()  # failed or cancelled: raises
        else:
            rest.append(f)
            rest_at.append(i)
    if not rest:
        return values
    for f in rest:  # one of them may have failed meanwhile
        state = FW_LOAD(&f.node.state)
        if state == FW_FAILED or state == FW_CANCELLED:
            f._outcome()
    if len(rest) == 1 and deadline < 0.0:
        # One left (e.g. the other of two forked branches): its own wait,
        # no collector; failing fast is waiting on it.
        _wait_done(<FutureCore>rest[0], -1.0)
    else:
        # The rest run elsewhere: sleep until all are done or one fails.
        coll = _collect(rest)
        _wait_many(rest, coll, deadline)
        if FW_LOAD(&coll.node.state) == FW_FAILED:
            _mark_retrieved(coll)
            raise coll._exc
    for i in range(len(rest)):
        values[<Py_ssize_t>rest_at[i]] = (<FutureCore>rest[i])._outcome()
    return values


@cython.final
cdef class _Collector:
    """Counts members down; completes `out` when all are done, or fails it
    at the first failure. The count is atomic (no reliance on the GIL)."""
    cdef FutureCore out
    cdef list futs
    cdef int remaining

    def __call__(self, FutureCore f):
        self.member_done(f)

    cdef int member_done(self, FutureCore f) except -1:
        cdef int state = FW_LOAD(&f.node.state)
        if state == FW_FAILED and FW_LOAD(&self.out.node.state) < FW_FINISHED:
            _mark_retrieved(f)
            _complete_manual(self.out, FW_FAILED, None, f._exc)
        elif state == FW_CANCELLED and FW_LOAD(&self.out.node.state) < FW_FINISHED:
            _complete_manual(self.out, FW_FAILED, None,
                             CancelledError(f"a collected future was cancelled: {f!r}"))
        if _fw_add_int(&self.remaining, -1) == 0:
            _complete_manual(self.out, FW_FINISHED, self.futs, None)
        return 0


cdef FutureCore _collect(list futs):
    cdef FutureCore out = _new_future()
    cdef _Collector coll = _Collector.__new__(_Collector)
    cdef FutureCore f
    coll.out = out
    coll.futs = futs
    coll.remaining = len(futs)
    if not futs:
        _complete_manual(out, FW_FINISHED, futs, None)
        return out
    for f in futs:
        f.add_done_callback(coll)
    return out


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
    return _collect(futs)


def _wait_on(done, futures, timeout=None):
    """Wait until the hand-made future `done` is done, helping with
    `futures` meanwhile (their unstarted members run here, in order, and the
    subtrees of running ones), as wait_all does. TimeoutError at the
    deadline. The building block of forkwait's wait_any/as_completed/scope."""
    if not isinstance(done, FutureCore):
        raise TypeError(f"_wait_on() needs a forkwait.Future, got {type(done).__name__}")
    cdef list futs = _as_future_list(futures, "_wait_on")
    cdef double t = _check_timeout(timeout)
    cdef double deadline = -1.0 if t < 0.0 else fw_now() + t
    _wait_many(futs, <FutureCore>done, deadline)


cdef list _as_future_list(futures, str caller, bint no_cycle=False):
    """`futures` as a new list of Futures (TypeError otherwise); with
    `no_cycle`, RuntimeError if this thread runs one of them (a wait on it
    would wait on itself). One pass over the items (see wait_all)."""
    cdef list futs
    cdef Py_ssize_t i, n
    cdef object item
    if type(futures) is list or type(futures) is tuple:
        n = len(futures)
        futs = [None] * n
        for i in range(n):
            item = futures[i]
            _check_member(caller, i, item, no_cycle)
            futs[i] = item
        return futs
    try:
        futs = list(futures)
    except TypeError:
        raise TypeError(
            f"{caller}() needs an iterable of forkwait.Future, got {type(futures).__name__}"
        ) from None
    for i in range(len(futs)):
        _check_member(caller, i, futs[i], no_cycle)
    return futs


cdef inline int _check_member(str caller, Py_ssize_t i, object item, bint no_cycle) except -1:
    if not isinstance(item, FutureCore):
        raise TypeError(
            f"{caller}() needs forkwait.Future items; item {i} is {type(item).__name__}"
        )
    if no_cycle:
        _check_not_own_ancestor(<FutureCore>item)
    return 0


cdef str _short_repr(obj):
    try:
        r = repr(obj)
    except Exception:
        r = f"<{type(obj).__name__} object>"
    return r if len(r) <= 80 else r[:77] + "..."


# ---------------------------------------------------------------- pool control

_spawn_lock = threading.Lock()
_atexit_registered = False


def _start_pool():
    """Start the workers (first fork), or refuse once the pool has shut down."""
    global _atexit_registered
    with _spawn_lock:
        if FW_LOAD(&fw_P.state) >= FW_POOL_DRAINING:
            _refuse_fork()
        if not _atexit_registered:
            threading._register_atexit(_shutdown_at_exit)
            _atexit_registered = True
        FW_STORE(&fw_P.state, FW_POOL_RUNNING)
        _spawn_missing()


cdef _spawn_missing():
    """Start a worker for every index below the target that has none (spawn lock held)."""
    cdef int index
    cdef bint start
    for index in range(FW_MAX_INTEROP):
        fw_lock(&fw_P.sleep_lock)
        if index >= fw_P.target_workers:
            fw_unlock(&fw_P.sleep_lock)
            break
        start = not fw_P.slot_alive[index]
        if start:
            fw_P.slot_alive[index] = 1
            FW_ADD(&fw_P.live_workers, 1)
        fw_unlock(&fw_P.sleep_lock)
        if start:
            t = threading.Thread(
                target=_worker_main, args=(index,), name=f"forkwait-interop-{index}",
                daemon=False,
            )
            try:
                t.start()
            except BaseException:
                fw_lock(&fw_P.sleep_lock)
                fw_P.slot_alive[index] = 0
                FW_ADD(&fw_P.live_workers, -1)
                fw_unlock(&fw_P.sleep_lock)
                raise


def _set_interop_threads(int n):
    """Resize the pool: growing starts workers now, shrinking stops the extra
    ones when they finish their current task."""
    FW_STORE(&fw_P.target_workers, n)
    fw_wake_all_idle()
    if FW_LOAD(&fw_P.state) == FW_POOL_RUNNING:
        with _spawn_lock:
            if FW_LOAD(&fw_P.state) == FW_POOL_RUNNING:
                _spawn_missing()


def _get_interop_threads():
    return FW_LOAD(&fw_P.target_workers)


def _shutdown_at_exit():
    """threading's at-exit hook: queued tasks still run, then the workers stop.

    Called before the interpreter joins its non-daemon threads (which include
    the workers), as concurrent.futures does. From here on only a running
    task may fork (so that queued fork trees complete); anything else gets
    RuntimeError. Queued tasks are never dropped: where no worker runs (the
    child of os.fork() before its first fork), workers start to drain them.
    """
    cdef bint start
    with _spawn_lock:
        start = FW_LOAD(&fw_P.state) == FW_POOL_IDLE and fw_any_work()
        if start:
            FW_STORE(&fw_P.state, FW_POOL_RUNNING)
            try:
                _spawn_missing()
            except BaseException:
                pass
        fw_lock(&fw_P.sleep_lock)
        if fw_P.live_workers > 0:
            FW_STORE(&fw_P.state, FW_POOL_DRAINING)
        else:
            FW_STORE(&fw_P.state, FW_POOL_CLOSED)
        fw_unlock(&fw_P.sleep_lock)
        fw_wake_all_idle()
    _flush_unretrieved()


def _now():
    """The pool's clock (monotonic seconds), as used in profile records."""
    return fw_now()


def _stats():
    """A snapshot of the pool for parallel_info() and tests."""
    cdef Py_ssize_t queued = FW_LOAD(&fw_P.inject.len)
    cdef int i
    cdef int ns = FW_LOAD(&fw_P.n_slots)
    for i in range(ns):
        queued += _deque_len(i)
    fw_lock(&fw_P.sleep_lock)
    d = (queued, fw_stats_running(), fw_P.sleepers, fw_P.live_workers,
         fw_P.target_workers, fw_P.state, fw_P.n_spares, fw_P.n_deep,
         fw_stats_completed(), fw_P.n_spawned_spares, fw_P.n_spare_failures,
         FW_LOADLL(&fw_P.n_steals), FW_LOADLL(&fw_P.n_helped),
         FW_LOADLL(&fw_P.n_gil_free))
    fw_unlock(&fw_P.sleep_lock)
    return {
        "queued": d[0], "running": d[1], "sleeping": d[2], "workers": d[3],
        "target": d[4],
        "state": ("idle", "running", "draining", "closed")[d[5]],
        "spares": d[6], "blocked_deep": d[7], "completed": d[8],
        "spares_started": d[9], "spare_failures": d[10],
        "steals": d[11], "helped": d[12], "gil_free": d[13],
    }


cdef extern from *:
    """
    static inline Py_ssize_t _deque_len(int i) { return FW_LOAD(&fw_P.deques[i].len); }
    """
    Py_ssize_t _deque_len(int i) nogil


# ---------------------------------------------------------------- os.fork()

def _after_fork_child():
    """The child has only the thread that forked: reset the pool around it.

    (The locks were re-created by the pthread_atfork child handler.) Tasks
    queued at the fork stay queued and workers start for them now, so any
    kind of wait (timed, ``await``, a callback) sees them run. Tasks that
    other threads of the parent were running, in a worker, a spare or inline
    in a wait, cannot finish in the child: their futures fail with
    RuntimeError. The forking thread's own running tasks (os.fork() called
    from a task) carry on. (The intra-op runtime has its own at-fork
    handler, see docs/reliability.md on GCC bug 60035.)
    """
    global main_ident, _spawn_lock, _report_scheduled
    cdef fw_node **orphans = NULL
    cdef Py_ssize_t n, i
    cdef list futs = []
    main_ident = PyThread_get_thread_ident()
    _spawn_lock = threading.Lock()
    _report_scheduled = False
    n = fw_child_reset(&orphans)
    for i in range(n):
        futs.append(<FutureCore>FW_FUT_OF(orphans[i]))
    if orphans != NULL:
        free(orphans)
    cdef FutureCore f
    cdef bint queue_ref
    for fut in futs:
        f = <FutureCore>fut
        # A GIL-free task that a worker was running without the GIL still
        # holds the queue's reference (see _run_gil_free_nogil).
        queue_ref = f.node.gil_free != NULL
        try:
            _complete_task(f, FW_FAILED, None, RuntimeError(
                "this task was running in another thread of the parent process when "
                "os.fork() was called; the child process has no copy of that thread"
            ))
        except BaseException:
            pass
        if queue_ref:
            Py_DECREF(f)  # (`futs` still holds it)
    if fw_any_work() and FW_LOAD(&fw_P.state) == FW_POOL_IDLE:
        try:
            _start_pool()
        except BaseException:
            pass


os.register_at_fork(after_in_child=_after_fork_child)
