# Completing a future: the final state once, waiters woken, callbacks run
# in a loop (never by recursion), what the run needed released.

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
    if FW_LOAD(&fut.node.cf_pub) == FW_CF_TO_PUBLISH:
        _notify_cf_waiters(fut)
    _release_call(fut)
    if callbacks is not None:
        _run_callbacks(fut, callbacks)
    return 0


cdef inline void _release_call(FutureCore fut) noexcept:
    """A task is final: what only its run needed goes. The function is the
    one field another thread may read meanwhile (repr): it is swapped out in
    a critical section (a no-op with the GIL), and dropped after it."""
    cdef object fn
    with cython.critical_section(fut):
        fn = fut._fn
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


cdef inline void _unlink_parent(FutureCore fut) noexcept:
    """A task is done: it counts itself out of its `live` count, and each
    task whose count that brings to 0 (done, and no forked descendant left
    undone) drops its parent link, counting itself out of its parent's in
    turn. So a finished tree lets go of its ancestors' results, while a
    task still queued keeps its whole chain of ancestors (helpers walk it to
    find the subtree). Each link is dropped once, by the thread whose count
    reached 0 (no two threads clear the same field)."""
    cdef FutureCore p
    # (a count of 1 is the task itself alone: no child is left to count out
    # at the same time, so the common case needs no atomic decrement; a task
    # forked outside any task then has no link to drop either)
    if fut._parent is None and FW_LOAD(&fut.node.live) == 1:
        FW_STORE_REL(&fut.node.live, 0)
        return
    while fut is not None and (FW_LOAD(&fut.node.live) == 1
                               or FW_ADD(&fut.node.live, -1) == 0):
        FW_STORE_REL(&fut.node.live, 0)
        p = fut._parent
        FW_STORE_REL(&fut.node.parent, NULL)  # (atomic: _fork_impl no longer reads it after the push)
        fut._parent = None
        fut = p


cdef _notify_cf_waiters(FutureCore fut):
    """Publish the final state to concurrent.futures' waiters: its `_state`
    and their notification change in one step, under _cf_lock, as the
    standard Future's do (see _pool/complete.h)."""
    cdef int state
    with _cf_lock:
        FW_STORE(&fut.node.cf_pub, FW_CF_PUBLISHED)
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
    if state == FW_FAILED and not fut._quiet:
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
