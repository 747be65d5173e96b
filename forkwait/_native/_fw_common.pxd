# Helpers shared by forkwait's kernel modules (cimport only; no state).

from cython.parallel cimport prange

from forkwait._native._team cimport team_begin, team_end, team_split_dynamic

cdef enum:
    # fewest elements in a chunk of a dynamic split (see chunk_items)
    MIN_CHUNK = 4096


cdef inline Py_ssize_t chunk_items(Py_ssize_t n, Py_ssize_t size, int team) noexcept nogil:
    """Items per chunk when ``n`` items of ``size`` elements each (an element
    for the element-wise kernels, a row for the row ops) are dealt out to
    ``team`` threads: the one chunk rule of every chunked kernel.

    About 32 chunks per thread, taken in turn (``schedule="dynamic"``), so
    that a thread the OS takes off its CPU for a while (another process, a
    shared machine) leaves its share to the others instead of holding up the
    whole team. Chunks this small also keep the end of the loop even: the
    threads finish on average half a chunk apart, so the loop ends a quarter
    chunk late (under 1% with two threads);
    at least ``MIN_CHUNK`` elements, so that taking a chunk (one atomic add)
    stays well under 1% of its work, but never more than an even share, so
    that every thread has work when ``n`` is small. Chunks of single elements
    are rounded up to a multiple of 16 (64 bytes of float32), so that two
    threads never write the same cache line except at the array's ends.
    """
    cdef Py_ssize_t c = (n + 32 * team - 1) // (32 * team)
    cdef Py_ssize_t even = (n + team - 1) // team
    if c * size < MIN_CHUNK:
        c = (MIN_CHUNK + size - 1) // size
    if c > even:            # small n: one chunk per thread, as a static split
        c = even
    if size == 1:
        c = ((c + 15) // 16) * 16
    return c


ctypedef void (*chunk_body)(void* ctx, Py_ssize_t start, Py_ssize_t stop) noexcept nogil

cdef extern from "_fw_split.h" nogil:
    void fw_split_run(chunk_body body, void* ctx, Py_ssize_t n, Py_ssize_t chunk, int team)


cdef inline void run_chunked(chunk_body body, void* ctx, Py_ssize_t n, Py_ssize_t size,
                             Py_ssize_t grain) noexcept nogil:
    """body(ctx, start, stop) over [0, n) items of ``size`` elements: serially
    on the calling thread when team_begin says so (below ``grain`` elements,
    nested, one thread), else in chunk_items chunks over the team, each thread
    taking its own contiguous share first (``_fw_split.h``)."""
    cdef Py_ssize_t chunk, start, t
    cdef int team = team_begin(n * size if n > 1 else 0, grain)
    if team == 1:
        body(ctx, 0, n)
    else:
        chunk = chunk_items(n, size, team)
        if team_split_dynamic():  # the schedule before _fw_split.h (benchmarks)
            for t in prange((n + chunk - 1) // chunk, schedule="dynamic", num_threads=team):
                start = t * chunk
                if start < n:
                    body(ctx, start, start + chunk if start + chunk < n else n)
        else:
            fw_split_run(body, ctx, n, chunk, team)
    team_end(team)
