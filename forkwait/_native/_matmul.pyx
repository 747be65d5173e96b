"""matmul: the product over the OpenMP team, by the process's OpenBLAS.

The GEMM is NumPy's OpenBLAS where it can be found (the library NumPy's own
``np.matmul`` calls: ``load_blas`` resolves its Fortran GEMM with dlsym
through NumPy's ``_multiarray_umath`` module, already loaded). The second
library, for GEMMs that run at the same time as another, is the OpenBLAS of
the ``scipy-openblas64`` package (a dependency: the build NumPy's wheels
bundle, as a file of its own, so a copy of its own), else SciPy's (found
through ``scipy.linalg.cython_blas``); no build dependency either way.
Without a usable BLAS, a plain blocked loop of our own (correct, slower).

A team of one thread makes one single-threaded GEMM. A larger team splits
the product in blocks of columns (rows for batches), one single-threaded GEMM
each, every GEMM on the library least used by matmuls at that moment (so
concurrent GEMMs call different copies of OpenBLAS). A switch (``set_wide``,
off by default, by measurement: docs/performance.md) hands the whole product
instead, when this matmul is alone on a library, to OpenBLAS at the team's
thread count (a "wide" call: the call ``np.matmul`` makes). OpenBLAS would start threads of its own
inside every block and oversubscribe the team, so while forkwait matmuls run,
the library's thread count is 1 (T for a wide call), and the count the
process had is restored when the last one ends. The pin goes through the BLAS
limiter (``_blas``), which also applies the BLAS budget of forked tasks: one
record per library under one lock, so the two can overlap without leaving
OpenBLAS pinned, and a caller's own BLAS calls afterwards run with their
threads (DESIGN.md rule 4: never a process-wide setting changed for good).
"""

import os

cimport numpy as cnp
from forkwait._native._fw_plain cimport (
    fw_gil_free_call, gil_free_capsule, gil_free_out, plain_float_type,
)
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdlib cimport calloc, free
from cython cimport floating
from cython.parallel cimport prange

from forkwait._native._blas cimport (
    blas_pin, blas_pin_least, blas_pin_wide, blas_register, blas_tasks_running,
    blas_unpin_wide,
)
from forkwait._native._team cimport omp_team_ok, team_begin, team_end

cnp.import_array()

cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char* dli_fname
    int dladdr(const void* addr, Dl_info* info)
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    int RTLD_NOW
    int RTLD_NOLOAD
    int RTLD_LOCAL

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

cdef extern from "<pthread.h>" nogil:
    int pthread_atfork(void (*prepare)(), void (*parent)(), void (*child)())

ctypedef void (*ob_callback_t)(int, fw_ob_dojob_t, int, size_t, void*, int) noexcept nogil
ctypedef void (*ob_set_callback_t)(ob_callback_t cb) noexcept nogil

ctypedef void (*sgemm_t)(char* ta, char* tb, int* m, int* n, int* k,
                         float* alpha, float* a, int* lda, float* b, int* ldb,
                         float* beta, float* c, int* ldc) noexcept nogil
ctypedef void (*dgemm_t)(char* ta, char* tb, int* m, int* n, int* k,
                         double* alpha, double* a, int* lda, double* b, int* ldb,
                         double* beta, double* c, int* ldc) noexcept nogil
# the ILP64 builds (NumPy's wheels: scipy_sgemm_64_): 64-bit integers
ctypedef long long i64
ctypedef void (*sgemm64_t)(char* ta, char* tb, i64* m, i64* n, i64* k,
                           float* alpha, float* a, i64* lda, float* b, i64* ldb,
                           float* beta, float* c, i64* ldc) noexcept nogil
ctypedef void (*dgemm64_t)(char* ta, char* tb, i64* m, i64* n, i64* k,
                           double* alpha, double* a, i64* lda, double* b, i64* ldb,
                           double* beta, double* c, i64* ldc) noexcept nogil
ctypedef void (*set_threads_t)(int n) noexcept nogil
ctypedef int (*get_threads_t)() noexcept nogil

# The libraries ops.matmul calls ("slots"): slot 0 is the first found in the
# order (NumPy's by default), slot 1 the second (scipy-openblas64's, else
# SciPy's) when it is another file. A single-threaded GEMM takes the slot
# least used by matmuls now, so two matmuls at once call two different
# libraries (see fw_blas_pin_least).
cdef enum:
    MAX_SLOTS = 2
cdef sgemm_t _s32[MAX_SLOTS]
cdef dgemm_t _d32[MAX_SLOTS]
cdef sgemm64_t _s64[MAX_SLOTS]
cdef dgemm64_t _d64[MAX_SLOTS]
cdef bint _ilp[MAX_SLOTS]
cdef set_threads_t _set[MAX_SLOTS]
cdef get_threads_t _get[MAX_SLOTS]
cdef int _lib[MAX_SLOTS]         # the slot's index in the BLAS limiter (_blas)
cdef int _nslots = 0
_slot_names = []
_backend = None
cdef bint _use_blas = False     # _nslots > 0 and not forced to our own kernel

# the libraries ops.matmul may call, in the order load_blas tries them (the
# first two found are used)
BLAS_ORDER = ("numpy", "openblas64", "scipy")
BLAS_NAMES = {"numpy": "numpy-openblas", "openblas64": "scipy-openblas64",
              "scipy": "scipy-openblas"}
_order = BLAS_ORDER

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
# float32 at 384 was 6-9% slower in the sequence.
cdef int _team_slot = -1        # the slot whose library runs on the team, or -1
cdef int _wide_team = 3
cdef Py_ssize_t _team_min_f32 = 1 << 26
cdef Py_ssize_t _team_min_f64 = 1 << 24
# library files forkwait loaded itself and gave the callback
_private_libs = set()

pthread_atfork(NULL, NULL, fw_ob_atfork_child)
fw_ob_team_ok = omp_team_ok


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
    the copy on the team, per dtype (defaults 2**26 and 2**24). Returns the
    old pair."""
    global _team_min_f32, _team_min_f64
    if float32_madds < 0 or float64_madds < 0:
        raise ValueError("set_wide_team_min takes counts >= 0")
    old = (_team_min_f32, _team_min_f64)
    _team_min_f32, _team_min_f64 = float32_madds, float64_madds
    return old


def team_blas():
    """(Tests) The library file whose threaded calls run on the team (None:
    none), and the counts of its threaded calls: all, and those that ran on
    the OpenMP team (the rest ran on threads started for them)."""
    path = _slot_path(_team_slot) if _use_blas and _team_slot >= 0 else None
    return path, fw_ob_calls, fw_ob_team_calls


def _test_team_callback(int n, bint nested):
    """(Tests) n jobs that each wait for all n, through the callback; how
    many ran (n unless it hangs)."""
    cdef int ran
    with nogil:
        ran = fw_ob_test(n, nested)
    return ran


# GEMM dimensions are C ints
cdef Py_ssize_t INT_LIMIT = 2147483648

# the (Fortran GEMM, set threads, get threads) symbols tried in NumPy's BLAS:
# ILP64 first (NumPy's wheels), then the plain LP64 names (other builds)
_NUMPY_SYMBOLS = (
    (True, b"scipy_sgemm_64_", b"scipy_dgemm_64_",
     b"scipy_openblas_set_num_threads64_", b"scipy_openblas_get_num_threads64_"),
    (True, b"sgemm_64_", b"dgemm_64_",
     b"openblas_set_num_threads64_", b"openblas_get_num_threads64_"),
    (False, b"scipy_sgemm_", b"scipy_dgemm_",
     b"scipy_openblas_set_num_threads", b"scipy_openblas_get_num_threads"),
    (False, b"sgemm_", b"dgemm_", b"openblas_set_num_threads", b"openblas_get_num_threads"),
)


cdef inline int _acquire() noexcept nogil:
    """Pin the least used library to 1 thread for one GEMM; its slot."""
    cdef int slot = blas_pin_least(_lib, _nslots)
    return slot if slot >= 0 else 0


cdef inline void _release(int slot) noexcept nogil:
    blas_pin(_lib[slot], -1)


cdef bytes _file_of(const void* p):
    """The file of the loaded library `p` points into (b"": not found)."""
    cdef Dl_info info
    if p == NULL or dladdr(p, &info) == 0 or info.dli_fname == NULL:
        return b""
    return bytes(info.dli_fname)


cdef object _slot_path(int slot):
    return _file_of(<void*>_set[slot]).decode() or None


def blas_info():
    """(backend, library file or None, OpenBLAS thread count now or None) of
    the first library ops.matmul calls."""
    if not _use_blas:
        return _backend or "own", None, None
    return _backend, _slot_path(0), _get[0]()


def blas_libraries():
    """[(backend, library file, thread count now)] of every library ops.matmul
    calls, the first first; [] with forkwait's own kernel."""
    cdef int i
    if not _use_blas:
        return []
    return [(_slot_names[i], _slot_path(i), _get[i]()) for i in range(_nslots)]


def blas_index():
    """The first library's index in the BLAS limiter (-1: none), for tests."""
    return _lib[0] if _use_blas else -1


def blas_indices():
    """Every library's index in the BLAS limiter, for tests."""
    return [_lib[i] for i in range(_nslots)] if _use_blas else []


cdef bint _same_file(void* p, bytes path):
    return p != NULL and _file_of(p) == path


def _numpy_module_path():
    """The file of NumPy's C core, through which its BLAS is found."""
    try:
        from numpy._core import _multiarray_umath as mod
    except ImportError:         # NumPy 1.x
        from numpy.core import _multiarray_umath as mod
    return mod.__file__


cdef bint _load_symbols(int slot, void* handle):
    """The first of _NUMPY_SYMBOLS found through `handle` into `slot`; the GEMM
    and the thread functions must come from one file."""
    cdef void* ps
    cdef void* pd
    cdef void* fset
    cdef void* fget
    for ilp64, sname, dname, setname, getname in _NUMPY_SYMBOLS:
        ps = dlsym(handle, sname)
        lib = _file_of(ps)
        if not lib:
            continue
        pd = dlsym(handle, dname)
        fset = dlsym(handle, setname)
        fget = dlsym(handle, getname)
        if not (_same_file(pd, lib) and _same_file(fset, lib) and _same_file(fget, lib)):
            continue
        _ilp[slot] = ilp64
        if ilp64:
            _s64[slot] = <sgemm64_t>ps
            _d64[slot] = <dgemm64_t>pd
        else:
            _s32[slot] = <sgemm_t>ps
            _d32[slot] = <dgemm_t>pd
        _set[slot] = <set_threads_t>fset
        _get[slot] = <get_threads_t>fget
        return True
    return False


cdef bint _load_numpy(int slot, object module_path):
    """NumPy's OpenBLAS into `slot`: dlsym through NumPy's already-loaded C
    core (which searches its dependencies, so the symbol found is the
    library NumPy calls)."""
    cdef void* handle
    if module_path is None:
        return False
    handle = dlopen(module_path.encode(), RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        return False
    return _load_symbols(slot, handle)


def _openblas64_path():
    """The library file of the scipy-openblas64 package, or None. Found
    without importing the package: its __init__ loads the library with
    RTLD_GLOBAL, and forkwait loads it itself (_load_openblas64)."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("scipy_openblas64")
        lib_dir = os.path.join(list(spec.submodule_search_locations)[0], "lib")
        names = sorted(f for f in os.listdir(lib_dir)
                       if f.startswith("libscipy_openblas64_") and
                       (f.endswith(".so") or ".so." in f or f.endswith(".dylib")))
    except Exception:           # not installed, or no library file in it
        return None
    return os.path.join(lib_dir, names[0]) if names else None


cdef bint _load_openblas64(int slot, object path):
    """The scipy-openblas64 package's OpenBLAS into `slot`: loaded with
    RTLD_LOCAL, so its symbols (the same names as NumPy's copy) never
    stand in for another library's. Where this loads it (nobody had),
    its server threads are told to sleep at once when idle
    (OPENBLAS_THREAD_TIMEOUT, read when it loads) and its threaded calls
    are given to forkwait's team (fw_ob_run_jobs): it is forkwait's own."""
    cdef void* handle
    cdef void* fn = NULL
    if path is None:
        return False
    bpath = os.fsencode(path)
    handle = dlopen(bpath, RTLD_NOW | RTLD_NOLOAD)
    fresh = handle == NULL
    if fresh:
        old = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"   # 2**4 cycles
        try:
            handle = dlopen(bpath, RTLD_NOW | RTLD_LOCAL)
        finally:
            if old is None:
                del os.environ["OPENBLAS_THREAD_TIMEOUT"]
            else:
                os.environ["OPENBLAS_THREAD_TIMEOUT"] = old
    if handle == NULL or not _load_symbols(slot, handle):
        return False
    if fresh:
        for name in (b"scipy_openblas_set_threads_callback_function64_",
                     b"openblas_set_threads_callback_function64_",
                     b"openblas_set_threads_callback_function"):
            fn = dlsym(handle, name)
            if fn != NULL and _same_file(fn, _file_of(<void*>_set[slot])):
                (<ob_set_callback_t>fn)(<ob_callback_t>fw_ob_run_jobs)
                _private_libs.add(_file_of(<void*>_set[slot]))
                break
    return True


cdef bint _load_scipy(int slot):
    """SciPy's OpenBLAS into `slot`, through scipy.linalg.cython_blas's capsules."""
    cdef void* handle
    cdef void* ps
    cdef void* pd
    cdef void* fset = NULL
    cdef void* fget = NULL
    try:
        from scipy.linalg import cython_blas
        caps = cython_blas.__pyx_capi__
        ps = PyCapsule_GetPointer(caps["sgemm"], PyCapsule_GetName(caps["sgemm"]))
        pd = PyCapsule_GetPointer(caps["dgemm"], PyCapsule_GetName(caps["dgemm"]))
    except Exception:           # no SciPy, or a SciPy without these capsules
        return False
    lib = _file_of(ps)
    if not lib:
        return False
    handle = dlopen(lib, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        return False
    for prefix in (b"scipy_openblas", b"openblas"):
        fset = dlsym(handle, prefix + b"_set_num_threads")
        fget = dlsym(handle, prefix + b"_get_num_threads")
        if fset != NULL and fget != NULL:
            break
    if fset == NULL or fget == NULL:
        return False            # a BLAS whose threads we cannot pin
    _s32[slot] = <sgemm_t>ps
    _d32[slot] = <dgemm_t>pd
    _ilp[slot] = False
    _set[slot] = <set_threads_t>fset
    _get[slot] = <get_threads_t>fget
    return True


def load_blas(order=None, numpy_module=None, openblas64_path=False):
    """Find the GEMMs; returns the first one's backend name
    ("numpy-openblas", "scipy-openblas64", "scipy-openblas", or "own" where
    none is found).

    `order`: the libraries to try ("numpy", "openblas64", "scipy"; default
    BLAS_ORDER, or the last order given); the first two found are used, the
    first first. `numpy_module`: the file through which NumPy's BLAS is
    looked up (default NumPy's ``_multiarray_umath``; tests give another to
    see the fallback); `openblas64_path`: the scipy-openblas64 library file
    (default: the package's; None: as if not installed). Loaded once;
    ``use_own_kernel`` and ``select_blas`` load again.
    """
    global _backend, _order, _use_blas, _nslots, _slot_names, _team_slot, fw_ob_force_threads
    cdef int slot, i
    cdef bint ok
    if order is not None:
        for name in order:
            if name not in BLAS_NAMES:
                raise ValueError(
                    f"unknown BLAS {name!r}: use one of {', '.join(map(repr, BLAS_NAMES))}")
        _order = tuple(order)
        _backend = None
    if _backend is not None:
        return _backend
    _backend = "own"
    _use_blas = False
    _nslots = 0
    _team_slot = -1
    names = []
    for name in _order:
        slot = len(names)
        if slot == MAX_SLOTS:
            break
        if name == "numpy":
            path = numpy_module
            if path is None:
                try:
                    path = _numpy_module_path()
                except Exception:
                    path = None
            ok = _load_numpy(slot, path)
        elif name == "openblas64":
            ok = _load_openblas64(
                slot, _openblas64_path() if openblas64_path is False else openblas64_path)
        else:
            ok = _load_scipy(slot)
        if not ok:
            continue
        for i in range(slot):   # the same file found twice: once is enough
            if _set[i] == _set[slot]:
                ok = False
        if not ok:
            continue
        lib_file = _file_of(<void*>_set[slot])
        _lib[slot] = blas_register(<void*>_set[slot], <void*>_get[slot], lib_file)
        if _lib[slot] < 0:
            continue
        if lib_file in _private_libs:
            _team_slot = slot
            fw_ob_force_threads = 1     # loading starts no OpenMP team here
            _warm_up(slot)
            fw_ob_force_threads = 0
        else:
            _warm_up(slot)
        names.append(BLAS_NAMES[name])
    if not names:
        return _backend
    _slot_names = names
    _nslots = len(names)
    _backend = names[0]
    _use_blas = True
    return _backend


def select_blas(*order, numpy_module=None, openblas64_path=False):
    """Testing and benchmark switch: load the GEMMs again, trying the named
    libraries in turn (``select_blas("scipy")``: SciPy's only; no names: the
    default order). Returns the first one's backend name. Not while matmuls
    run."""
    return load_blas(order or BLAS_ORDER, numpy_module, openblas64_path)


def set_wide(int dtypes):
    """Testing and benchmark switch: which dtypes may take a wide call (bit 0
    float32, bit 1 float64; 0: always split over the team). Returns the old
    value."""
    global _wide
    old = _wide
    _wide = dtypes
    return old


cdef void _warm_up(int slot) noexcept nogil:
    """One GEMM with OpenBLAS's threads on (at least 2), once per library.

    Measured here (OpenBLAS 0.3.30 and 0.3.31, Zen 1): until an OpenBLAS has
    run one GEMM multi-threaded, its single-threaded sgemm of 256 x 256 takes
    3.5-3.9 ms; afterwards 1.0 ms. forkwait may only ever call it
    single-threaded, so it would stay on the slow path for good.
    The thread count is put back at once.
    """
    cdef int old = _get[slot]()
    cdef int n = 256
    cdef float* buf = <float*>calloc(3 * n * n, sizeof(float))
    if buf == NULL:
        return
    if old < 2:
        _set[slot](2)
    _call_gemm(slot, buf + n * n, buf, buf + 2 * n * n, n, n, n, n, n, n)
    if old < 2:
        _set[slot](old)
    free(buf)


def use_own_kernel(bint own):
    """Testing switch: force the built-in kernel (True) or BLAS again (False)."""
    global _backend, _use_blas
    if own:
        _backend = "own"
        _use_blas = False
    elif _nslots and _backend == "own":
        _backend = _slot_names[0]
        _use_blas = True
    else:
        _backend = None
        load_blas()


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
    cdef i64 lm = m, ln = n, lk = k, la = lda, lb = ldb, lc = ldc
    cdef float sone = 1, szero = 0
    cdef double done = 1, dzero = 0
    if _ilp[slot]:
        if floating is float:
            _s64[slot](&tr, &tr, &ln, &lm, &lk, &sone, <float*>b, &lb, <float*>a, &la,
                       &szero, c, &lc)
        else:
            _d64[slot](&tr, &tr, &ln, &lm, &lk, &done, <double*>b, &lb, <double*>a, &la,
                       &dzero, c, &lc)
    elif floating is float:
        _s32[slot](&tr, &tr, &in_, &im, &ik, &sone, <float*>b, &ib, <float*>a, &ia,
                   &szero, c, &ic)
    else:
        _d32[slot](&tr, &tr, &in_, &im, &ik, &done, <double*>b, &ib, <double*>a, &ia,
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
    # OpenBLAS runs a GEMM of fewer than 65536 * 4 multiply-adds on the calling
    # thread whatever its setting (interface/gemm.c, SMP_THRESHOLD_MIN *
    # GEMM_MULTITHREAD_THRESHOLD): no need to pin it (two calls into OpenBLAS)
    cdef bint pin = blas and m * n * k >= BLAS_SERIAL_BELOW
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
    if (blas and batch == 1 and _team_slot >= 0 and _wide_team & (1 if floating is float else 2)
            and m * n * k >= team_min and blas_tasks_running() == 0):
        # the whole product as one GEMM at the team's threads, its jobs on
        # this thread's OpenMP team (_fw_blas_team.h); alone on that copy
        # only (else the limiter refuses and the split below runs), and
        # only while no thread runs a forked task (this one included): the
        # GEMM's threads wait on each other, so a thread that takes one of
        # their cores stalls them all (two forked 512 float64 matmuls at 2
        # threads each ran at 0.66-0.79x the two in turn that way, where
        # the split's independent GEMMs ran at 0.99-1.07x)
        if blas_pin_wide(_lib[_team_slot], team):
            _gemm(pa, pb, pc, m, n, k, blas, _team_slot)
            blas_unpin_wide(_lib[_team_slot])
            team_end(team)
            return
    if blas and batch == 1 and _wide & (1 if floating is float else 2):
        # (off by default, see _wide) alone on a library (else the limiter
        # refuses): the whole product to OpenBLAS with the team's threads,
        # the call np.matmul makes
        for s in range(_nslots):
            if blas_pin_wide(_lib[s], team):
                _gemm(pa, pb, pc, m, n, k, blas, s)
                blas_unpin_wide(_lib[s])
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
    cdef bint blas = _use_blas
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
    blas = _use_blas
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
    mc.blas = _use_blas
    return (capsule, res)
