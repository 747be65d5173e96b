# GIL-free tasks: forked kernel calls that run, and complete on a worker,
# without the GIL (see _fw_gil_free.h).

# ---------------------------------------------------------------- GIL-free tasks

cdef enum:
    MAX_GIL_FREE = 32
cdef list _gil_free_fns = []   # [(fn, prepare), ...] (see _register_gil_free); holds them
cdef enum:
    GIL_FREE_SLOTS = 64   # a power of two, at least twice MAX_GIL_FREE
# fork's identity check: an open-addressed table of their fns (borrowed) and
# prepare functions, by address, so that a fork of any other function costs
# one load and compare (the common case), not a pass over all of them
cdef PyObject *_gil_free_fn[GIL_FREE_SLOTS]
cdef PyObject *_gil_free_prep[GIL_FREE_SLOTS]
cdef int _n_gil_free_fns = 0


cdef inline size_t _gil_free_slot(PyObject *fn) noexcept:
    return (<size_t>fn >> 4) & (GIL_FREE_SLOTS - 1)


_gil_free_lock = threading.Lock()
cdef list _gil_free_kept = []   # every (fn, prepare) ever registered: forks read the
                                # table without a lock, so no entry of it is ever freed


def _register_gil_free(fn, prepare):
    """Make ``fork(fn, ...)`` a GIL-free task wherever ``prepare(args,
    kwargs)`` accepts the call (``kwargs`` None without keywords): it
    returns ``(capsule, result)`` (see ``_fw_gil_free.h``) or None for the
    ordinary path. ``prepare=None`` removes `fn`."""
    if prepare is not None and not callable(prepare):
        raise TypeError(f"prepare must be callable, got {type(prepare).__name__}")
    with _gil_free_lock:
        _register_gil_free_locked(fn, prepare)


cdef _register_gil_free_locked(fn, prepare):
    global _n_gil_free_fns
    cdef int i
    entries = [e for e in _gil_free_fns if e[0] is not fn]
    if prepare is not None:
        if len(entries) >= MAX_GIL_FREE:
            raise ValueError(f"at most {MAX_GIL_FREE} GIL-free functions")
        entries.append((fn, prepare))
        _gil_free_kept.append((fn, prepare))
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
        _tasks_running(1)
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
        _tasks_running(-1)
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
