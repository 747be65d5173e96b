# Helpers shared by forkwait's kernel modules (cimport only; no state).

cdef inline Py_ssize_t chunk_size(Py_ssize_t n, int team) noexcept nogil:
    """Items per thread for a static split of ``n`` items over ``team``.

    Rounded up to a multiple of 16 elements (64 bytes of float32), so that two
    threads never write the same cache line except at the array's ends.
    """
    cdef Py_ssize_t c = (n + team - 1) // team
    return ((c + 15) // 16) * 16
