"""Element-wise kernels: unary math and binary arithmetic with broadcasting.

Entry points take 1-D C-contiguous views (the Python layer flattens, promotes
and allocates) and a grain size. The unary loops are the CPU variant that
``_dispatch`` chose (``_fw_kernels.c``: the branch-free math of ``_fw_math.h``,
written on the variant's own vectors); the binary loops are memory-bound and
live here. Every kernel runs through ``run_chunked`` (``_fw_common.pxd``).

``fast_unary`` and ``fast_binary`` are the small-array fast path: they take
the arguments as they came, check the common case in C (exact float32/float64
ndarrays, C-contiguous, aligned, native byte order, equal shapes or a Python
scalar, a suitable ``out``), allocate with the NumPy C API and run the same
loops; anything else returns None and the Python layer's general path runs.
"""

cimport cython
cimport numpy as cnp
from forkwait._native._fw_plain cimport (
    fw_gil_free_call, gil_free_capsule, gil_free_out, plain_float_type,
)
from cpython.float cimport PyFloat_AS_DOUBLE
from cython cimport floating

from forkwait._native._dispatch cimport (
    FW_ABS, FW_EXP, FW_GELU, FW_LOG, FW_NEG, FW_RELU, FW_SIGMOID, FW_SQRT, FW_TANH,
    kernels,
)
from forkwait._native._fw_common cimport run_chunked
from forkwait._native._openmp cimport omp_get_num_threads

cnp.import_array()

cdef enum:
    PROBE = 99      # test probe: y[i] = omp_get_num_threads() of its thread

cdef enum:
    ADD = 0
    SUB = 1
    MUL = 2
    DIV = 3
    MAXIMUM = 4
    MINIMUM = 5

#: Unary op codes, by name (the Python layer passes the code).
UNARY = {"neg": FW_NEG, "abs": FW_ABS, "exp": FW_EXP, "log": FW_LOG, "sqrt": FW_SQRT,
         "tanh": FW_TANH, "sigmoid": FW_SIGMOID, "relu": FW_RELU, "gelu": FW_GELU}
#: The probe op: runs the unary kernel's exact parallel path and writes the
#: team size that OpenMP reports inside the prange into every element.
PROBE_OP = PROBE
#: Binary op codes, by name.
BINARY = {"add": ADD, "sub": SUB, "mul": MUL, "div": DIV,
          "maximum": MAXIMUM, "minimum": MINIMUM}


# ------------------------------------------------------------ loop bodies
# The unary loops are the dispatched ones (_fw_kernels.c, one copy per CPU
# variant); the binary ones are memory-bound and stay here.

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

cdef struct _Job:
    int op
    bint dbl            # double (else float) elements
    const void* a
    Py_ssize_t la
    const void* b
    Py_ssize_t lb
    void* y
    double s            # binary_scalar: the scalar
    bint left           # s op a (else a op s)


cdef void _unary_body(void* p, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef _Job* j = <_Job*>p
    cdef Py_ssize_t i
    cdef int team
    if j.op == PROBE:
        team = omp_get_num_threads()
        for i in range(start, stop):
            if j.dbl:
                (<double*>j.y)[i] = team
            else:
                (<float*>j.y)[i] = team
    elif j.dbl:
        kernels().unary_d(j.op, <const double*>j.a + start, <double*>j.y + start,
                          stop - start)
    else:
        kernels().unary_f(j.op, <const float*>j.a + start, <float*>j.y + start,
                          stop - start)


cdef void _binary_body(void* p, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef _Job* j = <_Job*>p
    if j.dbl:
        _binary_range(j.op, <const double*>j.a, j.la, <const double*>j.b, j.lb,
                      <double*>j.y, start, stop)
    else:
        _binary_range(j.op, <const float*>j.a, j.la, <const float*>j.b, j.lb,
                      <float*>j.y, start, stop)


cdef void _scalar_body(void* p, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef _Job* j = <_Job*>p
    if j.dbl:
        _scalar_loop(j.op, <const double*>j.a + start, j.s, <double*>j.y + start,
                     stop - start, j.left)
    else:
        _scalar_loop(j.op, <const float*>j.a + start, <float>j.s, <float*>j.y + start,
                     stop - start, j.left)


cdef void _unary_run(int op, const floating* px, floating* py, Py_ssize_t n,
                     Py_ssize_t grain) noexcept nogil:
    cdef _Job j
    j.op = op
    j.dbl = floating is double
    j.a = px
    j.y = py
    run_chunked(_unary_body, &j, n, 1, grain)


cdef void _binary_run(int op, const floating* pa, Py_ssize_t la,
                      const floating* pb, Py_ssize_t lb, floating* py,
                      Py_ssize_t n, Py_ssize_t grain) noexcept nogil:
    cdef _Job j
    j.op = op
    j.dbl = floating is double
    j.a = pa
    j.la = la
    j.b = pb
    j.lb = lb
    j.y = py
    run_chunked(_binary_body, &j, n, 1, grain)


cdef void _scalar_run(int op, const floating* pa, floating v, bint left,
                      floating* py, Py_ssize_t n, Py_ssize_t grain) noexcept nogil:
    cdef _Job j
    j.op = op
    j.dbl = floating is double
    j.a = pa
    j.s = v
    j.left = left
    j.y = py
    run_chunked(_scalar_body, &j, n, 1, grain)


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

# Off while forkwait.profile() records (ops._profiling._set_profiler): the calls then go
# through the Python layer's kernel tables, which hold the recording wrappers.
cdef bint _fast_on = True


def _set_fast(bint on):
    """Enable (True) or disable the fast path (the profiler turns it off)."""
    global _fast_on
    _fast_on = on


cdef inline int _plain_type(object x) noexcept:
    return plain_float_type(x)  # _fw_plain.pxd, shared with _matmul


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


cdef object _unary_case(object x, object out, int *type_num):
    """fast_unary's case: the result array (new, or ``out``) with
    ``type_num`` filled in, or None for the general path."""
    cdef int t
    cdef object r
    if not _fast_on:
        return None
    t = _plain_type(x)
    if t < 0:
        return None
    r = _result(<cnp.ndarray>x, t, out)
    if r is None:
        return None
    if out is not None and not _apart(<cnp.ndarray>x, <cnp.ndarray>r):
        return None
    type_num[0] = t
    return r


def fast_unary(int op, object x, object out, Py_ssize_t grain):
    """``unary`` for a plain float32/float64 array (see the module doc).

    Returns the result (a new array, or ``out``), or None where the general
    path must handle the call: then nothing has been written.
    """
    cdef int t
    cdef cnp.ndarray ax, res
    cdef Py_ssize_t n
    r = _unary_case(x, out, &t)
    if r is None:
        return None
    ax = <cnp.ndarray>x
    res = <cnp.ndarray>r
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


# ------------------------------------------ forked element-wise math without the GIL

ctypedef struct _unary_call:
    fw_gil_free_call base   # first: the pool sees a fw_gil_free_call *
    const void *px
    void *py
    Py_ssize_t n, grain
    int op, type_num


cdef void _unary_call_run(fw_gil_free_call *c) noexcept nogil:
    cdef _unary_call *u = <_unary_call *>c
    if u.n > 0:
        if u.type_num == cnp.NPY_DOUBLE:
            _unary_run[double](u.op, <const double*>u.px, <double*>u.py, u.n, u.grain)
        else:
            _unary_run[float](u.op, <const float*>u.px, <float*>u.py, u.n, u.grain)


@cython.final
cdef class GilFreeUnary:
    """The pool's prepare function for ``fork(ops.<op>, x[, out])`` (see
    ``_fw_gil_free.h``): fast_unary's case as a GIL-free call, ``(capsule,
    result)``, or None (then the fork is an ordinary task)."""
    cdef int op
    cdef Py_ssize_t grain

    def __init__(self, int op, Py_ssize_t grain):
        self.op = op
        self.grain = grain

    def __call__(self, tuple args, object kwargs):
        cdef int t
        cdef fw_gil_free_call *c = NULL
        cdef _unary_call *u
        out = gil_free_out(args, kwargs, 1)
        if out is False:
            return None
        x = args[0]
        res = _unary_case(x, out, &t)
        if res is None:
            return None
        capsule = gil_free_capsule(sizeof(_unary_call), _unary_call_run, &c)
        if capsule is None:
            return None
        u = <_unary_call *>c
        u.px = cnp.PyArray_DATA(<cnp.ndarray>x)
        u.py = cnp.PyArray_DATA(<cnp.ndarray>res)
        u.n = cnp.PyArray_SIZE(<cnp.ndarray>x)
        u.grain = self.grain
        u.op = self.op
        u.type_num = t
        return (capsule, res)
