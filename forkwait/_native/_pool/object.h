/* The Future as a Python object, in C: its memory (a free list, a dealloc of
 * its own), making one without the type's generic machinery, and calling a
 * task's function with the failure caught. The GIL guards all of it (on a
 * free-threaded build the free list is off, see fw_future_install).
 */
#ifndef FORKWAIT_POOL_OBJECT_H
#define FORKWAIT_POOL_OBJECT_H

#include <Python.h>
#include <string.h>

#include "../_fw_atomic.h"

/* ------------------------------------------------------------ memory */
/* A free list of Future objects' memory (CPython keeps such lists for
 * its own small objects: tuples, floats, frames). Future's tp_free puts
 * the memory of an exact Future here instead of freeing it, and its
 * tp_alloc takes it back: the GC header and pre-header stay as the
 * dealloc left them (untracked, no dict), so a reuse skips the
 * allocator, the GC's link and unlink and their counters (which stay
 * balanced: counted at the first allocation, uncounted at the last
 * free). The GIL guards it: objects are only made and freed with it.
 * Off when the type has a finalizer (a reused object would keep the
 * GC header's "finalized" mark). */
#define FW_FREE_MAX 256
static PyTypeObject *fw_fl_type = NULL;
static void *fw_fl[FW_FREE_MAX];
static int fw_fl_n = 0;

static int fw_fl_untracked = 0;  /* fork's allocation: leave it out of the GC */

static PyObject *fw_future_alloc(PyTypeObject *t, Py_ssize_t nitems) {
    PyObject *o;
    if (t != fw_fl_type || fw_fl_n == 0 || nitems != 0)
        return PyType_GenericAlloc(t, nitems);  /* tracked: fw_new_untracked sees to it */
    o = (PyObject *)fw_fl[--fw_fl_n];
    memset(o, 0, (size_t)t->tp_basicsize);
    PyObject_Init(o, t);   /* the type (a heap type: a reference) and refcount 1 */
    if (!fw_fl_untracked)
        PyObject_GC_Track(o);  /* as PyType_GenericAlloc leaves it */
    return o;
}

static void fw_future_free(void *o) {
    if (Py_TYPE((PyObject *)o) == fw_fl_type && fw_fl_n < FW_FREE_MAX) {
        fw_fl[fw_fl_n++] = o;
        return;
    }
    PyObject_GC_Del(o);
}

/* Future's dealloc. The class statement gives it CPython's generic
 * subtype_dealloc, which looks for finalizers, slots and weak references
 * that Future does not have, then calls FutureCore's; this does only
 * what Future needs: the trashcan (long chains of futures die without
 * deep recursion), the instance dict, FutureCore's dealloc, the type's
 * reference. A subclass keeps subtype_dealloc, which calls this one as
 * its base's (then only FutureCore's part and the reference are left). */
static destructor fw_core_dealloc = NULL;

static void fw_future_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject **dp;
    if (type != fw_fl_type) {
        fw_core_dealloc(self);
        Py_DECREF(type);   /* subtype_dealloc leaves it to a heap base */
        return;
    }
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, fw_future_dealloc)
    dp = _PyObject_GetDictPtr(self);
    if (dp != NULL && *dp != NULL) Py_CLEAR(*dp);
    fw_core_dealloc(self);
    Py_DECREF(type);
    Py_TRASHCAN_END
}

static void fw_future_install(PyObject *type) {
    PyTypeObject *t = (PyTypeObject *)type;
#ifdef Py_GIL_DISABLED
    return;  /* the list and the flag below lean on the GIL */
#endif
    if (t->tp_finalize != NULL || t->tp_del != NULL || t->tp_free != PyObject_GC_Del ||
        t->tp_alloc != PyType_GenericAlloc || t->tp_itemsize != 0 ||
        !(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_base == NULL)
        return;
    fw_fl_type = t;
    t->tp_alloc = fw_future_alloc;
    t->tp_free = fw_future_free;
#if PY_VERSION_HEX < 0x030E0000
    /* only where the dict pointer call is known (3.11-3.13), and only
     * over the dealloc this was written against: weak references and
     * everything else in FutureCore's own */
    if (t->tp_base->tp_weaklistoffset != 0 && t->tp_weaklistoffset == t->tp_base->tp_weaklistoffset
            && t->tp_base->tp_dealloc != NULL && !(t->tp_base->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        fw_core_dealloc = t->tp_base->tp_dealloc;
        t->tp_dealloc = fw_future_dealloc;
    }
#endif
}

/* ------------------------------------------------------------ making one */
static PyObject *fw_empty_tuple = NULL;
/* At import, before any thread can make a Future. */
static int fw_object_init(void) {
    fw_empty_tuple = PyTuple_New(0);
    return fw_empty_tuple == NULL ? -1 : 0;
}

static inline PyObject *fw_new_of(PyObject *type) {
    return ((PyTypeObject *)type)->tp_new((PyTypeObject *)type, fw_empty_tuple, NULL);
}
/* fw_new_of(Future), the object not tracked by the GC (fork's): memory
 * from the free list is never tracked; fresh memory (or no list) is
 * untracked after */
static inline PyObject *fw_new_untracked(PyObject *type) {
    PyObject *o;
#ifdef Py_GIL_DISABLED
    /* the GC's tracking bits are written without a lock of their own: on
     * the free-threaded build every Future stays under the GC */
    return fw_new_of(type);
#endif
    fw_fl_untracked = 1;
    o = fw_new_of(type);
    fw_fl_untracked = 0;
    if (o != NULL && PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
    return o;
}

/* ------------------------------------------------------------ calling a task */
/* fn(*args, **kwargs) (kwargs None: none). On failure: NULL, the error
 * indicator cleared and the exception, normalized and with its
 * traceback, in *exc (a new reference). No Cython try block around the
 * call: that would save and restore the thread's handled-exception
 * state on every task. */
static PyObject *fw_caught(PyObject **exc);

static PyObject *fw_call_caught(PyObject *fn, PyObject *args, PyObject *kwargs,
                                PyObject **exc) {
    PyObject *r = PyObject_Call(fn, args, kwargs == Py_None ? NULL : kwargs);
    return r != NULL ? r : fw_caught(exc);
}

/* The same for fn(a0, a1) with `nargs` (0-2) of them (the inline form). */
static PyObject *fw_call2_caught(PyObject *fn, PyObject *a0, PyObject *a1, int nargs,
                                 PyObject **exc) {
    PyObject *argv[2];
    PyObject *r;
    argv[0] = a0;
    argv[1] = a1;
    r = PyObject_Vectorcall(fn, argv, (size_t)nargs, NULL);
    return r != NULL ? r : fw_caught(exc);
}

static PyObject *fw_caught(PyObject **exc) {
    PyObject *v;
#if PY_VERSION_HEX >= 0x030C0000
    v = PyErr_GetRaisedException();   /* normalized, with its traceback */
#else
    {
        PyObject *t, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        if (v != NULL && tb != NULL) PyException_SetTraceback(v, tb);
        Py_XDECREF(tb);
        Py_XDECREF(t);
    }
#endif
    if (v == NULL) {   /* cannot happen after a failed call; be safe */
        v = PyObject_CallNoArgs(PyExc_SystemError);
        if (v == NULL) { PyErr_Clear(); v = Py_NewRef(Py_None); }
    }
    *exc = v;
    return NULL;
}

/* ------------------------------------------------------------ completion's loop */
/* Per thread: 1 while _run_callbacks runs here, and the completions that
 * callbacks caused meanwhile (a deque, made on the first one). */
static __thread int fw_draining = 0;
static __thread PyObject *fw_drain_queue = NULL;

#endif
