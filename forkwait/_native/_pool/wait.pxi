# Waiting: the isolation rule (what a waiting thread may run), deep waits,
# cycles, timeouts.

# A deep waiter blocks when fewer C stack bytes than this are left
# (or a quarter of the thread's stack, when that is smaller).
cdef enum:
    STACK_MARGIN = 512 * 1024
# The main thread wakes this often while it waits, so that Ctrl-C is seen.
cdef double SIGNAL_POLL_S = 0.05
# A wait that left a queued future to an idle pool thread looks again this
# often while it is still queued.
cdef double LEFT_POLL_S = 0.001
cdef enum:
    IDLE_REREAD = 32   # claims of a pass between two reads of the idle threads' count
# The thread that imported forkwait (the child's forking thread after os.fork()):
# its waits poll for Ctrl-C, and a KeyboardInterrupt raised in a task it ran goes on.
cdef unsigned long main_ident = PyThread_get_thread_ident()
cdef long long _wait_tokens = 0   # marks of wait_all's help roots
# A timeout this long (threading.TIMEOUT_MAX: about 292 years) or longer is
# no deadline at all: a deadline past it would overflow the time_t of the
# sleep's timespec (it spun a CPU).
cdef double TIMEOUT_MAX = threading.TIMEOUT_MAX

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
    if t >= TIMEOUT_MAX:
        return -1.0  # inf, or so far off (past threading.TIMEOUT_MAX) that it never comes
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


cdef int _check_not_own_ancestor(FutureCore fut) except -1:
    cdef fw_thread *runner = fw_runner_of(&fut.node)
    if FW_LOAD(&fut.node.state) == FW_RUNNING and runner != NULL and runner == fw_me_get():
        raise RuntimeError(
            f"deadlock: {fut!r} waits on itself (the waiting code runs inside that "
            "task, directly or through tasks it waits on)"
        )
    return 0


# ---------------------------------------------------------------- the wait loop
#
# Every thread that waits runs one loop, _wait_loop: until its policy says it
# is done, it claims a task that the isolation rule lets it run (_w_claim)
# and runs it (_w_run), or, when there is none, pauses (_w_pause: sleeps,
# spins or, for a pool thread, idles) and acts on why it woke (_w_woke).
# The kinds of wait differ only in these four steps (oneTBB's
# local_wait_for_all with its waiter policies):
#
#   W_ONE   wait(), result(), exception() on one future. Done when it is.
#           Claims the future itself while it is queued, then queued tasks of
#           its subtree (forked by it or its descendants), nothing else.
#   W_MANY  wait_all, wait_any, as_completed, scope: a hand-made future
#           (`done`) that the members complete. Claims the unstarted members
#           in order, then queued tasks of the running members' subtrees.
#           Without `done` (wait_all's first pass) it is done at the end of
#           the list or at the first failure, and records values meanwhile.
#   W_IDLE  a pool thread between tasks (worker or spare): claims any queued
#           task; never done, it returns when the thread must stop.
#
# A wait with a deadline claims nothing once the deadline has passed; a wait
# too deep in the stack to run more inline claims nothing and is
# compensated by a spare thread (_wait).
#
# A wait that may end early (`early`: it has a deadline, or it is a wait on
# many that another member's outcome can end: wait_all's first failure,
# wait_any's first done) leaves queued futures it waits for to the pool
# threads that are idle now, one each, and runs the others itself: a member
# it ran inline could not be left for a failure or a deadline meanwhile
# (docs/guide.md, "Waits that may end early"). It looks again every
# millisecond while one it left is still queued, and runs it itself once no
# pool thread is idle: a future is never left unrun (no deadlock). A plain
# wait() runs its future inline, as always (the fork/wait round trip).

cdef enum:
    W_ONE = 0
    W_MANY = 1
    W_IDLE = 2

ctypedef struct waiter_t:
    int kind
    bint helps            # may claim tasks (not a zero timeout, not too deep)
    fw_node *target       # W_ONE: the future's node; W_MANY: done's (or NULL)
    PyObject *fut         # W_ONE: the future; W_MANY: done (borrowed, or NULL)
    PyObject *members     # W_MANY: the list of member futures (borrowed)
    PyObject *values      # W_MANY without done: a list for the members' values
    PyObject *rest_at     # ... and one for the indices of those still running
    Py_ssize_t next       # W_MANY: the first member the first pass has not seen
    Py_ssize_t running_at # W_MANY: the member this thread runs now (-1: none)
    PyObject *failed      # W_MANY without done: the first member seen failed
    double deadline       # < 0: none
    double poll           # > 0: wake this often to check for Ctrl-C
    double slept          # seconds spent asleep (the profiler's wait time)
    fw_node *help_node    # registered as a helper of this node until the pause ends
    unsigned long long epoch
    long long token       # W_MANY: the mark of the running members helped
    PyObject *running     # ... those members while registered (a list; owned)
    fw_many *many         # W_MANY untimed: its members, for the cycle check (owned)
    bint any              # W_MANY: the first member done ends it (wait_any), not all
    bint early            # it may end before a member it would run inline is done
                          # (a deadline; wait_all's first failure; wait_any's first done)
    int left              # queued members (or the target) left to idle pool threads
    int idle              # ... the idle threads counted when last read
    int idle_reread       # ... claims left until it is read again
    bint pending          # ... of which one was still queued at the last claim
    bint spun             # W_ONE: spun once on its running GIL-free target
    int slot              # W_IDLE: the thread's deque
    int worker_index      # W_IDLE: the worker's index (-1: a spare)
    bint spare
    bint searching        # W_IDLE: still counted as searching since its pause
    bint skip_claim       # W_IDLE: back to the pause without a claim


cdef inline void _waiter_init(waiter_t *w, int kind, double deadline) noexcept:
    memset(w, 0, sizeof(waiter_t))
    w.kind = kind
    w.deadline = deadline
    w.running_at = -1
    if kind != W_IDLE and PyThread_get_thread_ident() == main_ident:
        w.poll = SIGNAL_POLL_S


cdef inline bint _w_done(waiter_t *w) noexcept:
    if w.kind == W_ONE:
        return FW_LOAD(&w.target.state) >= FW_FINISHED
    if w.kind == W_MANY:
        if w.target != NULL:
            return FW_LOAD(&w.target.state) >= FW_FINISHED
        return w.failed != NULL or w.next >= PyList_GET_SIZE(w.members)
    return False


cdef inline bint _w_may_claim(waiter_t *w) noexcept:
    return w.helps and (w.deadline < 0.0 or fw_now() < w.deadline)


cdef inline int _idle_threads() noexcept nogil:
    """Pool threads looking for work or asleep now."""
    return FW_LOAD(&fw_P.searching) + FW_LOAD(&fw_P.sleepers)


cdef inline bint _w_leaves(waiter_t *w, fw_node *n) noexcept:
    """Should this early-ending waiter leave queued future `n`, which it
    waits for, to an idle pool thread (one idle thread per future left)?
    Never a GIL-free call: a kernel cannot fail and does bounded work, so
    running it here delays neither a failure nor a deadline by more than a
    kernel, and a pair of forked kernels keeps this thread busy with one. The
    count of idle threads (counters that every idle thread writes) is read
    again only every IDLE_REREAD claims of a long pass."""
    if not w.early or n.gil_free != NULL:
        return False
    if w.idle_reread <= 0:
        w.idle = _idle_threads()
        w.idle_reread = IDLE_REREAD
    w.idle_reread -= 1
    if w.left < w.idle:
        w.left += 1
        w.pending = True
        return True
    return False


cdef inline fw_node *_w_claim(waiter_t *w) except? NULL:
    """The isolation rule: a queued task this waiter may run, claimed for
    this thread, or NULL. With nothing to claim, a waiter that may help is
    left registered as a helper (w.help_node), so that a fork into what it
    helps wakes it (see fw_notify_helpers); _w_unhelp ends that."""
    cdef fw_node *n
    if w.kind == W_IDLE:
        if w.skip_claim:
            w.skip_claim = False
            return NULL
        n = fw_find_work(w.slot)
        if w.searching:
            # counted as searching from fw_idle until this claim, so that a
            # fork meanwhile wakes nobody else for the same work
            fw_searching_done()
            w.searching = False
        return n
    if w.kind == W_ONE:
        if not _w_may_claim(w):
            return NULL
        # the target itself (a deep waiter's spare may not have taken it yet)
        w.pending = False
        if FW_LOAD(&w.target.state) == FW_PENDING:
            if w.early and w.target.gil_free == NULL and _idle_threads() > 0:
                w.pending = True  # a timed wait leaves it to an idle pool thread
                return NULL
            if fw_claim_node(w.target, FW_RUNNING):
                return w.target
        if w.early and _idle_threads() > 0:
            return NULL  # nor does it run its subtree meanwhile
        if w.target.gil_free != NULL:
            return NULL  # a kernel call forks nothing: no subtree to help
        w.epoch = fw_help_begin(w.target)
        n = fw_claim_subtree(w.target, 0)
        if n != NULL:
            fw_help_end(w.target)
            return n
        w.help_node = w.target
        return NULL
    if w.next < PyList_GET_SIZE(w.members):
        # the first pass (wait_all's reads every member, claiming or not)
        if w.target == NULL or _w_may_claim(w):
            n = _w_claim_member(w)
            if n != NULL or w.target == NULL:
                return n
        w.next = PyList_GET_SIZE(w.members)
    if not _w_may_claim(w):
        return NULL
    if w.left:
        n = _w_claim_left(w)
        if n != NULL:
            return n
    return _w_claim_in_running(w)


cdef fw_node *_w_claim_left(waiter_t *w) except? NULL:
    """W_MANY: a member it left to an idle pool thread, still queued, once
    no pool thread is idle (then nobody else may run it soon)."""
    cdef FutureCore f
    w.pending = False
    for f in <list>w.members:
        if FW_LOAD(&f.node.state) == FW_PENDING and f.node.is_task:
            if f.node.gil_free == NULL and _idle_threads() > 0:
                w.pending = True
                return NULL
            if fw_claim_node(&f.node, FW_RUNNING):
                return &f.node
    return NULL


cdef inline fw_node *_w_claim_member(waiter_t *w) except? NULL:
    """W_MANY's first pass: the next unstarted member, in order, claimed
    (recording the values of members done meanwhile, without `done`).
    Members are read as borrowed pointers (the list holds them): a pass
    over 10^5 futures is most of a wait_all."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(w.members)
    cdef fw_node *node
    cdef int state
    cdef bint timed = w.deadline >= 0.0
    while w.next < n:
        if w.target != NULL and FW_LOAD(&w.target.state) >= FW_FINISHED:
            return NULL
        i = w.next
        w.next += 1
        node = &(<FutureCore>PyList_GET_ITEM(w.members, i)).node
        state = FW_LOAD(&node.state)
        if state == FW_PENDING and node.is_task and w.helps \
                and (not timed or fw_now() < w.deadline) \
                and not _w_leaves(w, node) and fw_claim_node(node, FW_RUNNING):
            w.running_at = i
            return node
        if w.values != NULL:
            _w_note_member(w, i, <FutureCore>PyList_GET_ITEM(w.members, i), state)
            if w.failed != NULL:
                return NULL
    return NULL


cdef inline int _w_note_member(waiter_t *w, Py_ssize_t i, FutureCore f, int state) except -1:
    """wait_all's pass: member i's value, its failure, or its index to wait on."""
    if state == FW_FINISHED:
        (<list>w.values)[i] = f._result
    elif state >= FW_FINISHED:
        w.failed = <PyObject *>f
    else:
        (<list>w.rest_at).append(i)
    return 0


cdef fw_node *_w_claim_in_running(waiter_t *w) except? NULL:
    """W_MANY after its first pass: a queued task of a running member's
    subtree (each running member marked with a fresh token)."""
    cdef FutureCore f
    cdef fw_node *n
    cdef list run = [f for f in <list>w.members
                     if FW_LOAD(&(<FutureCore>f).node.state) == FW_RUNNING
                     and (<FutureCore>f).node.is_task]
    if not run:
        return NULL
    w.token = FW_ADDLL(&_wait_tokens, 1)
    for f in run:
        f.node.mark = w.token
    w.epoch = fw_help_begin(w.target)
    for f in run:
        FW_ADD(&f.node.help_waiters, 1)
    n = fw_claim_subtree(NULL, w.token)
    if n != NULL:
        for f in run:
            FW_ADD(&f.node.help_waiters, -1)
        fw_help_end(w.target)
        return n
    w.help_node = w.target
    Py_INCREF(run)
    w.running = <PyObject *>run
    return NULL


cdef inline void _w_unhelp(waiter_t *w) noexcept:
    """End the helper registration that _w_claim left."""
    cdef FutureCore f
    cdef object running
    if w.help_node == NULL:
        return
    if w.running != NULL:
        running = <object>w.running
        Py_DECREF(running)  # the waiter's reference; `running` holds one
        w.running = NULL
        for f in <list>running:
            FW_ADD(&f.node.help_waiters, -1)
    fw_help_end(w.help_node)
    w.help_node = NULL


cdef inline int _run_claimed(fw_node *n) except -1:
    """Run task `n`, claimed by this waiting thread (the queue's reference
    passes to us). Raises KeyboardInterrupt if the task took Ctrl-C here."""
    cdef FutureCore task = <FutureCore>FW_FUT_OF(n)
    Py_DECREF(task)
    if _run_task(task):
        raise KeyboardInterrupt
    return 0


cdef inline int _w_run(waiter_t *w, fw_node *n) except -1:
    """Run claimed task `n` here: the claim-and-run of every wait. A waiter
    runs it with _run_claimed; a pool thread lets nothing it raises end the
    thread, and runs a GIL-free task (and those it finds next) without the
    GIL."""
    cdef FutureCore task
    cdef int more
    if w.kind == W_IDLE:
        if n.gil_free != NULL:
            with nogil:
                more = _run_gil_free_run(n, w.slot, w.worker_index, w.spare)
            w.skip_claim = not more
            return 0
        fw_tickle()
        task = <FutureCore>FW_FUT_OF(n)
        Py_DECREF(task)  # the queue's reference; `task` holds one
        _run_guarded(task)
        task = None
        _drain_if_any()
        if not w.spare and w.worker_index >= FW_LOAD(&fw_P.target_workers):
            w.skip_claim = True  # the pool shrank: stop after this task
        return 0
    _run_claimed(n)
    if w.running_at >= 0:
        if w.values != NULL:
            _w_note_member(w, w.running_at, <FutureCore>FW_FUT_OF(n), FW_LOAD(&n.state))
        w.running_at = -1
    return 0


cdef int _w_pause(waiter_t *w) noexcept:
    """Nothing to claim: sleep until something changes (without the GIL).
    Returns why it woke (FW_W_*; for W_IDLE fw_idle's answer instead)."""
    cdef int action
    cdef fw_node *t = w.target
    if w.kind == W_MANY and t == NULL:
        return FW_W_DONE  # wait_all's first pass: nothing to sleep on
    if w.kind == W_IDLE:
        with nogil:
            action = _idle_pause(w.slot, w.worker_index, w.spare)
        return action
    if w.kind == W_ONE and not w.spun and t.gil_free != NULL \
            and FW_LOAD(&t.state) == FW_RUNNING:
        # A GIL-free task completes without the GIL: a short kernel's end is
        # seen here without a futex wake of this thread.
        w.spun = True
        with nogil:
            fw_spin_until_done(t, FW_GIL_FREE_SPIN_S, w.deadline)
        return FW_W_RESCAN
    cdef double poll = w.poll
    if w.pending and (poll == 0.0 or poll > LEFT_POLL_S):
        poll = LEFT_POLL_S  # look again soon: what it left may still be queued
    with nogil:
        _blas_asleep(-1)
        action = fw_sleep_wait(t, w.deadline, poll, w.help_node, w.epoch,
                               w.kind == W_MANY or t.is_task or t.many != NULL,
                               w.many, &w.slept)
        _blas_asleep(1)
    return action


cdef int _w_woke(waiter_t *w, int action) except -1:
    """Act on why the pause ended: 1 when the wait is over (a pool thread
    that must stop), else 0 to go round again; raises on a timeout or a
    cycle of waits, and Ctrl-C in the main thread."""
    if w.kind == W_IDLE:
        if action == IDLE_STOP:
            return 1
        if action == IDLE_RELEASE:
            _drain_deferred()  # idle now: release what GIL-free tasks left
            w.skip_claim = True
        elif action == IDLE_WORK:
            w.searching = True
        return 0
    if action == FW_W_POLL:
        PyErr_CheckSignals()
    elif action == FW_W_TIMEOUT:
        if w.kind == W_ONE:
            raise FuturesTimeoutError(f"{<object>w.fut!r} not done within the timeout")
        raise FuturesTimeoutError("futures not done within the timeout")
    elif action == FW_W_CYCLE:
        if w.kind == W_MANY:
            raise RuntimeError(
                f"deadlock: this wait on {len(<list>w.members)} futures closes a cycle of "
                f"waits ({'every one' if w.any else 'one'} of them waits, directly or "
                "through other tasks, on this thread's own task)"
            )
        raise RuntimeError(
            f"deadlock: waiting on {<object>w.fut!r} closes a cycle of waits (the task "
            "it runs waits, directly or through other tasks, on this thread's "
            "own task)"
        )
    return 0


cdef int _wait_loop(waiter_t *w) except -1:
    """The one wait loop (see the policies above)."""
    cdef fw_node *n
    cdef double w0 = 0.0
    cdef int action
    cdef bint timed = w.kind != W_IDLE and fw_prof_on
    if timed:
        w0 = fw_now()
    try:
        while not _w_done(w):
            n = _w_claim(w)
            if n != NULL:
                _w_run(w, n)
                continue
            action = _w_pause(w)
            _w_unhelp(w)
            if _w_woke(w, action):
                break
    finally:
        _w_unhelp(w)
        if timed and fw_prof_on:
            _add_wait(w.slept)
            if w.kind == W_ONE:
                _record_wait(<FutureCore>w.fut, w0)
    return 0


cdef int _wait(waiter_t *w) except -1:
    """_wait_loop for a wait that may run tasks inline: one too deep in the
    stack to run more blocks instead, with a spare thread started to keep
    the pool's capacity (Java's ForkJoinPool's managed blocking)."""
    if w.helps and _too_deep() and _begin_blocking():
        w.helps = False
        try:
            return _wait_loop(w)
        finally:
            with nogil:
                _end_blocking()
    return _wait_loop(w)


cdef int _wait_done(FutureCore fut, double timeout) except -1:
    """Return once `fut` is done (or raise TimeoutError / KeyboardInterrupt /
    RuntimeError on a cycle of waits).

    Runs `fut` itself if it has not started, then, while it runs elsewhere,
    queued tasks of its subtree (the W_ONE policy). `timeout` < 0: no
    deadline; 0: only look.
    """
    _drain_if_any()
    if FW_LOAD(&fut.node.state) >= FW_FINISHED:
        return 0
    # The wait loop's first step, unrolled (the fork/wait round trip): a
    # wait on a queued task claims it and runs it here.
    if timeout < 0.0 and fut.node.is_task and not _too_deep() \
            and fw_claim_node(&fut.node, FW_RUNNING):
        return _run_claimed(&fut.node)
    return _wait_one(fut, timeout)


cdef int _wait_one(FutureCore fut, double timeout) except -1:
    cdef waiter_t w
    _waiter_init(&w, W_ONE, -1.0 if timeout < 0.0 else fw_now() + timeout)
    w.target = &fut.node
    w.fut = <PyObject *>fut
    w.helps = timeout != 0.0 and fut.node.is_task
    w.early = timeout >= 0.0
    if fut.node.is_task:
        _check_not_own_ancestor(fut)
    return _wait(&w)


cdef int _wait_many(list futs, FutureCore done, double deadline, bint any) except -1:
    """Wait until `done` (a hand-made future that the members complete) is
    done, running the unstarted members and the subtrees of running ones.
    `any`: the first member done completes `done` (else all must: the
    cycle check needs to know which)."""
    cdef waiter_t w
    cdef FutureCore f
    for f in futs:
        _check_not_own_ancestor(f)
    _waiter_init(&w, W_MANY, deadline)
    w.target = &done.node
    w.fut = <PyObject *>done
    w.members = <PyObject *>futs
    w.helps = deadline != 0.0
    w.any = any
    w.early = deadline >= 0.0 or any or len(futs) > 1
    if deadline < 0.0:
        w.many = _many_of(futs, any)
    try:
        return _wait(&w)
    finally:
        PyMem_RawFree(w.many)


cdef fw_many *_many_of(list futs, bint any) except? NULL:
    """The members of a wait, for the cycle check (the caller keeps the
    futures alive, and frees it with PyMem_RawFree)."""
    cdef fw_many *m = fw_many_new(len(futs), any)
    if m == NULL:
        raise MemoryError()
    return _many_into(<char *>m, futs, any)


cdef fw_many *_many_into(char *mem, list futs, bint any) noexcept:
    """Fill `mem` (room for len(futs) members) as a fw_many of `futs`."""
    cdef Py_ssize_t i, n = len(futs)
    cdef fw_many *m = <fw_many *>mem
    m.n = n
    m.any = any
    for i in range(n):
        m.nodes[i] = &(<FutureCore>futs[i]).node
    return m
