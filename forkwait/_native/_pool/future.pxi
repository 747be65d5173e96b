# The Future: its states, its C-level core (FutureCore) and the public class.

cdef tuple _STATE_NAMES = ("pending", "running", "finished", "finished", "cancelled")
cdef tuple _CF_STATES = ("PENDING", "RUNNING", "FINISHED", "FINISHED", "CANCELLED_AND_NOTIFIED")


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
    cdef int _completing    # a manual completion is under way (CAS)
    cdef signed char _nargs # 0-2: how many of _a0, _a1 are the call's
    cdef char _quiet        # forkwait's own (a collector's): never reports a failure
    # (_completing, _nargs and _quiet share 8 bytes; _intra and _torch the next 8)
    cdef object _ctx        # the context it runs in; a GIL-free call's capsule instead
    cdef object _callbacks   # None, one callable, or a list of them
    cdef list _cf_waiters
    cdef FutureCore _parent
    cdef int _intra
    cdef int _torch         # torch's thread count where it was forked (0: none; _fw_torch.h)
    cdef _FailureGuard _guard  # set while a failure is not retrieved
    cdef tuple _many_keep   # a collect_all future's (members, the bytes node.many is in)
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
        callback is kept as it is; a second makes a list, and every change
        of a list makes a new one (copy on write): the completer takes the
        list it finds under the lock and calls it outside, so a list is never
        changed once it is seen, with or without a GIL. The field is read
        and written only under cb_lock, and nothing is allocated or freed
        while it is held (the old value dies after the unlock)."""
        cdef object cbs
        cdef object new
        # Before reading the state (Dekker with _after_final: the completer
        # settles the state, then reads cb_adders; both seq_cst)
        FW_ADD(&self.node.cb_adders, 1)
        while True:
            fw_lock(&fw_P.cb_lock)
            if FW_LOAD(&self.node.state) >= FW_FINISHED:
                fw_unlock(&fw_P.cb_lock)
                return False
            cbs = self._callbacks
            if cbs is None:
                self._callbacks = fn
                fw_unlock(&fw_P.cb_lock)
                return True
            fw_unlock(&fw_P.cb_lock)
            if type(cbs) is list:
                new = list(<list>cbs)
                new.append(fn)
            else:
                new = [cbs, fn]
            fw_lock(&fw_P.cb_lock)
            if self._callbacks is cbs and FW_LOAD(&self.node.state) < FW_FINISHED:
                self._callbacks = new   # (the old value: `cbs` still holds it)
                fw_unlock(&fw_P.cb_lock)
                return True
            fw_unlock(&fw_P.cb_lock)
            cbs = new = None  # changed meanwhile (or completed): drop ours unlocked, look again

    def _remove_done_callback(self, fn):
        """Remove every registration of `fn` (by identity) that has not run;
        how many were removed. (forkwait's own waits on many futures take
        back the callbacks they added, so that nothing they leave keeps a
        member's waiters or results alive.)"""
        cdef object cbs
        cdef object new
        cdef Py_ssize_t removed
        if FW_LOAD(&self.node.cb_adders) == 0:
            return 0  # none was ever added
        while True:
            fw_lock(&fw_P.cb_lock)
            cbs = self._callbacks
            fw_unlock(&fw_P.cb_lock)
            if cbs is None:
                return 0
            if cbs is fn:
                new, removed = None, 1
            elif type(cbs) is list:
                # identity only: no __eq__ of the user's runs here
                new = [cb for cb in <list>cbs if cb is not fn]
                removed = len(<list>cbs) - len(<list>new)
                if removed == 0:
                    return 0
                if not new:
                    new = None
            else:
                return 0
            fw_lock(&fw_P.cb_lock)
            if self._callbacks is cbs:
                self._callbacks = new
                fw_unlock(&fw_P.cb_lock)
                return removed
            fw_unlock(&fw_P.cb_lock)  # changed meanwhile: look again

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
        # As concurrent.futures sees it (see _pool/complete.h): a final
        # state that concurrent.futures' waiters were installed for shows
        # once the completer has published it under _cf_lock, with their
        # notification; until then it is RUNNING.
        cdef int st = FW_LOAD(&self.node.state)
        cdef int pub
        if st >= FW_FINISHED:
            pub = FW_LOAD(&self.node.cf_pub)
            while pub == FW_CF_UNDECIDED:  # the completer decides right after its write
                sched_yield()
                pub = FW_LOAD(&self.node.cf_pub)
            if pub == FW_CF_TO_PUBLISH:
                st = FW_RUNNING
        return _CF_STATES[st]

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
    def __reduce__(self):
        raise TypeError(
            "cannot pickle a forkwait.Future: it stands for a call in this process; "
            "send its value (fut.result()) instead (forks made in a fw.backend() "
            "block take Futures as arguments and send what the cluster needs)"
        )

    def __repr__(self):
        cdef int state = FW_LOAD(&self.node.state)
        extra = ""
        if state == FW_FINISHED:
            extra = f" returned {type(self._result).__name__}"
        elif state == FW_FAILED:
            extra = f" raised {type(self._exc).__name__}"
        name = ""
        with cython.critical_section(self):  # (_release_call clears it: see there)
            fn = self._fn
        if fn is not None:
            name = " " + _task_name(fn)
        return f"<forkwait.Future{name} at {id(self):#x} state={_STATE_NAMES[state]}{extra}>"


@cython.final
cdef class _FailureGuard:
    """Reports a failure that nobody retrieved when its future dies.

    Only a failed future has one (asyncio's old ``_TracebackLogger`` design),
    so the other futures have no finalizer at all: a finalizer on the Future
    type would cost every fork a finalizer call at deallocation. Its
    ``__del__`` runs as tp_finalize, before the cyclic GC clears anything in
    a cycle, so the exception it holds is intact (and kept alive by the
    report). Armed guards are listed (weakly) in _armed, so that the
    failures of futures still alive at exit are reported too, while logging
    is up (_exit_reports)."""
    cdef object exc
    cdef size_t addr
    cdef object __weakref__

    def __del__(self):
        _armed.pop(<size_t><void *>self, None)
        if self.exc is not None:
            _defer_unretrieved_report(self.addr, self.exc)
            self.exc = None


cdef dict _armed = {}   # address of each armed guard -> a weak reference to it


cdef inline int _arm_guard(FutureCore fut, object exc) except -1:
    """Before `fut` is seen failed: report `exc` if nobody retrieves it."""
    cdef _FailureGuard g = _FailureGuard.__new__(_FailureGuard)
    g.exc = exc
    g.addr = <size_t><void *>fut
    _armed[<size_t><void *>g] = weakref.ref(g)
    fut._guard = g
    return 0


cdef inline void _mark_retrieved(FutureCore fut) noexcept:
    """The failure of `fut` was seen by the user (or never happened, when a
    hand-made future's completion lost a race): nothing to report. Threads
    that retrieve it at once take the guard in a critical section (a no-op
    with the GIL): one of them disarms it."""
    cdef _FailureGuard g
    if fut._guard is None:
        return
    with cython.critical_section(fut):
        g = fut._guard
        fut._guard = None
    if g is not None:
        g.exc = None
        _armed.pop(<size_t><void *>g, None)


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




cdef inline FutureCore _new_future():
    # The type's tp_new slot directly (FutureCore.__new__(Future) would look
    # up and call __new__ through a wrapper on every fork).
    return <FutureCore>fw_new_of(_FutureType)


cdef inline FutureCore _new_task_future():
    # A forked task's: out of the cyclic GC from the start (see _fork_impl).
    return <FutureCore>fw_new_untracked(_FutureType)
