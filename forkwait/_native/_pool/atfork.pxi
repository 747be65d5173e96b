# os.fork(): the child's reset of the pool around its one thread.
#
# The pool's process state, and what the child of os.fork() does with each
# piece (one list: a piece of state that is not here lives in fw_P):
#
#   C, in _atfork_prepare/_parent (inside fork(): the pool's locks, then the
#   BLAS record's lock, are held across it) and _atfork_child:
#     fw_P's locks and sleep counts   re-made (fw_atfork_child)
#     the intra-op teams' state       _team's team_atfork_child
#     the BLAS record                 _blas's blas_atfork_child
#   Python, in _after_fork_child (os.register_at_fork, after CPython's own):
#     fw_P's threads                  forgotten; their running tasks fail;
#                                     queued tasks stay and get workers
#     main_ident                      the forking thread (it is the child's main)
#     _spawn_lock, _cf_lock           new locks (a parent thread may have held one)
#     _report_scheduled, _unretrieved cleared: the parent reports those failures
#     _fork_hook                      cleared: a Dask client does not cross a fork;
#                                     the child's forks run on its own pool
#   Kept as they are: _prof_hook (a profile open in the forking thread goes
#   on recording in the child's copy), the counters _wait_tokens and
#   _prof_next_id, the GIL-free registrations, the Future free list (memory
#   of the child's own), _atexit_registered (threading's at-exit list is
#   copied with the process).

cdef void _atfork_prepare() noexcept nogil:
    """Before fork() (inside it, after CPython's own before-fork steps): the
    pool's locks, then the BLAS record's (no thread count of forkwait's
    changes between OpenBLAS's own before-fork handler, registered earlier
    and so run later, and the fork)."""
    fw_atfork_prepare()
    blas_atfork_prepare()


cdef void _atfork_parent() noexcept nogil:
    blas_atfork_parent()
    fw_atfork_parent()


cdef void _atfork_child() noexcept nogil:
    """The one C-level child handler of os.fork(): each native module's
    reset, in this order: the pool (its locks), the intra-op teams, BLAS."""
    fw_atfork_child()
    team_atfork_child()
    blas_atfork_child()


# ---------------------------------------------------------------- os.fork()

def _after_fork_child():
    """The child has only the thread that forked: reset the pool around it.

    (The locks were re-created by the pthread_atfork child handler.) Tasks
    queued at the fork stay queued and workers start for them now, so any
    kind of wait (timed, ``await``, a callback) sees them run. Tasks that
    other threads of the parent were running, in a worker, a spare or inline
    in a wait, cannot finish in the child: their futures fail with
    RuntimeError. The forking thread's own running tasks (os.fork() called
    from a task) carry on. The rest of the pool's Python state is reset as
    the list at the top of this file says.
    """
    global main_ident, _spawn_lock, _cf_lock, _report_scheduled, _unretrieved, _fork_hook
    cdef fw_node **orphans = NULL
    cdef Py_ssize_t n, i
    cdef list futs = []
    main_ident = PyThread_get_thread_ident()
    _spawn_lock = threading.Lock()
    _cf_lock = threading.RLock()
    _report_scheduled = 0
    _unretrieved = []
    _fork_hook = None
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
