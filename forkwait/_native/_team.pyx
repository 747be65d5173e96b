"""Intra-op thread settings and team sizing (native part).

The Python layer (``forkwait/_threads.py``) validates and calls these; kernels
call :c:func:`team_begin` / :c:func:`team_end` around every parallel region so
that the team size is read at call time, from forkwait's own setting, in the
thread that runs the kernel (OpenMP's own setting is per thread, see
DESIGN.md rule 3).
"""

from cython.parallel cimport prange
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from forkwait._native._atomic cimport (
    FW_ADD_ACQREL, FW_CAS_ACQREL, FW_LOAD, FW_LOAD_ACQ, FW_LOAD_RLX, FW_STORE_REL,
)
from forkwait._native._openmp cimport (
    FW_HAVE_OPENMP, FW_OPENMP_VERSION, fw_omp_release_threads, omp_get_num_threads,
    omp_in_parallel,
    omp_get_max_threads,
)

cdef extern from "_fw_team_state.h" nogil:
    int fw_local_threads
    int fw_global_threads
    int fw_cpu_budget
    int fw_busy_threads
    int fw_mode
    int fw_kernel_depth
    int fw_last_team
    int fw_ran_team
    int fw_team_serial
    int fw_team_tasks

cdef extern from "_fw_team.h" nogil:
    int fw_team_waiting
    int fw_tokens_held
    int fw_team_nowait
    int fw_team_acquire(int *busy, const int *budget, int want)
    void fw_team_release(int *busy, int tokens)
    void fw_team_atfork_child()

cdef enum:
    MODE_SHARED = 0
    MODE_FIXED = 1

# High-water mark of fw_busy_threads (tests check "no oversubscription" with it).
cdef int _busy_peak = 0


cdef inline void _note_busy(int busy) noexcept nogil:
    global _busy_peak
    cdef int peak = FW_LOAD_ACQ(&_busy_peak)
    while busy > peak:  # a failed CAS leaves the value it saw in `peak`
        if FW_CAS_ACQREL(&_busy_peak, &peak, busy):
            return


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
    return FW_LOAD_ACQ(&fw_global_threads)


cdef int team_begin(Py_ssize_t n_items, Py_ssize_t grain) noexcept nogil:
    """Reserve and return the team size for a kernel over ``n_items`` items.

    One decision in one place: a kernel runs serially (team 1, on the calling
    thread, holding no CPU token) below its grain size, inside another
    kernel's parallel region, or when one thread is asked for. Otherwise, in
    shared mode, parallel kernels take CPU tokens: between 1 and what they ask
    for, never more than are free; when none is free the kernel runs at once
    on its caller's thread alone (by default; or waits, blocked, for a token:
    see _fw_team.h). In fixed mode every kernel gets what it asked for.
    Every call must be paired with ``team_end(returned value)``.
    """
    global fw_kernel_depth, fw_tokens_held, fw_last_team, fw_ran_team
    cdef int want = requested_threads()
    cdef int team, tasks, share
    fw_kernel_depth += 1
    if want > 1 and FW_LOAD_RLX(&fw_mode) != MODE_FIXED:
        # shared mode: while several forked tasks run, a kernel of one of
        # them asks for no more than its share of the CPUs (the BLAS budget's
        # rule): otherwise the first kernel takes every token for a team whose
        # threads then spin beside the other tasks' kernels and Python
        tasks = FW_LOAD_RLX(&fw_team_tasks)
        if tasks > 1:
            share = FW_LOAD_RLX(&fw_cpu_budget) // tasks
            if want > share:
                want = share if share > 1 else 1
    if (want <= 1 or n_items < grain or fw_kernel_depth > 1 or fw_team_serial
            or omp_in_parallel()):
        fw_last_team = 1
        return 1
    if FW_LOAD_ACQ(&fw_mode) == MODE_FIXED:
        team = want
        _note_busy(FW_ADD_ACQREL(&fw_busy_threads, team))
    else:
        team = fw_team_acquire(&fw_busy_threads, &fw_cpu_budget, want)
        _note_busy(FW_LOAD_ACQ(&fw_busy_threads))
    fw_tokens_held = team
    fw_last_team = team
    if team > 1:
        fw_ran_team = 1
    return team


cdef void team_tasks(int delta) noexcept nogil:
    """The pool: a thread starts (+1) or stops (-1) running forked task code."""
    FW_ADD_ACQREL(&fw_team_tasks, delta)


def _running_tasks():
    """(Tests) Threads running forked task code now, as team_begin sees them."""
    return FW_LOAD_ACQ(&fw_team_tasks)


cdef void team_end(int team) noexcept nogil:
    global fw_kernel_depth, fw_tokens_held
    cdef int held
    fw_kernel_depth -= 1
    if fw_kernel_depth == 0 and fw_tokens_held > 0:
        held = fw_tokens_held
        fw_tokens_held = 0
        fw_team_release(&fw_busy_threads, held)


cdef int omp_team_ok() noexcept nogil:
    """May this thread start an OpenMP team of more than one thread (for
    code other than team_begin's kernels: OpenBLAS's jobs on the team,
    _fw_blas_team.h)? Not the forking thread of an os.fork() child once it
    had (GCC bug 60035); otherwise yes, and the thread is noted as one that
    did, as team_begin notes it."""
    global fw_ran_team
    if fw_team_serial:
        return 0
    fw_ran_team = 1
    return 1


cdef int team_held() noexcept nogil:
    """Does this thread keep an OpenMP team (it started one of 2 or more
    threads since it last gave one back)?"""
    return fw_ran_team and not fw_team_serial


cdef void team_release() noexcept nogil:
    """Give back this thread's OpenMP team (libgomp's pool of this thread:
    its threads end; the next team starts new ones). For an idle pool thread
    (_pool/sleep.h): more OpenMP threads than CPUs make libgomp throttle
    every team's spinning, the main thread's too (docs/threads.md). Not in
    the forking thread of an os.fork() child that ran a team (GCC bug 60035:
    its pool refers to threads the child does not have)."""
    global fw_ran_team
    if fw_ran_team and not fw_team_serial and not omp_in_parallel():
        fw_omp_release_threads()
        fw_ran_team = 0
        FW_ADD_ACQREL(&_teams_released, 1)


cdef int _teams_released = 0

# 1: run_chunked deals chunks out with OpenMP's schedule(dynamic), as before
# _fw_split.h (kept for benchmarks that compare the two in one process).
cdef int _split_dynamic = 0


cdef int team_split_dynamic() noexcept nogil:
    return FW_LOAD_RLX(&_split_dynamic)


def _set_split_dynamic(bint on):
    """(Benchmarks) Chunked kernels use schedule(dynamic) (True) or each
    thread's own share first (False, the default); returns the old value."""
    global _split_dynamic
    cdef int old = _split_dynamic
    FW_STORE_REL(&_split_dynamic, 1 if on else 0)
    return bool(old)


cdef extern from "_fw_split.h" nogil:
    ctypedef void (*fw_split_body)(void* ctx, Py_ssize_t start, Py_ssize_t stop) noexcept nogil
    void fw_split_run(fw_split_body body, void* ctx, Py_ssize_t n, Py_ssize_t chunk, int team)
    void fw_omp_empty_region(int team)


cdef void _nothing(void* ctx, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    pass


cdef double _seconds() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def _empty_regions(int reps, str kind="kernel"):
    """(Benchmarks) Seconds per empty parallel region, timed in C over
    ``reps`` regions in a row, at the calling thread's team size:
    ``"kernel"``, a chunked kernel's region (team_begin, the region of
    _fw_split.h over 2 chunks per thread, team_end) with nothing to do;
    ``"dynamic"``, the same with schedule(dynamic) (Cython's prange, the
    region before _fw_split.h); ``"tokens"``, team_begin, libgomp's bare
    empty ``#pragma omp parallel``, team_end; ``"omp"``, the bare region
    alone (the floor)."""
    cdef int r, team, t
    cdef int mode = {"kernel": 0, "dynamic": 1, "omp": 2, "tokens": 3}[kind]
    cdef double t0, t1
    if reps < 1:
        raise ValueError(f"reps must be a positive int, got {reps}")
    with nogil:
        t0 = _seconds()
        for r in range(reps):
            if mode == 2:
                fw_omp_empty_region(requested_threads())
                continue
            team = team_begin(1 << 30, 1)
            if team > 1:
                if mode == 0:
                    fw_split_run(_nothing, NULL, 2 * team, 1, team)
                elif mode == 1:
                    for t in prange(2 * team, schedule="dynamic", num_threads=team):
                        _nothing(NULL, t, t + 1)
                else:
                    fw_omp_empty_region(team)
            team_end(team)
        t1 = _seconds()
    return (t1 - t0) / reps


def _released_teams():
    """(Tests) OpenMP teams that idle pool threads gave back so far."""
    return FW_LOAD_ACQ(&_teams_released)


def _team_held():
    """(Tests) Does this thread keep an OpenMP team?"""
    return bool(team_held())


def _team_release():
    """(Tests) Give back this thread's OpenMP team."""
    team_release()


cdef void team_atfork_child() noexcept nogil:
    """The os.fork() child's reset of the intra-op state (called by the
    pool's one at-fork handler, see pool.pyx)."""
    global fw_kernel_depth, fw_team_serial
    if fw_ran_team:
        fw_team_serial = 1  # GCC bug 60035: see _fw_team_state.h
    FW_STORE_REL(&fw_busy_threads, 0)
    FW_STORE_REL(&fw_team_tasks, 0)
    fw_kernel_depth = 0
    fw_team_atfork_child()


# ---------------------------------------------------------------- Python side

def _set_global_threads(int n):
    FW_STORE_REL(&fw_global_threads, n)


def _get_global_threads():
    return FW_LOAD_ACQ(&fw_global_threads)


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
    FW_STORE_REL(&fw_cpu_budget, n)


def _get_cpu_budget():
    return FW_LOAD_ACQ(&fw_cpu_budget)


def _set_mode(int mode):
    FW_STORE_REL(&fw_mode, mode)


def _get_mode():
    return FW_LOAD_ACQ(&fw_mode)


def _last_team():
    """The team size of the last kernel started in this thread (profiler)."""
    return fw_last_team


def _busy_threads():
    return FW_LOAD_ACQ(&fw_busy_threads)


def _set_shared_wait(bint wait):
    """Shared mode with no free CPU: wait for one (True) or run on 1 thread (False)."""
    global fw_team_nowait
    fw_team_nowait = 0 if wait else 1


def _team_waiting():
    """Kernels blocked now, waiting for a CPU token (shared mode, waiting on)."""
    return FW_LOAD(&fw_team_waiting)


def _busy_peak_reset():
    """Reset and return the high-water mark of OpenMP threads held by kernels."""
    global _busy_peak
    cdef int old = FW_LOAD_ACQ(&_busy_peak)
    FW_STORE_REL(&_busy_peak, 0)
    return old


def _get_busy_peak():
    return FW_LOAD_ACQ(&_busy_peak)


def _hold(Py_ssize_t n_items=1 << 30, Py_ssize_t grain=1):
    """Test helper: reserve a team as a kernel would (pair with _release)."""
    return team_begin(n_items, grain)


def _release(int team):
    team_end(team)


def _fork_serial():
    """True in the thread of a fork() child that forked after running an
    OpenMP team: kernels run serially in this thread (GCC bug 60035)."""
    return bool(fw_team_serial)


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
