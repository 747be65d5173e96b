# The profiler's hook: forkwait.profile() records tasks and waits through it.

cdef object _prof_hook = None   # the hook object of the profile that records
cdef long long _prof_next_id = 0


cdef str _task_name(fn):
    """A task's name for reports; never raises (a callable's __getattr__ may)."""
    try:
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
        if isinstance(name, str):
            return name
    except Exception:
        pass
    try:
        # a callable object (a torch nn.Module, say) is named by its class;
        # a scripted module by the class it was scripted from (TorchScript's
        # original_name), not RecursiveScriptModule
        name = getattr(fn, "original_name", None)
        if isinstance(name, str) and name:
            return name
        return type(fn).__name__
    except Exception:
        return "<callable>"


cdef void _record_task(FutureCore fut, object name, double t0, double t1,
                       long long outer_task, double outer_wait, str outcome):
    global fw_cur_task, fw_wait_acc
    cdef double waited = fw_wait_acc
    fw_cur_task = outer_task
    fw_wait_acc = outer_wait
    hook = _prof_hook
    if hook is not None:
        try:
            hook.on_task(
                id=fut._prof_id, parent=fut._prof_parent, name=name,
                fork_time=fut._t_fork, fork_thread=fut._fork_thread, start=t0, end=t1,
                thread=PyThread_get_thread_ident(), wait_time=waited, outcome=outcome,
            )
        except Exception:
            pass


cdef void _record_wait(FutureCore fut, double t0):
    hook = _prof_hook
    if hook is not None:
        try:
            hook.on_wait(task=fut._prof_id, start=t0, end=fw_now(),
                         thread=PyThread_get_thread_ident())
        except Exception:
            pass


cdef void _prof_fork(FutureCore fut) noexcept:
    fut._prof_id = FW_ADDLL(&_prof_next_id, 1)
    fut._prof_parent = fw_cur_task
    fut._t_fork = fw_now()
    fut._fork_thread = PyThread_get_thread_ident()


def _set_profiler(hook):
    """Start calling `hook` (None stops); returns the old hook.

    While set, the thread that ran a task calls ``hook.on_task(id=, parent=,
    name=, fork_time=, fork_thread=, start=, end=, thread=, wait_time=,
    outcome=)`` and a wait that slept calls ``hook.on_wait(task=, start=,
    end=, thread=)``.
    """
    global _prof_hook, fw_prof_on
    _retired_hooks.append(hook)  # (read without a lock by every task: see _set_fork_hook)
    old = _prof_hook
    _prof_hook = hook
    fw_prof_on = hook is not None
    return old


def _current_task():
    """The profiling id of the task running in this thread (0: none)."""
    return fw_cur_task


cdef inline void _add_wait(double seconds) noexcept:
    global fw_wait_acc
    fw_wait_acc += seconds
