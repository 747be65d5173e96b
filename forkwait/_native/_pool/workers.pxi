# The pool's threads: workers and compensating spares.

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
