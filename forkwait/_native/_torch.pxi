# Included by _blas.pyx: the torch budget (_fw_torch.h): PyTorch's intra-op
# threads in forked tasks, on the same count of running tasks as the BLAS
# budget. torch is looked for only once it is in sys.modules (forkwait never
# imports it).

import sys

cdef extern from "_fw_torch.h" nogil:
    int fw_torch_ready
    int fw_torch_on
    char fw_torch_lib[200]
    char fw_torch_gomp[200]
    unsigned long long fw_torch_sets
    int fw_torch_find()
    int fw_torch_cap_here()
    void fw_torch_begin(int cap, int cpus, int running)
    void fw_torch_end()
    int fw_torch_task_cap

cdef dict _sys_modules = sys.modules
# sys.modules' size when "torch" was last found missing from it: until the
# size changes (a module was imported), a task's start looks no further
# (a read of the dict's size instead of a lookup on every outermost task;
# threads racing to update it only cost an extra lookup)
cdef long long _mods_without_torch = -1  # (atomic, relaxed)


cdef bint _torch_look() noexcept:
    """torch's libgomp, once torch is imported (GIL held; cheap until then:
    a read of sys.modules' size)."""
    global _mods_without_torch
    cdef int found
    cdef long long n = len(_sys_modules)
    if n == FW_LOADLL_RLX(&_mods_without_torch):
        return False
    try:
        if "torch" not in _sys_modules:
            FW_STORE_RLX(&_mods_without_torch, n)
            return False
    except Exception:
        return False
    with nogil:
        fw_blas_lock_acquire()
        found = fw_torch_find()
        fw_blas_lock_release()
    return found


cdef int torch_cap_here() noexcept nogil:
    return fw_torch_cap_here()


cdef void torch_begin(int cap, fw_soon_fn soon) noexcept:
    if not fw_torch_on:
        return
    if not fw_torch_ready and not _torch_look():
        return
    fw_torch_begin(cap, fw_blas_cpus, fw_blas_running_now() + soon())


cdef void torch_end() noexcept nogil:
    fw_torch_end()


def set_torch_budget(bint on, int cpus):
    """Turn the torch budget on or off; `cpus` is the CPU count both budgets
    share (the Python layer validates)."""
    global fw_blas_cpus
    FW_STORE(&fw_torch_on, on)
    fw_blas_cpus = cpus if cpus > 0 else 1


def torch_budget_on():
    return bool(fw_torch_on)


def torch_state():
    """A dict: the budget on, torch's libgomp found (looked for now if torch is
    imported), its files, the ICV changes made so far."""
    if not fw_torch_ready:
        _torch_look()
    return {"budget": bool(fw_torch_on), "found": bool(fw_torch_ready),
            "libtorch": fw_torch_lib.decode() or None, "libgomp": fw_torch_gomp.decode() or None,
            "changes": fw_torch_sets}


def _torch_task_cap():
    """(Tests) The cap of the torch budget in the task running in this thread
    (0: none applied)."""
    return fw_torch_task_cap
