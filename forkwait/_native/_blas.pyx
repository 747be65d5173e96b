"""The BLAS libraries: which ones ops.matmul calls, and one owner of their
thread counts.

The GEMM table (``_blas_load.pxi``, ``_fw_blas_gemm.h``): the GEMM is
NumPy's OpenBLAS where it can be found (the library NumPy's own
``np.matmul`` calls: ``load_blas`` resolves its Fortran GEMM with dlsym
through NumPy's ``_multiarray_umath`` module, already loaded). The second
library, for GEMMs that run at the same time as another, is the OpenBLAS of
the ``scipy-openblas64`` package (a dependency: the build NumPy's wheels
bundle, as a file of its own, so a copy of its own), else SciPy's (found
through ``scipy.linalg.cython_blas``); no build dependency either way
(``_blas_find.pxi``). Without a usable BLAS, ops.matmul runs a plain blocked
loop of its own (correct, slower). The copy forkwait loads itself runs the
jobs of its threaded calls on forkwait's OpenMP team (``_fw_blas_team.h``).

The limiter (``_fw_blas.h``): two things change a BLAS library's thread
count while forkwait runs: ops.matmul pins its OpenBLAS to 1 thread while it
calls it from every member of its team (or, alone on it with a team of T
threads, to T for one call: a "wide" pin), and the BLAS budget (off unless
turned on, see ``forkwait.set_blas_budget``) limits every BLAS library to
``max(1, cpus // running tasks)`` threads while several forked tasks run.
Both go through one lock and one record per library, so overlapping reasons
can never leave a library pinned.
"""

import os

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdlib cimport calloc, free

from forkwait._native._atomic cimport FW_LOADLL_RLX, FW_STORE, FW_STORE_RLX
from forkwait._native._team cimport omp_team_ok

cdef extern from "_fw_blas.h" nogil:
    ctypedef struct fw_blas_lib:
        char name[24]
        char path[200]
        int pins
        int wide
        int wide_n
        int active
        int base
        int applied
        int stranded
        fw_blas_get_t get
    fw_blas_lib fw_blas_libs[8]
    int fw_blas_nlibs
    int fw_blas_budget_on
    int fw_blas_cpus
    int fw_blas_running
    int fw_blas_cur_limit
    unsigned long long fw_blas_changes
    void fw_blas_lock_acquire()
    void fw_blas_lock_release()
    void fw_blas_tasks(int delta)
    void fw_blas_pin(int lib, int delta)
    int fw_blas_pin_wide(int lib, int n)
    int fw_blas_pin_least(const int* libs, int n)
    void fw_blas_unpin_wide(int lib)
    int fw_blas_running_now()
    int fw_blas_add(void* set_fn, void* get_fn, const char* name, const char* path)
    void fw_blas_scan()
    void fw_blas_set_budget(int on, int cpus)
    int fw_blas_atfork_child()
    void fw_blas_after_fork()

cdef extern from "_fw_blas_team.h" nogil:
    ctypedef void (*fw_ob_dojob_t)(int thread_num, void* jobdata, int dojob_data)
    void fw_ob_run_jobs(int sync, fw_ob_dojob_t dojob, int numjobs, size_t elsize,
                        void* jobdata, int dojob_data)
    long fw_ob_calls
    long fw_ob_team_calls
    int (*fw_ob_team_ok)()
    int fw_ob_force_threads
    void fw_ob_atfork_child()
    int fw_ob_test(int n, int nested)

# the GEMM table (filled by load_blas)
cdef fw_blas_gemms _gemms
_gemms.team = -1

# the team driver asks _team whether this thread may start an OpenMP team
fw_ob_team_ok = omp_team_ok

include "_blas_find.pxi"
include "_blas_load.pxi"
include "_torch.pxi"


# ------------------------------------------------- for the pool and ops.matmul

cdef fw_blas_gemms *blas_gemms() noexcept nogil:
    return &_gemms


cdef void blas_tasks(int delta) noexcept nogil:
    fw_blas_tasks(delta)


cdef void blas_pin(int lib, int delta) noexcept nogil:
    fw_blas_pin(lib, delta)


cdef int blas_pin_least(const int* libs, int n) noexcept nogil:
    return fw_blas_pin_least(libs, n)


cdef int blas_pin_wide(int lib, int n) noexcept nogil:
    return fw_blas_pin_wide(lib, n)


cdef void blas_unpin_wide(int lib) noexcept nogil:
    fw_blas_unpin_wide(lib)


cdef int blas_tasks_running() noexcept nogil:
    """Threads running forked task code now (a task blocked in a wait does
    not count; the pool keeps the count always)."""
    return fw_blas_running_now()


cdef int _register(void* set_fn, void* get_fn, const char* path) noexcept nogil:
    """A library of the GEMM table into the record; its index there, or -1."""
    cdef int i
    fw_blas_lock_acquire()
    i = fw_blas_add(set_fn, get_fn, b"openblas", path)
    fw_blas_lock_release()
    return i


# ---------------------------------------------------------------- os.fork()

cdef void blas_atfork_child() noexcept nogil:
    """The os.fork() child's reset of all of forkwait's BLAS state (called by
    the pool's one at-fork handler, see pool.pyx): the record's lock and
    counts, the team driver's lock. Nothing of OpenBLAS's is called inside
    fork(): what is left (the user's counts, stranded libraries out of the
    GEMM table) waits for the child's first BLAS step, blas_after_fork."""
    if fw_blas_atfork_child():
        FW_STORE(&_gemms.forked, 1)
    fw_ob_atfork_child()


cdef void blas_atfork_prepare() noexcept nogil:
    """os.fork(), before (for the pool's one pthread_atfork prepare handler,
    after the pool's own locks: this lock is a leaf): the limiter's lock is
    held across the fork, so no count change of ours is under way at it."""
    fw_blas_lock_acquire()


cdef void blas_atfork_parent() noexcept nogil:
    """os.fork(), after, in the parent: releases what blas_atfork_prepare took."""
    fw_blas_lock_release()


cdef void blas_after_fork() noexcept nogil:
    """An os.fork() child's first BLAS step (ops.matmul calls it while
    ``_gemms.forked`` is set; pins and the budget make the same count
    changes on their own): the counts back at the user's, and the libraries
    stranded at the fork (see _fw_blas.h) dropped from the GEMM table, the
    others moved up; none left: forkwait's own kernel."""
    cdef int i, j = 0, team = -1
    fw_blas_lock_acquire()
    if _gemms.forked:
        fw_blas_after_fork()
        for i in range(_gemms.n):
            if fw_blas_libs[_gemms.lib[i]].stranded:
                continue
            if i == _gemms.team:
                team = j
            _gemms.ilp[j] = _gemms.ilp[i]
            _gemms.lib[j] = _gemms.lib[i]
            _gemms.kind[j] = _gemms.kind[i]
            _gemms.s32[j] = _gemms.s32[i]
            _gemms.d32[j] = _gemms.d32[i]
            _gemms.s64[j] = _gemms.s64[i]
            _gemms.d64[j] = _gemms.d64[i]
            _gemms.set[j] = _gemms.set[i]
            _gemms.get[j] = _gemms.get[i]
            j += 1
        _gemms.n = j
        _gemms.team = team
        if j == 0:
            _gemms.use = 0
        FW_STORE(&_gemms.forked, 0)   # (release: the table above is read after it)
    fw_blas_lock_release()


# ---------------------------------------------------------------- Python side

def set_budget(bint on, int cpus):
    """Turn the budget on or off (the Python layer validates)."""
    with nogil:
        fw_blas_set_budget(on, cpus)


def budget_on():
    return bool(fw_blas_budget_on)


def libraries():
    """The BLAS libraries known now, as dicts (a scan first)."""
    cdef int i
    out = []
    with nogil:
        fw_blas_lock_acquire()
        fw_blas_scan()
        fw_blas_lock_release()
    for i in range(fw_blas_nlibs):
        lib = &fw_blas_libs[i]
        out.append({
            "name": lib.name.decode(), "path": lib.path.decode(),
            "num_threads": lib.get(), "pinned": lib.pins, "wide": lib.wide_n if lib.wide else 0,
            "limited": bool(lib.active), "stranded": bool(lib.stranded),
            "user_threads": lib.base if lib.active else lib.get(),
        })
    return out


def state():
    """A dict: budget on, cpus, threads running tasks, the budget's limit now
    (0: none), set() calls made so far."""
    return {"budget": bool(fw_blas_budget_on), "cpus": fw_blas_cpus,
            "running": fw_blas_running, "limit": fw_blas_cur_limit,
            "changes": fw_blas_changes}


# testing hooks: take and release ops.matmul's pins by hand (library index
# from blas_index()); not for use outside the tests
def _test_pin(int lib, int delta):
    fw_blas_pin(lib, delta)


def _test_pin_least(libs):
    cdef int c[8]
    cdef int i, n = len(libs)
    for i in range(n):
        c[i] = libs[i]
    return fw_blas_pin_least(c, n)


def _test_pin_wide(int lib, int n):
    return fw_blas_pin_wide(lib, n)


def _test_unpin_wide(int lib):
    fw_blas_unpin_wide(lib)
