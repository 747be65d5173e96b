# The public calls: fork, wait, wait_all, collect_all, and the checks of
# their arguments.

# ---------------------------------------------------------------- public calls

cdef object _fork_hook = None   # forkwait's Dask backend while a block is active


cdef list _retired_hooks = []   # every hook ever set, kept: see _set_fork_hook


def _set_fork_hook(hook):
    """Install ``hook(fn, args, kwargs) -> Future or None`` for forks made
    outside any task (None removes it); returns the old one."""
    global _fork_hook
    # A fork reads the hook without a lock (every fork does): an old hook
    # must outlive a fork that read it just before the change, so no hook
    # object ever set is freed (there are a handful in a process's life).
    _retired_hooks.append(hook)
    old = _fork_hook
    _fork_hook = hook
    return old


cdef object _fork_impl(object fn, PyObject **argv, Py_ssize_t nargs, object kwargs):
    """The body of fork(): `fn` and its `nargs` positional arguments `argv`
    (borrowed); `kwargs` is None when the call had no keywords."""
    if not callable(fn):
        raise TypeError(
            f"fork() needs a callable as its first argument, got {type(fn).__name__}: "
            f"{_short_repr(fn)}"
        )
    hook = _fork_hook  # (read once: another thread may change it)
    if hook is not None and fw_task_depth == 0:
        hooked = hook(fn, fw_args_tuple(argv, nargs), {} if kwargs is None else kwargs)
        if hooked is not None:
            return hooked
    if FW_LOAD(&fw_P.state) == FW_POOL_IDLE:
        _start_pool()
    # GIL-free tasks that workers completed without the GIL are released
    # here too, not only by waits: a loop that forks kernels and never waits
    # on them would otherwise hold every finished one's arrays
    _drain_if_any()
    cdef PyObject *prepare = NULL
    if _n_gil_free_fns != 0 and not fw_prof_on:
        prepare = _gil_free_prepare(fn)
    cdef FutureCore fut = _new_task_future()
    cdef PyObject *cur = fw_get_cur()
    cdef FutureCore parent
    fut._fn = fn
    if prepare != NULL or kwargs is not None or nargs > 2:
        fut._args = fw_args_tuple(argv, nargs)
        fut._kwargs = kwargs
    else:  # the common call: no tuple (see FutureCore._a0)
        fut._nargs = <int>nargs
        if nargs >= 1:
            fut._a0 = <object>argv[0]
            if nargs == 2:
                fut._a1 = <object>argv[1]
    fut._intra = get_local_threads()
    fut._torch = torch_cap_here()
    if prepare == NULL or not _make_gil_free(fut, <object>prepare):
        fut._ctx = PyContext_CopyCurrent()
    fut.node.is_task = 1
    fut.node.live = 1   # itself, until done (see state.h)
    if cur != NULL:
        parent = <FutureCore>cur
        fut._parent = parent
        fut.node.parent = &parent.node
        fut.node.depth = parent.node.depth + 1
        FW_ADD(&parent.node.live, 1)
    if fw_prof_on:
        _prof_fork(fut)
    # While queued, the future (made untracked) and its context are alive
    # through the queue: out of the cyclic GC's lists until claimed (10^6
    # queued futures would otherwise make every full collection scan them all).
    if fut.node.gil_free == NULL and not FW_FREE_THREADED:
        PyObject_GC_UnTrack(fut._ctx)
    Py_INCREF(fut)  # owned by the queue while linked
    if fw_push(&fut.node):
        if fut.node.gil_free != NULL:
            fw_notify_pushed_gil_free()
        else:
            fw_notify_pushed()
        if cur != NULL:
            # (the parent, not fut.node.parent: a pool thread may have run
            # fut and dropped its link already)
            fw_notify_helpers(&parent.node)
        return fut
    _gc_retrack(fut)
    Py_DECREF(fut)
    if cur != NULL:
        FW_ADD(&parent.node.live, -1)
    fut._fn = fut._args = fut._kwargs = fut._ctx = fut._parent = None
    fut._a0 = fut._a1 = None
    fut.node.parent = NULL
    fut.node.gil_free = NULL
    fut._result = None
    _refuse_fork()


cdef _refuse_fork():
    raise RuntimeError(
        "forkwait's inter-op pool has shut down (the interpreter is exiting); "
        "fork() is not possible any more. Wait on your futures before the main "
        "thread ends, or run the call directly."
    )


# fork()'s doc (pool.pyx makes the builtin)
cdef bytes _FORK_DOC = ("fork(fn, /, *args, **kwargs)\n--\n\n" + """Run ``fn(*args, **kwargs)`` on the inter-op pool; return its Future now.

    Unlike eager ``torch.jit.fork``, the call never runs inside `fork`: it is
    queued and a pool thread (or a thread that waits on the future) runs it.
    Forked calls run at the same time when they release the GIL, as NumPy,
    BLAS and forkwait's own kernels do. The task runs in a copy of the
    caller's ``contextvars`` context and with the caller's intra-op setting
    (``with forkwait.num_threads(n)``), whichever thread runs it.
    ``fork(forkwait.ops.matmul, a, b)`` of plain 2-D float arrays, and
    ``fork(forkwait.ops.exp, x)`` (and the other unary ops) of a plain float
    array, are GIL-free tasks: checked here, run and (on a pool thread)
    completed without the GIL (see the user guide, "Forked kernels run
    without the GIL"); any other call of them is an ordinary task.

    Parameters
    ----------
    fn : callable
        The function to call (positional-only, so `fn` may take a keyword
        argument named ``fn``).
    *args, **kwargs
        Its arguments.

    Returns
    -------
    Future
        Completed with the call's return value or exception.

    Raises
    ------
    TypeError
        If `fn` is not callable.
    RuntimeError
        If the pool has shut down (the interpreter is exiting).

    Examples
    --------
    >>> import forkwait as fw
    >>> import numpy as np
    >>> a = np.ones((64, 64))
    >>> f1 = fw.fork(np.dot, a, a)
    >>> f2 = fw.fork(np.tanh, a)
    >>> float(fw.wait(f1)[0, 0]), float(fw.wait(f2)[0, 0].round(3))
    (64.0, 0.762)
    """).encode()


cdef object _wait_impl(object fut, object timeout):
    """The body of wait() (see _fw_fastcall.h)."""
    if not isinstance(fut, FutureCore):
        raise TypeError(f"wait() needs a forkwait.Future, got {type(fut).__name__}")
    cdef FutureCore f = <FutureCore>fut
    _wait_done(f, _check_timeout(timeout))
    return f._outcome()


# wait()'s doc (pool.pyx makes the builtin)
cdef bytes _WAIT_DOC = ("wait(fut, timeout=None)\n--\n\n" + """Wait for a future and return its value, as ``torch.jit.wait``.

    If the forked call has not started yet, the waiting thread runs it. If it
    is running elsewhere, the waiting thread runs queued tasks of that call's
    own subtree meanwhile (tasks it forked, and theirs), and nothing else. So
    a task may fork and wait on its own children to any depth, with any pool
    size, without deadlock, and a wait never runs unrelated work (which
    could need a lock the waiter holds). In the main thread Ctrl-C
    interrupts the wait.

    Parameters
    ----------
    fut : Future
    timeout : float, optional
        Seconds to wait at most; None waits until done.

    Returns
    -------
    object
        The call's return value.

    Raises
    ------
    BaseException
        The exception the call raised: the same object, whose traceback
        holds the call's own frames.
    concurrent.futures.CancelledError
        If the future was cancelled.
    TimeoutError
        If `timeout` passed first (the future keeps running).
    RuntimeError
        If the wait closes a cycle (a task waiting on its own future).

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.wait(fw.fork(divmod, 17, 5))
    (3, 2)
    """).encode()


def wait_all(futures, timeout=None):
    """Wait for every future and return their values, in order.

    As ``torch.futures.wait_all``: it fails fast, raising the exception of
    the first future to fail (in time, not in list order) without waiting
    for the others. Unstarted futures go to the pool threads that are idle,
    one each, and the waiting thread runs the rest itself (see the user
    guide, "Waits that may end early"): a future it ran itself could not be
    left for another's failure or for the deadline.

    Parameters
    ----------
    futures : iterable of Future
    timeout : float, optional
        Seconds to wait at most; TimeoutError then (the futures keep running).

    Returns
    -------
    list
        The values, in the order of `futures`.

    Raises
    ------
    BaseException
        The exception of the first member to fail.
    TypeError
        If a member is not a Future (before any member runs).
    RuntimeError
        If this thread runs one of the members (a wait on itself; before any
        member runs).
    TimeoutError
        If `timeout` passed first.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.wait_all([fw.fork(abs, -i) for i in range(4)])
    [0, 1, 2, 3]
    """
    cdef list futs = _as_future_list(futures, "wait_all", True)
    cdef double t = _check_timeout(timeout)
    cdef double deadline = -1.0 if t < 0.0 else fw_now() + t
    cdef FutureCore f
    cdef FutureCore coll
    cdef _Collector collector
    cdef Py_ssize_t i, n = len(futs)
    if n == 1:
        f = futs[0]
        _wait_done(f, t)
        return [f._outcome()]
    cdef int state
    cdef waiter_t w
    cdef list values = [None] * n
    cdef list rest_at = []
    cdef list rest
    # One pass, in order, failing fast: a member that is done gives its
    # value now, an unstarted one runs here (no callbacks are needed for
    # what this thread runs itself), the others are waited on below. One
    # pass, not one per step: 10^5 futures do not fit in the caches, and
    # every pass over them costs a cache miss per future. (The wait loop's
    # W_MANY policy without `done`: see wait.pxi.)
    _waiter_init(&w, W_MANY, deadline)
    w.members = <PyObject *>futs
    w.values = <PyObject *>values
    w.rest_at = <PyObject *>rest_at
    w.helps = t != 0.0 and not _too_deep()
    w.early = True  # (two or more members: the first failure ends it)
    _wait_loop(&w)
    if w.failed != NULL:
        (<FutureCore>w.failed)._outcome()  # failed or cancelled: raises
    if not rest_at:
        return values
    rest = [futs[i] for i in rest_at]
    for f in rest:  # one of them may have failed meanwhile
        state = FW_LOAD(&f.node.state)
        if state == FW_FAILED or state == FW_CANCELLED:
            f._outcome()
    if len(rest) == 1 and deadline < 0.0:
        # One left (e.g. the other of two forked branches): its own wait,
        # no collector; failing fast is waiting on it.
        _wait_done(<FutureCore>rest[0], -1.0)
    else:
        # The rest run elsewhere: sleep until all are done or one fails. The
        # collector is forkwait's own (quiet), and it is taken off the
        # members when the wait ends early (a timeout, Ctrl-C): a member's
        # later failure stays the member's to report.
        collector = _collector(rest, True)
        coll = collector.out
        try:
            _wait_many(rest, coll, deadline, False)
        except BaseException:
            for f in rest:
                f._remove_done_callback(collector)
            raise
        if FW_LOAD(&coll.node.state) == FW_FAILED:
            _mark_retrieved(coll)
            raise coll._exc
    for i in range(len(rest)):
        values[<Py_ssize_t>rest_at[i]] = (<FutureCore>rest[i])._outcome()
    return values


@cython.final
cdef class _Collector:
    """Counts members down; completes `out` when all are done, or fails it
    at the first failure. The count is atomic (no reliance on the GIL)."""
    cdef FutureCore out
    cdef list futs
    cdef int remaining

    def __call__(self, FutureCore f):
        self.member_done(f)

    cdef int member_done(self, FutureCore f) except -1:
        cdef int state = FW_LOAD(&f.node.state)
        if state == FW_FAILED and FW_LOAD(&self.out.node.state) < FW_FINISHED:
            _mark_retrieved(f)
            _complete_manual(self.out, FW_FAILED, None, f._exc)
        elif state == FW_CANCELLED and FW_LOAD(&self.out.node.state) < FW_FINISHED:
            _complete_manual(self.out, FW_FAILED, None,
                             CancelledError(f"a collected future was cancelled: {f!r}"))
        if FW_ADD(&self.remaining, -1) == 0:
            _complete_manual(self.out, FW_FINISHED, self.futs, None)
        return 0


cdef _Collector _collector(list futs, bint quiet):
    """A collector of `futs`, added to each; its future is `.out`. `quiet`:
    one of forkwait's own, which never reports a failure nobody retrieved
    (the member's failure was handed to whoever waits on it)."""
    cdef FutureCore out = _new_future()
    cdef _Collector coll = _Collector.__new__(_Collector)
    cdef FutureCore f
    out._quiet = quiet
    coll.out = out
    coll.futs = futs
    coll.remaining = len(futs)
    if not futs:
        _complete_manual(out, FW_FINISHED, futs, None)
        return coll
    for f in futs:
        f.add_done_callback(coll)
    return coll


cdef inline FutureCore _collect(list futs, bint quiet=False):
    return _collector(futs, quiet).out


def _collect_quiet(futures):
    """collect_all for forkwait's own use: the collected future never reports
    a failure that nobody retrieved (the member's failure goes to whoever
    waits on it)."""
    return _collect(_as_future_list(futures, "_collect_quiet"), True)


def collect_all(futures):
    """A Future that completes when all `futures` are done, as in torch.

    Its value is the list of the given futures. If one of them fails, the
    collected future fails with that exception (the first to fail).

    Examples
    --------
    >>> import forkwait as fw
    >>> futs = [fw.fork(pow, 2, i) for i in range(5)]
    >>> [f.value() for f in fw.collect_all(futs).wait()]
    [1, 2, 4, 8, 16]
    """
    cdef list futs = _as_future_list(futures, "collect_all")
    cdef FutureCore out = _collect(futs)
    if futs and FW_LOAD(&out.node.state) < FW_FINISHED:
        # a wait on it is a wait on all of them (the cycle check follows
        # these; the future keeps them alive while it lives)
        buf = bytearray(sizeof(fw_many) + len(futs) * sizeof(fw_node *))
        out._many_keep = (futs, buf)
        out.node.many = _many_into(<char *>buf, futs, False)
    return out


def _wait_on(done, futures, timeout=None):
    """Wait until the hand-made future `done` is done, helping with
    `futures` meanwhile (their unstarted members run here, in order, and the
    subtrees of running ones), as wait_all does. TimeoutError at the
    deadline. The first member done completes `done` (the cycle check counts
    on it). The building block of forkwait's wait_any and as_completed."""
    if not isinstance(done, FutureCore):
        raise TypeError(f"_wait_on() needs a forkwait.Future, got {type(done).__name__}")
    cdef list futs = _as_future_list(futures, "_wait_on")
    cdef double t = _check_timeout(timeout)
    cdef double deadline = -1.0 if t < 0.0 else fw_now() + t
    _wait_many(futs, <FutureCore>done, deadline, True)


cdef list _as_future_list(futures, str caller, bint no_cycle=False):
    """`futures` as a new list of Futures (TypeError otherwise); with
    `no_cycle`, RuntimeError if this thread runs one of them (a wait on it
    would wait on itself). One pass over the items (see wait_all)."""
    cdef list futs
    cdef Py_ssize_t i, n
    cdef object item
    if type(futures) is list or type(futures) is tuple:
        n = len(futures)
        futs = [None] * n
        for i in range(n):
            item = futures[i]
            _check_member(caller, i, item, no_cycle)
            futs[i] = item
        return futs
    try:
        futs = list(futures)
    except TypeError:
        raise TypeError(
            f"{caller}() needs an iterable of forkwait.Future, got {type(futures).__name__}"
        ) from None
    for i in range(len(futs)):
        _check_member(caller, i, futs[i], no_cycle)
    return futs


cdef inline int _check_member(str caller, Py_ssize_t i, object item, bint no_cycle) except -1:
    if not isinstance(item, FutureCore):
        raise TypeError(
            f"{caller}() needs forkwait.Future items; item {i} is {type(item).__name__}"
        )
    if no_cycle:
        _check_not_own_ancestor(<FutureCore>item)
    return 0


cdef str _short_repr(obj):
    try:
        r = repr(obj)
    except Exception:
        r = f"<{type(obj).__name__} object>"
    return r if len(r) <= 80 else r[:77] + "..."
