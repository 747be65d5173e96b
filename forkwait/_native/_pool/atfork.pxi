# os.fork(): the child's reset of the pool around its one thread.

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
