/* fork() as a vectorcall builtin: Cython's `def fork(fn, /, *args, **kwargs)`
 * makes a dict for **kwargs on every call (PyDict_New + dealloc, about 5% of
 * a no-op fork+wait round trip). This entry point makes one only when the
 * call has keywords, then calls the Cython body (fw_fork_impl). */
#ifndef FW_FASTCALL_H
#define FW_FASTCALL_H
#include <Python.h>

/* The body gets the call's positional arguments after fn as an array (it
 * keeps up to two of a call without keywords in the Future itself, and
 * makes a tuple only for the others: fw_args_tuple). */
typedef PyObject *(*fw_fork_impl_t)(PyObject *fn, PyObject **argv, Py_ssize_t nargs,
                                    PyObject *kwargs);
static fw_fork_impl_t fw_fork_impl = NULL;

static PyObject *fw_args_tuple(PyObject **argv, Py_ssize_t nargs) {
    Py_ssize_t i;
    PyObject *args = PyTuple_New(nargs);
    if (args == NULL) return NULL;
    for (i = 0; i < nargs; i++) {
        Py_INCREF(argv[i]);
        PyTuple_SET_ITEM(args, i, argv[i]);
    }
    return args;
}

static PyObject *fw_fork_vectorcall(PyObject *self, PyObject *const *argv, Py_ssize_t nargsf,
                                    PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), i, nk;
    PyObject *kwargs = NULL, *r;
    (void)self;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "fork() missing its first argument: the callable to run (fork(fn, /, "
                        "*args, **kwargs))");
        return NULL;
    }
    nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nk > 0) {
        kwargs = PyDict_New();
        if (kwargs == NULL) return NULL;
        for (i = 0; i < nk; i++) {
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), argv[nargs + i]) < 0) {
                Py_DECREF(kwargs);
                return NULL;
            }
        }
    }
    r = fw_fork_impl(argv[0], (PyObject **)argv + 1, nargs - 1, kwargs ? kwargs : Py_None);
    Py_XDECREF(kwargs);
    return r;
}

static PyMethodDef fw_fork_def = {
    "fork", (PyCFunction)(void (*)(void))fw_fork_vectorcall, METH_FASTCALL | METH_KEYWORDS, NULL};

/* A builtin of `def`, with `doc` (kept alive by the caller) as its __doc__
 * (it starts with the text signature, for inspect.signature). */
static PyObject *fw_builtin(PyMethodDef *def, PyObject *module_name, const char *doc) {
    def->ml_doc = doc;
    return PyCFunction_NewEx(def, NULL, module_name);
}

static PyObject *fw_make_fork(fw_fork_impl_t impl, PyObject *module_name, const char *doc) {
    fw_fork_impl = impl;
    return fw_builtin(&fw_fork_def, module_name, doc);
}
/* wait() the same way: Cython's `def wait(fut, timeout=None)` parses its
 * arguments through a generic keyword parser on every call; the common
 * call, wait(fut), goes straight to the body here. */
typedef PyObject *(*fw_wait_impl_t)(PyObject *fut, PyObject *timeout);
static fw_wait_impl_t fw_wait_impl = NULL;

static PyObject *fw_wait_vectorcall(PyObject *self, PyObject *const *argv, Py_ssize_t nargsf,
                                    PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), i, nk;
    PyObject *fut = NULL, *timeout = NULL, *k, **slot;
    (void)self;
    if (kwnames == NULL && nargs == 1) return fw_wait_impl(argv[0], Py_None);
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "wait() takes from 1 to 2 positional arguments but %zd were given", nargs);
        return NULL;
    }
    if (nargs >= 1) fut = argv[0];
    if (nargs == 2) timeout = argv[1];
    nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (i = 0; i < nk; i++) {
        k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, "fut") == 0) slot = &fut;
        else if (PyUnicode_CompareWithASCIIString(k, "timeout") == 0) slot = &timeout;
        else {
            PyErr_Format(PyExc_TypeError, "wait() got an unexpected keyword argument '%U'", k);
            return NULL;
        }
        if (*slot != NULL) {
            PyErr_Format(PyExc_TypeError, "wait() got multiple values for argument '%U'", k);
            return NULL;
        }
        *slot = argv[nargs + i];
    }
    if (fut == NULL) {
        PyErr_SetString(PyExc_TypeError, "wait() missing required argument 'fut' (pos 1)");
        return NULL;
    }
    return fw_wait_impl(fut, timeout ? timeout : Py_None);
}

static PyMethodDef fw_wait_def = {
    "wait", (PyCFunction)(void (*)(void))fw_wait_vectorcall, METH_FASTCALL | METH_KEYWORDS, NULL};

static PyObject *fw_make_wait(fw_wait_impl_t impl, PyObject *module_name, const char *doc) {
    fw_wait_impl = impl;
    return fw_builtin(&fw_wait_def, module_name, doc);
}
#endif
