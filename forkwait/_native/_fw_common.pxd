# Helpers shared by forkwait's kernel modules (cimport only; no state).

cdef enum:
    # fewest items in a chunk of a dynamic split (see chunk_size)
    MIN_CHUNK = 4096


cdef inline Py_ssize_t chunk_size(Py_ssize_t n, int team) noexcept nogil:
    """Items per chunk when ``n`` items are dealt out to ``team`` threads.

    About 32 chunks per thread, taken in turn (``schedule="dynamic"``), so
    that a thread the OS takes off its CPU for a while (another process, a
    shared machine) leaves its share to the others instead of holding up the
    whole team. Chunks this small also keep the end of the loop even: the
    threads finish on average half a chunk apart, so the loop ends a quarter
    chunk late (under 1% with two threads);
    at least ``MIN_CHUNK`` items, so that taking a chunk (one atomic add)
    stays well under 1% of its work, but never more than an even share, so
    that every thread has work when ``n`` is small. Rounded up to a multiple of
    16 elements (64 bytes of float32), so that two threads never write the
    same cache line except at the array's ends.
    """
    cdef Py_ssize_t c = (n + 32 * team - 1) // (32 * team)
    cdef Py_ssize_t even = (n + team - 1) // team
    if c < MIN_CHUNK:
        c = MIN_CHUNK
    if c > even:            # small n: one chunk per thread, as a static split
        c = even
    return ((c + 15) // 16) * 16

