"""Element-wise kernels: unary math and binary arithmetic with broadcasting.

Entry points take 1-D C-contiguous views (the Python layer flattens, promotes
and allocates) and a grain size; the loop bodies are ``noexcept nogil`` and
call the branch-free math of ``_fw_math.h``, so that gcc vectorises them.

``fast_unary`` and ``fast_binary`` are the small-array fast path: they take
the arguments as they came, check the common case in C (exact float32/float64
ndarrays, C-contiguous, aligned, native byte order, equal shapes or a Python
scalar, a suitable ``out``), allocate with the NumPy C API and run the same
loops; anything else returns None and the Python layer's general path runs.
"""

cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE
from cython cimport floating
from cython.parallel cimport prange

from forkwait._native._fw_common cimport chunk_size
from forkwait._native._openmp cimport omp_get_num_threads
from forkwait._native._fw_math cimport (
    fabs, fabsf, fw_exp, fw_expf, fw_gelu, fw_geluf, fw_sigmoid, fw_sigmoidf,
    fw_tanh, fw_tanhf, log, logf,
)
from forkwait._native._runtime cimport team_begin, team_end

cdef extern from "_fw_simd.h" nogil:
    void fw_sqrt_f(const float* x, float* y, Py_ssize_t n)
    void fw_sqrt_d(const double* x, double* y, Py_ssize_t n)

cnp.import_array()

cdef enum:
    NEG = 0
    ABS = 1
    EXP = 2
    LOG = 3
    SQRT = 4
    TANH = 5
    SIGMOID = 6
    RELU = 7
    GELU = 8
    PROBE = 99      # test probe: y[i] = omp_get_num_threads() of its thread

cdef enum:
    ADD = 0
    SUB = 1
    MUL = 2
    DIV = 3
    MAXIMUM = 4
    MINIMUM = 5

#: Unary op codes, by name (the Python layer passes the code).
UNARY = {"neg": NEG, "abs": ABS, "exp": EXP, "log": LOG, "sqrt": SQRT,
         "tanh": TANH, "sigmoid": SIGMOID, "relu": RELU, "gelu": GELU}
#: The probe op: runs the unary kernel's exact parallel path and writes the
#: team size that OpenMP reports inside the prange into every element.
PROBE_OP = PROBE
#: Binary op codes, by name.
BINARY = {"add": ADD, "sub": SUB, "mul": MUL, "div": DIV,
          "maximum": MAXIMUM, "minimum": MINIMUM}


# ------------------------------------------------------------ loop bodies

cdef void _unary_loop(int op, const floating* x, floating* y,
                      Py_ssize_t n) noexcept nogil:
    # One loop per op (the switch is outside the loops) so each vectorises.
    cdef Py_ssize_t i
    cdef int team
    if op == NEG:
        for i in range(n):
            y[i] = -x[i]
    elif op == PROBE:
        team = omp_get_num_threads()
        for i in range(n):
            y[i] = team
    elif op == ABS:
        for i in range(n):
            if floating is float:
                y[i] = fabsf(x[i])
            else:
                y[i] = fabs(x[i])
    elif op == EXP:
        for i in range(n):
            if floating is float:
                y[i] = fw_expf(x[i])
            else:
                y[i] = fw_exp(x[i])
    elif op == LOG:
        for i in range(n):
            if floating is float:
                y[i] = logf(x[i])
            else:
                y[i] = log(x[i])
    elif op == SQRT:
        if floating is float:
            fw_sqrt_f(x, y, n)
        else:
            fw_sqrt_d(x, y, n)
    elif op == TANH:
        for i in range(n):
            if floating is float:
                y[i] = fw_tanhf(x[i])
            else:
                y[i] = fw_tanh(x[i])
    elif op == SIGMOID:
        for i in range(n):
            if floating is float:
                y[i] = fw_sigmoidf(x[i])
            else:
                y[i] = fw_sigmoid(x[i])
    elif op == RELU:
        # NaN stays NaN (as torch.relu and np.maximum(x, 0))
        for i in range(n):
            y[i] = 0 if x[i] < 0 else x[i]
    elif op == GELU:
        for i in range(n):
            if floating is float:
                y[i] = fw_geluf(x[i])
            else:
                y[i] = fw_gelu(x[i])


cdef void _pair_loop(int op, const floating* a, const floating* b, floating* y,
                     Py_ssize_t n) noexcept nogil:
    """y[i] = a[i] op b[i]."""
    cdef Py_ssize_t i
    if op == ADD:
        for i in range(n):
            y[i] = a[i] + b[i]
    elif op == SUB:
        for i in range(n):
            y[i] = a[i] - b[i]
    elif op == MUL:
        for i in range(n):
            y[i] = a[i] * b[i]
    elif op == DIV:
        for i in range(n):
            y[i] = a[i] / b[i]
    elif op == MAXIMUM:
        # NaN in either propagates, as np.maximum
        for i in range(n):
            y[i] = a[i] if (a[i] >= b[i] or a[i] != a[i]) else b[i]
    elif op == MINIMUM:
        for i in range(n):
            y[i] = a[i] if (a[i] <= b[i] or a[i] != a[i]) else b[i]


cdef void _scalar_loop(int op, const floating* a, floating s, floating* y,
                       Py_ssize_t n, bint left) noexcept nogil:
    """y[i] = a[i] op s, or s op a[i] when ``left``."""
    cdef Py_ssize_t i
    if op == ADD:
        for i in range(n):
            y[i] = a[i] + s
    elif op == MUL:
        for i in range(n):
            y[i] = a[i] * s
    elif op == SUB:
        if left:
            for i in range(n):
                y[i] = s - a[i]
        else:
            for i in range(n):
                y[i] = a[i] - s
    elif op == DIV:
        if left:
            for i in range(n):
                y[i] = s / a[i]
        else:
            for i in range(n):
                y[i] = a[i] / s
    elif op == MAXIMUM:
        if s != s:
            for i in range(n):
                y[i] = s
        else:
            for i in range(n):
                y[i] = a[i] if (a[i] >= s or a[i] != a[i]) else s
    elif op == MINIMUM:
        if s != s:
            for i in range(n):
                y[i] = s
        else:
            for i in range(n):
                y[i] = a[i] if (a[i] <= s or a[i] != a[i]) else s


cdef void _binary_range(int op, const floating* a, Py_ssize_t la,
                        const floating* b, Py_ssize_t lb, floating* y,
                        Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """Elements [start, stop) of ``a op b`` where the shorter operand repeats.

    ``la == lb``: same shape; a length of 1: a scalar; otherwise the shorter
    one is a row repeated over the longer one (the bias-add broadcast).
    """
    cdef Py_ssize_t i, j, m, d
    if la == lb:
        _pair_loop(op, a + start, b + start, y + start, stop - start)
    elif lb == 1:
        _scalar_loop(op, a + start, b[0], y + start, stop - start, False)
    elif la == 1:
        _scalar_loop(op, b + start, a[0], y + start, stop - start, True)
    elif lb < la:
        d = lb
        i = start
        while i < stop:
            j = i % d
            m = d - j if d - j < stop - i else stop - i
            _pair_loop(op, a + i, b + j, y + i, m)
            i += m
    else:
        d = la
        i = start
        while i < stop:
            j = i % d
            m = d - j if d - j < stop - i else stop - i
            _pair_loop(op, a + j, b + i, y + i, m)
            i += m


# ------------------------------------------------------------ parallel runs

cdef void _unary_run(int op, const floating* px, floating* py, Py_ssize_t n,
                     Py_ssize_t grain) noexcept nogil:
    cdef Py_ssize_t chunk, start, stop
    cdef Py_ssize_t t
    cdef int team
    team = team_begin(n, grain)
    if team == 1:
        _unary_loop(op, px, py, n)
    else:
        chunk = chunk_size(n, team)
        for t in prange((n + chunk - 1) // chunk, schedule="dynamic", num_threads=team):
            start = t * chunk
            stop = start + chunk if start + chunk < n else n
            if start < stop:
                _unary_loop(op, px + start, py + start, stop - start)
    team_end(team)


cdef void _binary_run(int op, const floating* pa, Py_ssize_t la,
                      const floating* pb, Py_ssize_t lb, floating* py,
                      Py_ssize_t n, Py_ssize_t grain) noexcept nogil:
    cdef Py_ssize_t chunk, start, stop
    cdef Py_ssize_t t
    cdef int team
    team = team_begin(n, grain)
    if team == 1:
        _binary_range(op, pa, la, pb, lb, py, 0, n)
    else:
        chunk = chunk_size(n, team)
        for t in prange((n + chunk - 1) // chunk, schedule="dynamic", num_threads=team):
            start = t * chunk
            stop = start + chunk if start + chunk < n else n
            if start < stop:
                _binary_range(op, pa, la, pb, lb, py, start, stop)
    team_end(team)


cdef void _scalar_run(int op, const floating* pa, floating v, bint left,
                      floating* py, Py_ssize_t n, Py_ssize_t grain) noexcept nogil:
    cdef Py_ssize_t chunk, start, stop
    cdef Py_ssize_t t
    cdef int team
    team = team_begin(n, grain)
    if team == 1:
        _scalar_loop(op, pa, v, py, n, left)
    else:
        chunk = chunk_size(n, team)
        for t in prange((n + chunk - 1) // chunk, schedule="dynamic", num_threads=team):
            start = t * chunk
            stop = start + chunk if start + chunk < n else n
            if start < stop:
                _scalar_loop(op, pa + start, v, py + start, stop - start, left)
    team_end(team)


# ------------------------------------------------------------ entry points

def unary(int op, const floating[::1] x, floating[::1] out, Py_ssize_t grain):
    """out[i] = op(x[i]) for the ``UNARY`` code ``op``; len(x) == len(out) > 0."""
    cdef Py_ssize_t n = out.shape[0]
    cdef const floating* px = &x[0]
    cdef floating* py = &out[0]
    with nogil:
        _unary_run(op, px, py, n, grain)


def binary(int op, const floating[::1] a, const floating[::1] b,
           floating[::1] out, Py_ssize_t grain):
    """out = a op b for the ``BINARY`` code ``op``.

    len(out) == n > 0; each of a, b has n elements, 1 element (a scalar), or
    d elements with n % d == 0 (a row repeated n // d times).
    """
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t la = a.shape[0], lb = b.shape[0]
    cdef const floating* pa = &a[0]
    cdef const floating* pb = &b[0]
    cdef floating* py = &out[0]
    with nogil:
        _binary_run(op, pa, la, pb, lb, py, n, grain)


def binary_scalar(int op, const floating[::1] a, double s, bint left,
                  floating[::1] out, Py_ssize_t grain):
    """out = a op s, or s op a when ``left``; s is cast to a's type first."""
    cdef Py_ssize_t n = out.shape[0]
    cdef floating v = <floating>s
    cdef const floating* pa = &a[0]
    cdef floating* py = &out[0]
    with nogil:
        _scalar_run(op, pa, v, left, py, n, grain)


# ------------------------------------------------- small-array fast path

# Off while forkwait.profile() records (ops._set_profiling): the calls then go
# through the Python layer's kernel tables, which hold the recording wrappers.
cdef bint _fast_on = True


def _set_fast(bint on):
    """Enable (True) or disable the fast path (the profiler turns it off)."""
    global _fast_on
    _fast_on = on


cdef inline int _plain_type(object x):
    """NPY_FLOAT/NPY_DOUBLE for an exact, C-contiguous, aligned, native-order
    float32/float64 ndarray; -1 for anything else."""
    cdef cnp.ndarray a
    cdef int t
    if not cnp.PyArray_CheckExact(x):
        return -1
    a = <cnp.ndarray>x
    t = cnp.PyArray_TYPE(a)
    if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
        return -1
    if not cnp.PyArray_CHKFLAGS(a, cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED):
        return -1
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return -1
    return t


cdef inline bint _apart(cnp.ndarray x, cnp.ndarray out) noexcept:
    """x can be read while out is written: the same memory (in place; both
    C-contiguous with the same shape and dtype) or no overlap at all."""
    cdef char* px = <char*>cnp.PyArray_DATA(x)
    cdef char* po = <char*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t nb = cnp.PyArray_NBYTES(out)
    return px == po or px + nb <= po or po + nb <= px


cdef object _result(cnp.ndarray like, int t, object out):
    """A new C-ordered array of like's shape and type t, or ``out`` where it
    is an exact, writable, C-contiguous, aligned ndarray of that shape and
    type; None where out is anything else (the general path checks it)."""
    if out is None:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(like), cnp.PyArray_DIMS(like), t, 0)
    if _plain_type(out) != t:
        return None
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        return None
    if not cnp.PyArray_SAMESHAPE(like, <cnp.ndarray>out):
        return None
    return out


def fast_unary(int op, object x, object out, Py_ssize_t grain):
    """``unary`` for a plain float32/float64 array (see the module doc).

    Returns the result (a new array, or ``out``), or None where the general
    path must handle the call: then nothing has been written.
    """
    cdef int t
    cdef cnp.ndarray ax, res
    cdef Py_ssize_t n
    cdef object r
    if not _fast_on:
        return None
    t = _plain_type(x)
    if t < 0:
        return None
    ax = <cnp.ndarray>x
    r = _result(ax, t, out)
    if r is None:
        return None
    res = <cnp.ndarray>r
    if out is not None and not _apart(ax, res):
        return None
    n = cnp.PyArray_SIZE(ax)
    if n > 0:
        if t == cnp.NPY_DOUBLE:
            with nogil:
                _unary_run[double](op, <const double*>cnp.PyArray_DATA(ax),
                                   <double*>cnp.PyArray_DATA(res), n, grain)
        else:
            with nogil:
                _unary_run[float](op, <const float*>cnp.PyArray_DATA(ax),
                                  <float*>cnp.PyArray_DATA(res), n, grain)
    return res


def fast_binary(int op, object a, object b, object out, Py_ssize_t grain):
    """``binary``/``binary_scalar`` for two plain float32/float64 arrays of
    the same shape and type, or one with a Python float or int (see the
    module doc). Returns the result, or None for the general path.
    """
    cdef int t, tb
    cdef cnp.ndarray aa, ab, res
    cdef Py_ssize_t n
    cdef object r, s
    cdef double v
    cdef bint left = False
    if not _fast_on:
        return None
    t = _plain_type(a)
    if t >= 0:
        tb = _plain_type(b)
        if tb >= 0:     # two arrays
            aa = <cnp.ndarray>a
            ab = <cnp.ndarray>b
            if tb != t or not cnp.PyArray_SAMESHAPE(aa, ab):
                return None
            r = _result(aa, t, out)
            if r is None:
                return None
            res = <cnp.ndarray>r
            if out is not None and not (_apart(aa, res) and _apart(ab, res)):
                return None
            n = cnp.PyArray_SIZE(aa)
            if n > 0:
                if t == cnp.NPY_DOUBLE:
                    with nogil:
                        _binary_run[double](
                            op, <const double*>cnp.PyArray_DATA(aa), n,
                            <const double*>cnp.PyArray_DATA(ab), n,
                            <double*>cnp.PyArray_DATA(res), n, grain)
                else:
                    with nogil:
                        _binary_run[float](
                            op, <const float*>cnp.PyArray_DATA(aa), n,
                            <const float*>cnp.PyArray_DATA(ab), n,
                            <float*>cnp.PyArray_DATA(res), n, grain)
            return res
        if type(b) is not float and type(b) is not int:
            return None
        aa = <cnp.ndarray>a
        s = b
    else:
        if type(a) is not float and type(a) is not int:
            return None
        t = _plain_type(b)
        if t < 0:
            return None
        aa = <cnp.ndarray>b
        s = a
        left = True
    # an array with a Python scalar (NEP 50: the array's type wins)
    r = _result(aa, t, out)
    if r is None:
        return None
    res = <cnp.ndarray>r
    if out is not None and not _apart(aa, res):
        return None
    # float(int) as the general path does (OverflowError for huge ints)
    v = PyFloat_AS_DOUBLE(s) if type(s) is float else float(s)
    n = cnp.PyArray_SIZE(aa)
    if n > 0:
        if t == cnp.NPY_DOUBLE:
            with nogil:
                _scalar_run[double](op, <const double*>cnp.PyArray_DATA(aa), v, left,
                                    <double*>cnp.PyArray_DATA(res), n, grain)
        else:
            with nogil:
                _scalar_run[float](op, <const float*>cnp.PyArray_DATA(aa), <float>v,
                                   left, <float*>cnp.PyArray_DATA(res), n, grain)
    return res
