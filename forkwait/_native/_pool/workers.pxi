# The pool's threads: workers and compensating spares.

# ---------------------------------------------------------------- workers

cdef void _run_guarded(FutureCore task) noexcept:
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


cdef enum:
    # why an idle pool thread's pause ended (fw_idle's answers, and one more)
    IDLE_STOP = 0       # the thread must stop (the pool shrank or closes)
    IDLE_WORK = 1       # work is queued (still counted as searching)
    IDLE_RELEASE = 2    # finished GIL-free tasks wait for a release with the GIL
    IDLE_MORE = 4       # GIL-free tasks ran here; other work is queued


cdef int _idle_pause(int slot, int worker_index, int spare) noexcept nogil:
    """W_IDLE's pause, without the GIL: look for work and sleep (fw_idle);
    GIL-free tasks found meanwhile run here, one after the other, and the
    GIL is taken only for other work (taking it between two GIL-free tasks
    made the forking thread wait for this one at its next release of the
    GIL). Returns an IDLE_* reason."""
    cdef int r
    cdef fw_node *n
    while True:
        FW_ADD(&fw_P.searching, 1)
        r = fw_idle(worker_index, spare)
        if r != IDLE_WORK:
            return r
        if not spare and worker_index >= FW_LOAD(&fw_P.target_workers):
            fw_searching_done()
            return IDLE_STOP  # the pool shrank meanwhile: leave the work to the others
        n = fw_find_gil_free_work(slot)
        if n == NULL:
            return IDLE_WORK
        fw_searching_done()
        if _run_gil_free_run(n, slot, worker_index, spare):
            return IDLE_MORE
        # nothing for the GIL: idle again


cdef void _pool_thread_loop(int slot, int worker_index, int spare) noexcept:
    """Look for work, run it, sleep; return when this thread must stop: the
    wait loop with the W_IDLE policy."""
    cdef waiter_t w
    _waiter_init(&w, W_IDLE, -1.0)
    w.helps = True
    w.slot = slot
    w.worker_index = worker_index
    w.spare = spare
    w.skip_claim = True  # a new thread pauses first
    try:
        _wait_loop(&w)
    except BaseException:  # (nothing in the loop raises for a pool thread)
        try:
            _logger.error("forkwait: error in a pool thread's loop", exc_info=True)
        except BaseException:
            pass


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
            if FW_LOAD(&fw_P.state) == FW_POOL_RUNNING and index < FW_LOAD(&fw_P.target_workers):
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
