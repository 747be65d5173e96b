# Pool control: starting, resizing, shutting down at exit, statistics.

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
        if index >= FW_LOAD(&fw_P.target_workers):
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
    cdef Py_ssize_t queued = fw_queued_hint()
    fw_lock(&fw_P.sleep_lock)
    d = (queued, fw_stats_running(), fw_P.sleepers, fw_P.live_workers,
         FW_LOAD(&fw_P.target_workers), fw_P.state, fw_P.n_spares, fw_P.n_deep,
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
