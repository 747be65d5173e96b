# Waiting: the isolation rule (what a waiting thread may run), deep waits,
# cycles, timeouts.

# A deep waiter blocks when fewer C stack bytes than this are left
# (or a quarter of the thread's stack, when that is smaller).
cdef enum:
    STACK_MARGIN = 512 * 1024
# The main thread wakes this often while it waits, so that Ctrl-C is seen.
cdef double SIGNAL_POLL_S = 0.05
# The thread that imported forkwait (the child's forking thread after os.fork()):
# its waits poll for Ctrl-C, and a KeyboardInterrupt raised in a task it ran goes on.
cdef unsigned long main_ident = PyThread_get_thread_ident()
cdef long long _wait_tokens = 0   # marks of wait_all's help roots

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
                token = FW_ADDLL(&_wait_tokens, 1)
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
