# Running a claimed task: the call in its context, at its intra-op setting,
# and its future completed; the future's place in the cyclic GC.

# ---------------------------------------------------------------- running

def _gc_track_self(FutureCore fut):
    if not PyObject_GC_IsTracked(fut):
        PyObject_GC_Track(fut)


cdef inline void _track_if_needed(FutureCore fut) noexcept:
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


cdef inline void _gc_retrack(FutureCore fut) noexcept:
    """A task left its queue (claimed or cancelled): back under the GC."""
    if not PyObject_GC_IsTracked(fut):
        PyObject_GC_Track(fut)
    ctx = fut._ctx
    if ctx is not None and fut.node.gil_free == NULL and not PyObject_GC_IsTracked(ctx):
        PyObject_GC_Track(ctx)


cdef inline void _tasks_running(int delta) noexcept nogil:
    """Threads running task code: counted for the BLAS budget and for the
    teams' share of the CPUs (team_begin)."""
    blas_tasks(delta)
    team_tasks(delta)


cdef inline void _blas_asleep(int delta) noexcept nogil:
    """A task blocks in a wait (-1) or goes on (+1): not running, for the budget."""
    if fw_task_depth > 0:
        _tasks_running(delta)


cdef int _starting_soon() noexcept nogil:
    """For the torch budget: queued tasks that other threads may begin
    soon (at most the pool's workers), counted as running with this one: a
    waiting thread that runs the first of several forked branches at once
    must not take the whole team the others will share."""
    cdef Py_ssize_t q = fw_queued_hint()
    cdef int w = FW_LOAD(&fw_P.target_workers)
    return <int>(q if q < w else w)


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
        _tasks_running(1)   # the BLAS budget and the teams count threads running task code
        torch_begin(fut._torch, _starting_soon)  # and torch's threads get their share (_fw_torch.h)
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
        torch_end()
        _tasks_running(-1)
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
