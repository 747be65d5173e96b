"""Element-wise kernels: unary math and binary arithmetic with broadcasting.

Entry points take 1-D C-contiguous views (the Python layer flattens, promotes
and allocates) and a grain size; the loop bodies are ``noexcept nogil`` and
call the branch-free math of ``_fw_math.h``, so that gcc vectorises them.
"""

from cython cimport floating
from cython.parallel cimport prange

from forkwait._native._fw_common cimport chunk_size
from forkwait._native._openmp cimport omp_get_num_threads
from forkwait._native._fw_math cimport (
    fabs, fabsf, fw_exp, fw_expf, fw_gelu, fw_geluf, fw_sigmoid, fw_sigmoidf,
    fw_tanh, fw_tanhf, log, logf, sqrt, sqrtf,
)
from forkwait._native._runtime cimport team_begin, team_end

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
        for i in range(n):
            if floating is float:
                y[i] = sqrtf(x[i])
            else:
                y[i] = sqrt(x[i])
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


# ------------------------------------------------------------ entry points

def unary(int op, const floating[::1] x, floating[::1] out, Py_ssize_t grain):
    """out[i] = op(x[i]) for the ``UNARY`` code ``op``; len(x) == len(out) > 0."""
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t chunk, start, stop
    cdef const floating* px = &x[0]
    cdef floating* py = &out[0]
    cdef int team, t
    with nogil:
        team = team_begin(n, grain)
        if team == 1:
            _unary_loop(op, px, py, n)
        else:
            chunk = chunk_size(n, team)
            for t in prange(team, schedule="static", num_threads=team):
                start = t * chunk
                stop = start + chunk if start + chunk < n else n
                if start < stop:
                    _unary_loop(op, px + start, py + start, stop - start)
        team_end(team)


def binary(int op, const floating[::1] a, const floating[::1] b,
           floating[::1] out, Py_ssize_t grain):
    """out = a op b for the ``BINARY`` code ``op``.

    len(out) == n > 0; each of a, b has n elements, 1 element (a scalar), or
    d elements with n % d == 0 (a row repeated n // d times).
    """
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t la = a.shape[0], lb = b.shape[0]
    cdef Py_ssize_t chunk, start, stop
    cdef const floating* pa = &a[0]
    cdef const floating* pb = &b[0]
    cdef floating* py = &out[0]
    cdef int team, t
    with nogil:
        team = team_begin(n, grain)
        if team == 1:
            _binary_range(op, pa, la, pb, lb, py, 0, n)
        else:
            chunk = chunk_size(n, team)
            for t in prange(team, schedule="static", num_threads=team):
                start = t * chunk
                stop = start + chunk if start + chunk < n else n
                if start < stop:
                    _binary_range(op, pa, la, pb, lb, py, start, stop)
        team_end(team)


def binary_scalar(int op, const floating[::1] a, double s, bint left,
                  floating[::1] out, Py_ssize_t grain):
    """out = a op s, or s op a when ``left``; s is cast to a's type first."""
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t chunk, start, stop
    cdef floating v = <floating>s
    cdef const floating* pa = &a[0]
    cdef floating* py = &out[0]
    cdef int team, t
    with nogil:
        team = team_begin(n, grain)
        if team == 1:
            _scalar_loop(op, pa, v, py, n, left)
        else:
            chunk = chunk_size(n, team)
            for t in prange(team, schedule="static", num_threads=team):
                start = t * chunk
                stop = start + chunk if start + chunk < n else n
                if start < stop:
                    _scalar_loop(op, pa + start, v, py + start, stop - start, left)
        team_end(team)
