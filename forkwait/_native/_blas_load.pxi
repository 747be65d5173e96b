# Included by _blas.pyx: the GEMM table ops.matmul calls (_gemms, its type in
# _fw_blas_gemm.h): which libraries fill it (load_blas, select_blas), the
# switch to forkwait's own kernel, and what tests and parallel_info read of
# it. The libraries are found by _blas_find.pxi.

# the libraries ops.matmul may call, in the order load_blas tries them (the
# first two found are used); _gemms.kind indexes this
BLAS_ORDER = ("numpy", "openblas64", "scipy")
BLAS_NAMES = {"numpy": "numpy-openblas", "openblas64": "scipy-openblas64",
              "scipy": "scipy-openblas"}
_order = BLAS_ORDER
_loaded = False


cdef object _slot_name(int slot):
    return BLAS_NAMES[BLAS_ORDER[_gemms.kind[slot]]]


cdef object _backend():
    """The first slot's name, or "own" (forkwait's kernel: no BLAS, or forced)."""
    return _slot_name(0) if _gemms.use else "own"


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
    global _order, _loaded, fw_ob_force_threads
    cdef int slot, i, n = 0
    cdef bint ok
    if order is not None:
        for name in order:
            if name not in BLAS_NAMES:
                raise ValueError(
                    f"unknown BLAS {name!r}: use one of {', '.join(map(repr, BLAS_NAMES))}")
        _order = tuple(order)
        _loaded = False
    if _loaded:
        return _backend()
    _loaded = True
    _gemms.use = 0              # matmuls meanwhile: forkwait's own kernel
    _gemms.n = 0
    _gemms.team = -1
    for name in _order:
        slot = n
        if slot == FW_BLAS_SLOTS:
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
            if _gemms.set[i] == _gemms.set[slot]:
                ok = False
        if not ok:
            continue
        lib_file = _file_of(<void*>_gemms.set[slot])
        _gemms.lib[slot] = _register(<void*>_gemms.set[slot], <void*>_gemms.get[slot], lib_file)
        if _gemms.lib[slot] < 0 or fw_blas_libs[_gemms.lib[slot]].stranded:
            continue            # (stranded: an os.fork() child never calls it, _fw_blas.h)
        _gemms.kind[slot] = BLAS_ORDER.index(name)
        if lib_file in _private_libs:
            _gemms.team = slot
            fw_ob_force_threads = 1     # loading starts no OpenMP team here
            _warm_up(slot)
            fw_ob_force_threads = 0
        else:
            _warm_up(slot)
        n += 1
    _gemms.n = n
    _gemms.use = n > 0
    return _backend()


def select_blas(*order, numpy_module=None, openblas64_path=False):
    """Testing and benchmark switch: load the GEMMs again, trying the named
    libraries in turn (``select_blas("scipy")``: SciPy's only; no names: the
    default order). Returns the first one's backend name. Not while matmuls
    run."""
    return load_blas(order or BLAS_ORDER, numpy_module, openblas64_path)


def use_own_kernel(bint own):
    """Testing switch: ops.matmul runs forkwait's own kernel (True) or the
    BLAS again (False)."""
    global _loaded
    if own:
        _gemms.use = 0
    elif _gemms.n:
        _gemms.use = 1
    else:
        _loaded = False
        load_blas()


cdef void _warm_up(int slot) noexcept nogil:
    """One GEMM with OpenBLAS's threads on (at least 2), once per library.

    Measured here (OpenBLAS 0.3.30 and 0.3.31, Zen 1): until an OpenBLAS has
    run one GEMM multi-threaded, its single-threaded sgemm of 256 x 256 takes
    3.5-3.9 ms; afterwards 1.0 ms. forkwait may only ever call it
    single-threaded, so it would stay on the slow path for good.
    The thread count is put back at once.
    """
    cdef int old = _gemms.get[slot]()
    cdef int n = 256
    cdef fw_i64 n64 = 256
    cdef char tr = b"N"
    cdef float one = 1, zero = 0
    cdef float* buf = <float*>calloc(3 * n * n, sizeof(float))
    if buf == NULL:
        return
    if old < 2:
        _gemms.set[slot](2)
    # (n x n) = (n x n) (n x n), column-major, all zeros
    if _gemms.ilp[slot]:
        _gemms.s64[slot](&tr, &tr, &n64, &n64, &n64, &one, buf + n * n, &n64, buf, &n64,
                         &zero, buf + 2 * n * n, &n64)
    else:
        _gemms.s32[slot](&tr, &tr, &n, &n, &n, &one, buf + n * n, &n, buf, &n,
                         &zero, buf + 2 * n * n, &n)
    if old < 2:
        _gemms.set[slot](old)
    free(buf)


def blas_info():
    """(backend, library file or None, OpenBLAS thread count now or None) of
    the first library ops.matmul calls."""
    if not _gemms.use:
        return "own", None, None
    return _backend(), _slot_path(0), _gemms.get[0]()


def blas_libraries():
    """[(backend, library file, thread count now)] of every library ops.matmul
    calls, the first first; [] with forkwait's own kernel."""
    cdef int i
    if not _gemms.use:
        return []
    return [(_slot_name(i), _slot_path(i), _gemms.get[i]()) for i in range(_gemms.n)]


def blas_index():
    """The first library's index in the BLAS limiter (-1: none), for tests."""
    return _gemms.lib[0] if _gemms.use else -1


def blas_indices():
    """Every library's index in the BLAS limiter, for tests."""
    return [_gemms.lib[i] for i in range(_gemms.n)] if _gemms.use else []


def team_blas():
    """(Tests) The library file whose threaded calls run on the team (None:
    none), and the counts of its threaded calls: all, and those that ran on
    the OpenMP team (the rest ran on threads started for them)."""
    path = _slot_path(_gemms.team) if _gemms.use and _gemms.team >= 0 else None
    return path, fw_ob_calls, fw_ob_team_calls


def _test_team_callback(int n, bint nested):
    """(Tests) n jobs that each wait for all n, through the callback; how
    many ran (n unless it hangs)."""
    cdef int ran
    with nogil:
        ran = fw_ob_test(n, nested)
    return ran
