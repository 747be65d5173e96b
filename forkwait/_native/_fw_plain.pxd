# The fast paths' test of a "plain" array and the pieces of a GIL-free call
# (_fw_gil_free.h), shared by _elementwise and _matmul (cimport only; the
# cimporting module calls cnp.import_array()).

cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF

cdef extern from "_fw_gil_free.h":
    ctypedef struct fw_gil_free_call:
        void (*run)(fw_gil_free_call *c) noexcept nogil
        int intra
    PyObject *fw_gil_free_capsule_new(size_t size,
                                    void (*run)(fw_gil_free_call *) noexcept nogil,
                                    fw_gil_free_call **call)


cdef inline int plain_float_type(object x) noexcept:
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


cdef inline object gil_free_out(tuple args, object kwargs, Py_ssize_t n_in):
    """The `out` of a forked ``op(x1..xn[, out])`` for a GIL-free call's
    prepare function: None when there is none, False when the call has any
    other shape (the prepare function declines it, and the ordinary task
    reports what is wrong; an ``out=False`` is declined the same way)."""
    cdef Py_ssize_t na = len(args)
    if kwargs is not None:
        if na != n_in or len(kwargs) != 1 or "out" not in kwargs:
            return False
        return kwargs["out"]
    if na == n_in + 1:
        return args[n_in]
    return None if na == n_in else False


cdef inline object gil_free_capsule(size_t size, void (*run)(fw_gil_free_call *) noexcept nogil,
                                  fw_gil_free_call **call):
    """A new capsule owning a zeroed call struct of `size` bytes (`run` set,
    `*call` pointing at it), or None when out of memory (the prepare
    function then declines the call: it becomes an ordinary task)."""
    cdef PyObject *cp = fw_gil_free_capsule_new(size, run, call)
    if cp == NULL:
        return None
    capsule = <object>cp
    Py_DECREF(capsule)  # (the cast took a reference of its own)
    return capsule
