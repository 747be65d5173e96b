# Included by _blas.pyx: finding the libraries ops.matmul may call and their
# symbols, one library into one slot of the GEMM table (_gemms, see
# _blas_load.pxi). Nothing here imports scipy_openblas64 (its __init__ loads
# the library RTLD_GLOBAL) and nothing is loaded RTLD_GLOBAL.

cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char* dli_fname
    int dladdr(const void* addr, Dl_info* info)
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    int RTLD_NOW
    int RTLD_NOLOAD
    int RTLD_LOCAL

# OpenBLAS's openblas_set_threads_callback_function and its callback's type
# (the team driver's fw_ob_run_jobs, _fw_blas_team.h)
ctypedef void (*ob_callback_t)(int, fw_ob_dojob_t, int, size_t, void*, int) noexcept nogil
ctypedef void (*ob_set_callback_t)(ob_callback_t cb) noexcept nogil

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

# library files forkwait loaded itself and gave the team driver's callback
_private_libs = set()


cdef bytes _file_of(const void* p):
    """The file of the loaded library `p` points into (b"": not found)."""
    cdef Dl_info info
    if p == NULL or dladdr(p, &info) == 0 or info.dli_fname == NULL:
        return b""
    return bytes(info.dli_fname)


cdef bint _same_file(void* p, bytes path):
    return p != NULL and _file_of(p) == path


cdef object _slot_path(int slot):
    return _file_of(<void*>_gemms.set[slot]).decode() or None


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
        _gemms.ilp[slot] = ilp64
        if ilp64:
            _gemms.s64[slot] = <fw_sgemm64_t>ps
            _gemms.d64[slot] = <fw_dgemm64_t>pd
        else:
            _gemms.s32[slot] = <fw_sgemm_t>ps
            _gemms.d32[slot] = <fw_dgemm_t>pd
        _gemms.set[slot] = <fw_blas_set_t>fset
        _gemms.get[slot] = <fw_blas_get_t>fget
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
            if fn != NULL and _same_file(fn, _file_of(<void*>_gemms.set[slot])):
                (<ob_set_callback_t>fn)(<ob_callback_t>fw_ob_run_jobs)
                _private_libs.add(_file_of(<void*>_gemms.set[slot]))
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
    _gemms.s32[slot] = <fw_sgemm_t>ps
    _gemms.d32[slot] = <fw_dgemm_t>pd
    _gemms.ilp[slot] = False
    _gemms.set[slot] = <fw_blas_set_t>fset
    _gemms.get[slot] = <fw_blas_get_t>fget
    return True
