"""Row ops along the last axis: softmax, log_softmax, layer_norm.

A row is the unit of work: whole rows are dealt out to the team in chunks
(``run_chunked``, the element-wise kernels' rule), and each row is done in
one go by the CPU variant of the hot loops that ``_dispatch`` chose
(``_fw_kernels.c``): softmax in three passes over the row (max; exp and
sum; scale), which stays in cache for rows of up to a few 10^5 elements;
layer_norm in three (mean; variance; normalise).
"""

from cython cimport floating

from forkwait._native._dispatch cimport FW_LOG_SOFTMAX, FW_SOFTMAX, kernels
from forkwait._native._fw_common cimport run_chunked

#: Row op codes, by name.
ROWS = {"softmax": FW_SOFTMAX, "log_softmax": FW_LOG_SOFTMAX}


cdef struct _Job:
    int op              # ROWS code, or -1: layer_norm
    bint dbl
    const void* x
    void* y
    Py_ssize_t d
    const void* w
    const void* b
    double eps


cdef void _rows_body(void* p, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef _Job* j = <_Job*>p
    if j.op >= 0:
        if j.dbl:
            kernels().softmax_d(j.op, <const double*>j.x, <double*>j.y, r0, r1, j.d)
        else:
            kernels().softmax_f(j.op, <const float*>j.x, <float*>j.y, r0, r1, j.d)
    elif j.dbl:
        kernels().layer_norm_d(<const double*>j.x, <double*>j.y, r0, r1, j.d,
                               <const double*>j.w, <const double*>j.b, j.eps)
    else:
        kernels().layer_norm_f(<const float*>j.x, <float*>j.y, r0, r1, j.d,
                               <const float*>j.w, <const float*>j.b, j.eps)


cdef void _run(int op, bint dbl, const void* x, void* y, Py_ssize_t rows, Py_ssize_t d,
               const void* w, const void* b, double eps, Py_ssize_t grain) noexcept nogil:
    cdef _Job j
    j.op = op
    j.dbl = dbl
    j.x = x
    j.y = y
    j.d = d
    j.w = w
    j.b = b
    j.eps = eps
    run_chunked(_rows_body, &j, rows, d, grain)


def softmax_rows(int op, const floating[::1] x, floating[::1] out,
                 Py_ssize_t rows, Py_ssize_t d, Py_ssize_t grain):
    """softmax (op 0) or log_softmax (op 1) of each row of x viewed as (rows, d)."""
    with nogil:
        _run(op, floating is double, &x[0], &out[0], rows, d, NULL, NULL, 0, grain)


def layer_norm_rows(const floating[::1] x, floating[::1] out, Py_ssize_t rows,
                    Py_ssize_t d, const floating[::1] weight,
                    const floating[::1] bias, double eps, Py_ssize_t grain):
    """layer_norm of each row; ``weight``/``bias`` of length d, or None."""
    cdef const floating* pw = NULL
    cdef const floating* pb = NULL
    if weight is not None:
        pw = &weight[0]
    if bias is not None:
        pb = &bias[0]
    with nogil:
        _run(-1, floating is double, &x[0], &out[0], rows, d, pw, pb, eps, grain)
