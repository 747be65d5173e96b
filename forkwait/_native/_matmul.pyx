"""matmul: the product over the OpenMP team, by the process's OpenBLAS.

The libraries come from ``_blas`` (its GEMM table, ``blas_gemms()``: NumPy's
OpenBLAS and a second copy; none found: a plain blocked loop of our own,
correct and slower). A team of one thread makes one single-threaded GEMM. A
larger team splits the product in blocks of columns (rows for batches), one
single-threaded GEMM each, every GEMM on the library least used by matmuls
at that moment (so concurrent GEMMs call different copies of OpenBLAS). A
large product while no forked task runs is instead one GEMM whose jobs run
on the team (the copy forkwait loads itself, ``_fw_blas_team.h``), and a
switch (``set_wide``, off by default, by measurement: docs/performance.md)
hands the whole product, when this matmul is alone on a library, to
OpenBLAS at the team's thread count (a "wide" call: the call ``np.matmul``
makes). OpenBLAS would start threads of its own inside every block and
oversubscribe the team, so while forkwait matmuls run, the library's thread
count is 1 (T for a wide call), and the count the process had is restored
when the last one ends. The pin goes through the BLAS limiter (``_blas``),
which also applies the BLAS budget of forked tasks: one record per library
under one lock, so the two can overlap without leaving OpenBLAS pinned, and
a caller's own BLAS calls afterwards run with their threads (DESIGN.md rule
4: never a process-wide setting changed for good).
"""

cimport numpy as cnp
from forkwait._native._fw_plain cimport (
    fw_gil_free_call, gil_free_capsule, gil_free_out, plain_float_type,
)
from cython cimport floating
from cython.parallel cimport prange

from forkwait._native._atomic cimport FW_LOAD_ACQ
from forkwait._native._blas cimport (
    blas_after_fork, blas_gemms, blas_pin, blas_pin_least, blas_pin_wide,
    blas_tasks_running, blas_unpin_wide, fw_blas_gemms, fw_i64,
)
from forkwait._native._team cimport team_begin, team_end

cnp.import_array()

# The GEMMs (_blas's table, _fw_blas_gemm.h): per slot its functions and its
# library's index in the BLAS limiter; `use`: matmul calls them at all; `n`
# slots; `team`: the slot whose copy runs on the team (-1: none); `forked`:
# an os.fork() child before its first BLAS step (see _run).
cdef fw_blas_gemms *_G = blas_gemms()

cdef enum:
    ROW_ALIGN = 8
    COL_ALIGN = 16          # 64 bytes of float32: no cache line written by two threads
    COL_SPLIT_MIN = 64      # columns per thread below which blocks of rows are used
    BLAS_SERIAL_BELOW = 262144

# wide calls (the whole product to the BLAS at the team's thread count) for
# which dtypes: bit 0 float32, bit 1 float64 (set_wide). Off: measured here, a
# wide call matches np.matmul alone, but OpenBLAS's threads then spin for
# ~0.1 s and take a core from the next kernel's team (matmul, gelu, matmul,
# exp at 2 threads: 21 ms wide vs 5.1 ms split), while the column split over
# the two libraries matches np.matmul too (docs/performance.md).
cdef int _wide = 0

cdef extern from "_fw_kbuf.h" nogil:
    # the K split's buffer, kept per calling thread
    void *fw_kbuf_get(size_t size)
    void fw_kbuf_put(void *p)


# split K between the two threads of a team of 2, for which dtypes: bit 0
# float32, bit 1 float64 (set_ksplit). Each GEMM then packs half of A and half
# of B, where the column split packs all of A in both threads; the second
# half's product goes to a buffer added in afterwards. Off: measured here
# (docs/performance.md) it beat the column split for float64 in one harness
# (256 / 512: 1.00-1.05 / 0.94-0.97 vs 0.89-0.96 / 0.90-0.91 of NumPy's
# 2-thread GEMM) and lost to it in bench/ops_ratios.py (0.87-0.90 / 0.88-0.89
# vs 0.91-0.95 / 0.90-0.94); float32 was slower with it in both.
cdef int _ksplit = 0


def set_ksplit(int dtypes):
    """(Benchmarks) K-split products at a team of 2 for these dtypes: bit 0
    float32, bit 1 float64 (the default: 0, off)."""
    global _ksplit
    if dtypes < 0 or dtypes > 3:
        raise ValueError(f"set_ksplit takes 0-3 (bit 0 float32, bit 1 float64), got {dtypes}")
    _ksplit = dtypes


# Wide calls on the team (see _fw_blas_team.h): the copy of OpenBLAS that
# forkwait loads itself runs its threaded calls' jobs on the calling thread's
# OpenMP team, so a product of a team of T >= 2 can be one GEMM at T threads
# whose packed panels both threads share (the column split packs the shared
# operand once per thread), with no OpenBLAS thread spinning beside the next
# kernel. For which dtypes (bit 0 float32, bit 1 float64; set_wide_team) and
# from how many multiply-adds (per dtype): measured on Zen 4 at 2 threads
# (bench/matmul_team.py, docs/performance.md), float64 from 256 x 256 x 256
# and float32 from 512 x 512 x 512 ran as fast or faster that way than with
# the column split, alone and in a matmul / gelu / matmul / exp sequence
# (with OpenBLAS's own threads instead: 0.51-0.77 of the split's speed);
# float32 at 384 was 6-9% slower in the sequence. On an Intel Xeon
# (Sapphire Rapids class, AVX-512) the team won from 128 x 128 x 128 in both
# dtypes (np / forkwait at 2 threads, ops_ratios' interleaved calls: 128
# float64 1.02 / 1.02 against 0.46-0.78 split; bench/matmul_team.py: 128
# 1.07 / 1.08, 256 1.00 / 0.99, the sequence 1.04-1.05x the split's speed), so
# the threshold is chosen by vendor: each side's measurement, not a flag's
# guess (the issue's "dispatch by measurement"; docs/ops.md).
cdef extern from "_fw_cpu_vendor.h" nogil:
    int fw_cpu_is_intel()

cdef int _wide_team = 3
cdef Py_ssize_t _team_min_f32 = (1 << 21) if fw_cpu_is_intel() else (1 << 26)
cdef Py_ssize_t _team_min_f64 = (1 << 21) if fw_cpu_is_intel() else (1 << 24)


def set_wide_team(int dtypes):
    """(Benchmarks, tests) Which dtypes a team's product may hand whole to the
    OpenBLAS copy that runs on the team: bit 0 float32, bit 1 float64 (the
    default: 3). Returns the old value."""
    global _wide_team
    if dtypes < 0 or dtypes > 3:
        raise ValueError(f"set_wide_team takes 0-3 (bit 0 float32, bit 1 float64), got {dtypes}")
    old = _wide_team
    _wide_team = dtypes
    return old


def set_wide_team_min(Py_ssize_t float32_madds, Py_ssize_t float64_madds):
    """(Benchmarks) The fewest multiply-adds a team's product hands whole to
    the copy on the team, per dtype (defaults 2**26 and 2**24; 2**21 for
    both on Intel CPUs). Returns the old pair."""
    global _team_min_f32, _team_min_f64
    if float32_madds < 0 or float64_madds < 0:
        raise ValueError("set_wide_team_min takes counts >= 0")
    old = (_team_min_f32, _team_min_f64)
    _team_min_f32, _team_min_f64 = float32_madds, float64_madds
    return old


# GEMM dimensions are C ints
cdef Py_ssize_t INT_LIMIT = 2147483648

cdef inline int _acquire() noexcept nogil:
    """Pin the least used library to 1 thread for one GEMM; its slot."""
    cdef int slot = blas_pin_least(_G.lib, _G.n)
    return slot if slot >= 0 else 0


cdef inline void _release(int slot) noexcept nogil:
    blas_pin(_G.lib[slot], -1)


def set_wide(int dtypes):
    """Testing and benchmark switch: which dtypes may take a wide call (bit 0
    float32, bit 1 float64; 0: always split over the team). Returns the old
    value."""
    global _wide
    old = _wide
    _wide = dtypes
    return old


cdef void _own_gemm(const floating* a, const floating* b, floating* c,
                    Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """c = a @ b, row-major, blocked over k and n so a panel of b stays in cache."""
    cdef Py_ssize_t i, j, p, p0, p1, j0, j1
    cdef floating s
    cdef const floating* brow
    cdef floating* crow
    for i in range(m * n):
        c[i] = 0
    p0 = 0
    while p0 < k:
        p1 = p0 + 128 if p0 + 128 < k else k
        j0 = 0
        while j0 < n:
            j1 = j0 + 512 if j0 + 512 < n else n
            for i in range(m):
                crow = c + i * n
                for p in range(p0, p1):
                    s = a[i * k + p]
                    brow = b + p * n
                    for j in range(j0, j1):
                        crow[j] = crow[j] + s * brow[j]
            j0 = j1
        p0 = p1


cdef inline void _call_gemm(int slot, const floating* b, const floating* a, floating* c,
                            Py_ssize_t n, Py_ssize_t m, Py_ssize_t k,
                            Py_ssize_t ldb, Py_ssize_t lda, Py_ssize_t ldc) noexcept nogil:
    """Column-major C (n x m) = B (n x k) A (k x m), i.e. the row-major
    product c = a @ b of a (m x k) and b (k x n), by the slot's library in
    whichever integer width it takes."""
    cdef char tr = b"N"
    cdef int im = <int>m, in_ = <int>n, ik = <int>k
    cdef int ia = <int>lda, ib = <int>ldb, ic = <int>ldc
    cdef fw_i64 lm = m, ln = n, lk = k, la = lda, lb = ldb, lc = ldc
    cdef float sone = 1, szero = 0
    cdef double done = 1, dzero = 0
    if _G.ilp[slot]:
        if floating is float:
            _G.s64[slot](&tr, &tr, &ln, &lm, &lk, &sone, <float*>b, &lb, <float*>a, &la,
                         &szero, c, &lc)
        else:
            _G.d64[slot](&tr, &tr, &ln, &lm, &lk, &done, <double*>b, &lb, <double*>a, &la,
                         &dzero, c, &lc)
    elif floating is float:
        _G.s32[slot](&tr, &tr, &in_, &im, &ik, &sone, <float*>b, &ib, <float*>a, &ia,
                     &szero, c, &ic)
    else:
        _G.d32[slot](&tr, &tr, &in_, &im, &ik, &done, <double*>b, &ib, <double*>a, &ia,
                     &dzero, c, &ic)


cdef void _gemm(const floating* a, const floating* b, floating* c,
                Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint blas, int slot) noexcept nogil:
    """c (m x n) = a (m x k) @ b (k x n), all row-major and contiguous."""
    if m == 0:
        return
    if not blas:
        _own_gemm(a, b, c, m, n, k)
    else:
        # row-major C = A B is column-major C^T = B^T A^T
        _call_gemm(slot, b, a, c, n, m, k, n if n > 0 else 1, k if k > 0 else 1,
                   n if n > 0 else 1)


cdef void _gemm_cols(const floating* a, const floating* b, floating* c,
                     Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     Py_ssize_t j0, Py_ssize_t j1, int slot) noexcept nogil:
    """c[:, j0:j1] = a @ b[:, j0:j1] with BLAS (a m x k, b k x n, c m x n)."""
    _call_gemm(slot, b + j0, a, c + j0, j1 - j0, m, k, n, k if k > 0 else 1, n)


cdef void _run(const floating* pa, const floating* pb, floating* pc,
               Py_ssize_t batch, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               bint a_batched, bint b_batched, Py_ssize_t grain, bint blas) noexcept nogil:
    """pc[i] = pa[i] @ pb[i] for i < batch (see ``matmul``): the one body of
    both entry points."""
    cdef Py_ssize_t sa = m * k if a_batched else 0
    cdef Py_ssize_t sb = k * n if b_batched else 0
    cdef Py_ssize_t per, rc, items, item, bi, r0, r1, kh, i, j
    cdef int team, slot, s
    cdef floating *tmp
    cdef bint pin
    if FW_LOAD_ACQ(&_G.forked):
        # an os.fork() child's first matmul: the user's BLAS counts back, and
        # the table without the libraries the fork stranded (_blas.pyx)
        blas_after_fork()
        blas = blas and _G.use
    # OpenBLAS runs a GEMM of fewer than 65536 * 4 multiply-adds on the calling
    # thread whatever its setting (interface/gemm.c, SMP_THRESHOLD_MIN *
    # GEMM_MULTITHREAD_THRESHOLD): no need to pin it (two calls into OpenBLAS)
    pin = blas and m * n * k >= BLAS_SERIAL_BELOW
    team = team_begin(batch * m * n * k, grain)
    if team == 1:
        slot = _acquire() if pin else 0
        for bi in range(batch):
            _gemm(pa + bi * sa, pb + bi * sb, pc + bi * m * n, m, n, k, blas, slot)
        if pin:
            _release(slot)
        team_end(team)
        return
    if (blas and batch == 1 and team == 2 and _ksplit & (1 if floating is float else 2)
            and k >= 128 and m * n >= 16384):
        tmp = <floating *>fw_kbuf_get(m * n * sizeof(floating))
        if tmp != NULL:
            kh = ((k // 2 + 7) // 8) * 8
            for item in prange(2, schedule="static", num_threads=2):
                slot = _acquire() if pin else 0
                if item == 0:
                    _call_gemm(slot, pb, pa, pc, n, m, kh, n, k, n)
                else:
                    _call_gemm(slot, pb + kh * n, pa + kh, tmp, n, m, k - kh, n, k, n)
                if pin:
                    _release(slot)
            for i in prange(m, schedule="static", num_threads=2):
                for j in range(n):
                    pc[i * n + j] = pc[i * n + j] + tmp[i * n + j]
            fw_kbuf_put(tmp)
            team_end(team)
            return
    cdef Py_ssize_t team_min = _team_min_f64
    if floating is float:
        team_min = _team_min_f32
    if (blas and batch == 1 and _G.team >= 0 and _wide_team & (1 if floating is float else 2)
            and m * n * k >= team_min and blas_tasks_running() == 0):
        # the whole product as one GEMM at the team's threads, its jobs on
        # this thread's OpenMP team (_fw_blas_team.h); alone on that copy
        # only (else the limiter refuses and the split below runs), and
        # only while no thread runs a forked task (this one included): the
        # GEMM's threads wait on each other, so a thread that takes one of
        # their cores stalls them all (two forked 512 float64 matmuls at 2
        # threads each ran at 0.66-0.79x the two in turn that way, where
        # the split's independent GEMMs ran at 0.99-1.07x)
        if blas_pin_wide(_G.lib[_G.team], team):
            _gemm(pa, pb, pc, m, n, k, blas, _G.team)
            blas_unpin_wide(_G.lib[_G.team])
            team_end(team)
            return
    if blas and batch == 1 and _wide & (1 if floating is float else 2):
        # (off by default, see _wide) alone on a library (else the limiter
        # refuses): the whole product to OpenBLAS with the team's threads,
        # the call np.matmul makes
        for s in range(_G.n):
            if blas_pin_wide(_G.lib[s], team):
                _gemm(pa, pb, pc, m, n, k, blas, s)
                blas_unpin_wide(_G.lib[s])
                team_end(team)
                return
    if blas and batch == 1 and n >= COL_SPLIT_MIN * team:
        # one matrix: blocks of columns, each thread C[:, j0:j1] = A @ B[:, j0:j1],
        # each block on the least used library, so the two threads of a team
        # of 2 call two different OpenBLAS copies (one copy called by two
        # threads at once: float32 256 at 0.46x NumPy; two copies: 1.17x).
        # Measured here (2 threads, SciPy's OpenBLAS 0.3.30): float32 128 x 128
        # ran 1.79x the 1-thread speed with column blocks, 0.90x with row
        # blocks; float64 the same either way (docs/performance.md).
        rc = (n + team - 1) // team
        rc = ((rc + COL_ALIGN - 1) // COL_ALIGN) * COL_ALIGN
        per = (n + rc - 1) // rc
        for item in prange(per, schedule="static", num_threads=team):
            r0 = item * rc
            r1 = r0 + rc if r0 + rc < n else n
            slot = _acquire() if pin else 0
            _gemm_cols(pa, pb, pc, m, n, k, r0, r1, slot)
            if pin:
                _release(slot)
    else:
        # work items: (matrix, block of rows); enough of them for the team
        per = (team + batch - 1) // batch
        rc = (m + per - 1) // per
        rc = ((rc + ROW_ALIGN - 1) // ROW_ALIGN) * ROW_ALIGN
        per = (m + rc - 1) // rc
        items = batch * per
        for item in prange(items, schedule="static", num_threads=team):
            bi = item // per
            r0 = (item % per) * rc
            r1 = r0 + rc if r0 + rc < m else m
            slot = _acquire() if pin else 0
            _gemm(pa + bi * sa + r0 * k, pb + bi * sb, pc + bi * m * n + r0 * n,
                  r1 - r0, n, k, blas, slot)
            if pin:
                _release(slot)
    team_end(team)


def matmul(const floating[::1] a, const floating[::1] b, floating[::1] out,
           Py_ssize_t batch, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
           bint a_batched, bint b_batched, Py_ssize_t grain):
    """out[i] = a[i] @ b[i] for i < batch; a is (m, k), b (k, n), out (m, n).

    A non-batched operand is the same matrix for every i. All flat and
    C-contiguous; m, n, k < 2**31; m, n > 0.
    """
    cdef bint blas = _G.use
    with nogil:
        _run(&a[0], &b[0], &out[0], batch, m, n, k, a_batched, b_batched, grain, blas)


# ------------------------------------------------------------ the fast path

cdef inline int _plain_type(object x) noexcept:
    """plain_float_type (_fw_plain.pxd, as _elementwise's fast path), and 2-D."""
    if plain_float_type(x) < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 2:
        return -1
    return cnp.PyArray_TYPE(<cnp.ndarray>x)


cdef inline bint _overlap(cnp.ndarray x, cnp.ndarray y) noexcept:
    cdef char* px = <char*>cnp.PyArray_DATA(x)
    cdef char* py = <char*>cnp.PyArray_DATA(y)
    return px < py + cnp.PyArray_NBYTES(y) and py < px + cnp.PyArray_NBYTES(x)


cdef object _plain_case(object a, object b, object out, Py_ssize_t *mnk, int *type_num):
    """The common case of ``matmul`` (see fast_matmul): the result array (new,
    or ``out``) with ``mnk`` and ``type_num`` filled in, or None."""
    cdef int t = _plain_type(a)
    cdef cnp.ndarray aa, ab, res
    cdef cnp.npy_intp dims[2]
    cdef Py_ssize_t m, n, k
    if t < 0 or _plain_type(b) != t:
        return None
    aa = <cnp.ndarray>a
    ab = <cnp.ndarray>b
    m = cnp.PyArray_DIM(aa, 0)
    k = cnp.PyArray_DIM(aa, 1)
    n = cnp.PyArray_DIM(ab, 1)
    if cnp.PyArray_DIM(ab, 0) != k or m == 0 or n == 0 or k == 0:
        return None
    if m >= INT_LIMIT or n >= INT_LIMIT or k >= INT_LIMIT:
        return None
    if out is None:
        dims[0] = m
        dims[1] = n
        res = <cnp.ndarray>cnp.PyArray_EMPTY(2, dims, t, 0)
    else:
        if _plain_type(out) != t:
            return None
        res = <cnp.ndarray>out
        if (cnp.PyArray_DIM(res, 0) != m or cnp.PyArray_DIM(res, 1) != n
                or not cnp.PyArray_ISWRITEABLE(res)
                or _overlap(res, aa) or _overlap(res, ab)):
            return None
    mnk[0] = m
    mnk[1] = n
    mnk[2] = k
    type_num[0] = t
    return res


def fast_matmul(object a, object b, object out, Py_ssize_t grain):
    """``matmul`` of the common case, checked in C: two exact 2-D ndarrays of
    the same float type, C-contiguous, aligned, native byte order, no
    dimension 0 or over 2**31, and ``out`` None or such an array of the
    result's shape, writable and apart from both inputs.

    The data pointers go straight to the GEMM (no memoryviews, no copies);
    below the grain (or at one thread) the GEMM runs on the calling thread
    without an OpenMP region, as ``matmul`` does. Returns the result (a new
    array, or ``out``), or None where the general path must handle the call:
    then nothing has been written.
    """
    cdef Py_ssize_t mnk[3]
    cdef int t
    cdef bint blas
    cdef const void *pa
    cdef const void *pb
    cdef void *pc
    res = _plain_case(a, b, out, mnk, &t)
    if res is None:
        return None
    pa = cnp.PyArray_DATA(<cnp.ndarray>a)
    pb = cnp.PyArray_DATA(<cnp.ndarray>b)
    pc = cnp.PyArray_DATA(<cnp.ndarray>res)
    blas = _G.use
    if t == cnp.NPY_DOUBLE:
        with nogil:
            _run(<const double*>pa, <const double*>pb, <double*>pc,
                 1, mnk[0], mnk[1], mnk[2], False, False, grain, blas)
    else:
        with nogil:
            _run(<const float*>pa, <const float*>pb, <float*>pc,
                 1, mnk[0], mnk[1], mnk[2], False, False, grain, blas)
    return res


# ------------------------------------------------- forked matmuls without the GIL

ctypedef struct _mm_call:
    fw_gil_free_call base   # first: the pool sees a fw_gil_free_call *
    const void *pa
    const void *pb
    void *pc
    Py_ssize_t m, n, k, grain
    int type_num
    bint blas

cdef Py_ssize_t _gil_free_grain = 1 << 20


cdef void _mm_call_run(fw_gil_free_call *c) noexcept nogil:
    cdef _mm_call *mc = <_mm_call *>c
    if mc.type_num == cnp.NPY_DOUBLE:
        _run(<const double*>mc.pa, <const double*>mc.pb, <double*>mc.pc,
             1, mc.m, mc.n, mc.k, False, False, mc.grain, mc.blas)
    else:
        _run(<const float*>mc.pa, <const float*>mc.pb, <float*>mc.pc,
             1, mc.m, mc.n, mc.k, False, False, mc.grain, mc.blas)


def set_gil_free_grain(Py_ssize_t grain):
    """The grain of forked (GIL-free) matmuls: ``ops.matmul``'s."""
    global _gil_free_grain
    _gil_free_grain = grain


def gil_free_call(tuple args, object kwargs):
    """The pool's prepare function for ``fork(ops.matmul, a, b[, out])``: the
    common case of fast_matmul as a GIL-free call, ``(capsule, result)``, or
    None (then the fork is an ordinary task and reports any error through
    its future). The arrays stay alive through the task's own arguments;
    the result (new, or ``out``) is the future's value once it has run."""
    cdef Py_ssize_t mnk[3]
    cdef int t
    cdef fw_gil_free_call *c = NULL
    cdef _mm_call *mc
    out = gil_free_out(args, kwargs, 2)
    if out is False:
        return None
    a = args[0]
    b = args[1]
    res = _plain_case(a, b, out, mnk, &t)
    if res is None:
        return None
    capsule = gil_free_capsule(sizeof(_mm_call), _mm_call_run, &c)
    if capsule is None:
        return None
    mc = <_mm_call *>c
    mc.pa = cnp.PyArray_DATA(<cnp.ndarray>a)
    mc.pb = cnp.PyArray_DATA(<cnp.ndarray>b)
    mc.pc = cnp.PyArray_DATA(<cnp.ndarray>res)
    mc.m = mnk[0]
    mc.n = mnk[1]
    mc.k = mnk[2]
    mc.grain = _gil_free_grain
    mc.type_num = t
    mc.blas = _G.use
    return (capsule, res)
