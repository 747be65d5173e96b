"""Intra-op thread settings and team sizing (native part).

The Python layer (``forkwait/_threads.py``) validates and calls these; kernels
call :c:func:`team_begin` / :c:func:`team_end` around every parallel region so
that the team size is read at call time, from forkwait's own setting, in the
thread that runs the kernel (OpenMP's own setting is per thread, see
DESIGN.md rule 3).
"""

from cython.parallel cimport prange

from forkwait._native._openmp cimport (
    FW_HAVE_OPENMP, FW_OPENMP_VERSION, omp_get_num_threads, omp_in_parallel,
    omp_get_max_threads,
)

cdef extern from "_fw_runtime.h" nogil:
    int fw_local_threads
    int fw_global_threads
    int fw_cpu_budget
    int fw_busy_threads
    int fw_mode
    int fw_kernel_depth
    int fw_load(const int *p)
    void fw_store(int *p, int v)
    int fw_add(int *p, int v)
    int fw_cas(int *p, int expected, int desired)

cdef enum:
    MODE_SHARED = 0
    MODE_FIXED = 1


cdef int get_local_threads() noexcept nogil:
    return fw_local_threads


cdef void set_local_threads(int n) noexcept nogil:
    global fw_local_threads
    fw_local_threads = n


cdef int requested_threads() noexcept nogil:
    """The team size this thread asks for: its override, else the global one."""
    cdef int n = fw_local_threads
    if n > 0:
        return n
    return fw_load(&fw_global_threads)


cdef int team_begin(Py_ssize_t n_items, Py_ssize_t grain) noexcept nogil:
    """Reserve and return the team size for a kernel over ``n_items`` items.

    One decision in one place: a kernel runs serially (team 1) below its grain
    size, inside another kernel's parallel region, or when one thread is asked
    for. Otherwise, in shared mode, the kernels that run at the same time share
    the CPU budget (each gets at least one thread, none more than it asked
    for); in fixed mode every kernel gets what it asked for.
    Every call must be paired with ``team_end(returned value)``.
    """
    global fw_kernel_depth
    cdef int want = requested_threads()
    cdef int busy, avail, team
    fw_kernel_depth += 1
    if want <= 1 or n_items < grain or fw_kernel_depth > 1 or omp_in_parallel():
        team = 1
    elif fw_load(&fw_mode) == MODE_FIXED:
        team = want
    else:
        while True:
            busy = fw_load(&fw_busy_threads)
            avail = fw_load(&fw_cpu_budget) - busy
            team = want if want < avail else avail
            if team < 1:
                team = 1
            if fw_cas(&fw_busy_threads, busy, busy + team):
                return team
    fw_add(&fw_busy_threads, team)
    return team


cdef void team_end(int team) noexcept nogil:
    global fw_kernel_depth
    fw_kernel_depth -= 1
    fw_add(&fw_busy_threads, -team)


# ---------------------------------------------------------------- Python side

def _set_global_threads(int n):
    fw_store(&fw_global_threads, n)


def _get_global_threads():
    return fw_load(&fw_global_threads)


def _set_local_threads(int n):
    """Set this thread's override (0 clears it); returns the previous one."""
    cdef int old = fw_local_threads
    set_local_threads(n)
    return old


def _get_local_threads():
    return fw_local_threads


def _get_requested_threads():
    return requested_threads()


def _set_cpu_budget(int n):
    fw_store(&fw_cpu_budget, n)


def _get_cpu_budget():
    return fw_load(&fw_cpu_budget)


def _set_mode(int mode):
    fw_store(&fw_mode, mode)


def _get_mode():
    return fw_load(&fw_mode)


def _busy_threads():
    return fw_load(&fw_busy_threads)


def openmp_info():
    """(compiled with OpenMP, _OPENMP version macro, omp_get_max_threads())."""
    return bool(FW_HAVE_OPENMP), int(FW_OPENMP_VERSION), omp_get_max_threads()


def _probe_team(Py_ssize_t n_items=1 << 20, Py_ssize_t grain=1):
    """Run a parallel region as a kernel would; return the team size OpenMP saw.

    Test helper: reports ``omp_get_num_threads()`` from inside the prange.
    """
    cdef int team, i
    cdef int[1] seen
    seen[0] = 0
    with nogil:
        team = team_begin(n_items, grain)
        for i in prange(team, num_threads=team, schedule="static"):
            if i == 0:
                seen[0] = omp_get_num_threads()
        team_end(team)
    return seen[0]
