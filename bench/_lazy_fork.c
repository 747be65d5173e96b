/* Floors for a fork/wait called from Python (bench/sched_ratios.py, fib).
 *
 * Three minimal fork/wait pairs, each one step closer to what a scheduler
 * must do, with nothing else:
 *   fork0/wait0  fork keeps the call (fn, args tuple) in a small object;
 *                wait calls it from C if it has not run. No queue, no thread
 *                could ever take it: the floor of any fork/wait API.
 *   fork1/wait1  as 0, and the call runs in a copy of the forking thread's
 *                contextvars context (PyContext_CopyCurrent, Enter, Exit).
 *   fork2/wait2  as 1, and the task is pushed on a mutex-protected stack at
 *                fork, and wait unlinks it under the mutex before it runs it
 *                (the least a queue that another thread could steal from
 *                costs), with the stack's reference counted.
 * Built by the benchmark at run time (cc, Python's headers); not part of
 * forkwait. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>

typedef struct Lazy {
    PyObject_HEAD
    PyObject *fn, *args, *value, *ctx;
    struct Lazy *prev, *next; /* on the stack (fork2) */
    int done, queued;
} Lazy;

static pthread_mutex_t stack_lock = PTHREAD_MUTEX_INITIALIZER;
static Lazy *stack_top = NULL;

static void lazy_dealloc(Lazy *f) {
    Py_XDECREF(f->fn);
    Py_XDECREF(f->args);
    Py_XDECREF(f->value);
    Py_XDECREF(f->ctx);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyTypeObject LazyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_lazy_fork.Lazy",
    .tp_basicsize = sizeof(Lazy),
    .tp_dealloc = (destructor)lazy_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

static Lazy *make(PyObject *const *argv, Py_ssize_t nargsf, int with_ctx) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), i;
    Lazy *f;
    if (n < 1) {
        PyErr_SetString(PyExc_TypeError, "fork needs a callable");
        return NULL;
    }
    f = PyObject_New(Lazy, &LazyType);
    if (f == NULL) return NULL;
    f->args = PyTuple_New(n - 1);
    f->fn = f->value = f->ctx = NULL;
    f->prev = f->next = NULL;
    f->done = f->queued = 0;
    if (f->args == NULL) { Py_DECREF(f); return NULL; }
    for (i = 1; i < n; i++) {
        Py_INCREF(argv[i]);
        PyTuple_SET_ITEM(f->args, i - 1, argv[i]);
    }
    Py_INCREF(argv[0]);
    f->fn = argv[0];
    if (with_ctx && (f->ctx = PyContext_CopyCurrent()) == NULL) { Py_DECREF(f); return NULL; }
    return f;
}

static PyObject *run(Lazy *f) {
    PyObject *v;
    if (f->ctx != NULL && PyContext_Enter(f->ctx) < 0) return NULL;
    v = PyObject_Call(f->fn, f->args, NULL);
    if (f->ctx != NULL) PyContext_Exit(f->ctx);
    if (v == NULL) return NULL;
    f->value = v;
    f->done = 1;
    Py_CLEAR(f->fn);
    Py_CLEAR(f->args);
    Py_CLEAR(f->ctx);
    Py_INCREF(v);
    return v;
}

static int check(PyObject *o) {
    if (Py_TYPE(o) != &LazyType) {
        PyErr_SetString(PyExc_TypeError, "wait needs a Lazy");
        return -1;
    }
    return 0;
}

static PyObject *fork0(PyObject *m, PyObject *const *argv, Py_ssize_t nargsf) {
    (void)m;
    return (PyObject *)make(argv, nargsf, 0);
}

static PyObject *fork1(PyObject *m, PyObject *const *argv, Py_ssize_t nargsf) {
    (void)m;
    return (PyObject *)make(argv, nargsf, 1);
}

static PyObject *fork2(PyObject *m, PyObject *const *argv, Py_ssize_t nargsf) {
    Lazy *f = make(argv, nargsf, 1);
    (void)m;
    if (f == NULL) return NULL;
    Py_INCREF(f); /* the stack's reference */
    pthread_mutex_lock(&stack_lock);
    f->next = stack_top;
    if (stack_top != NULL) stack_top->prev = f;
    stack_top = f;
    f->queued = 1;
    pthread_mutex_unlock(&stack_lock);
    return (PyObject *)f;
}

static PyObject *wait_common(PyObject *o, int queued) {
    Lazy *f;
    int claimed = 0;
    if (check(o) < 0) return NULL;
    f = (Lazy *)o;
    if (queued) {
        pthread_mutex_lock(&stack_lock);
        if (f->queued) {
            if (f->prev != NULL) f->prev->next = f->next; else stack_top = f->next;
            if (f->next != NULL) f->next->prev = f->prev;
            f->prev = f->next = NULL;
            f->queued = 0;
            claimed = 1;
        }
        pthread_mutex_unlock(&stack_lock);
        if (claimed) Py_DECREF(f); /* the caller holds one */
    }
    if (f->done) {
        Py_INCREF(f->value);
        return f->value;
    }
    return run(f);
}

static PyObject *wait0(PyObject *m, PyObject *o) { (void)m; return wait_common(o, 0); }
static PyObject *wait2(PyObject *m, PyObject *o) { (void)m; return wait_common(o, 1); }

static PyMethodDef methods[] = {
    {"fork0", (PyCFunction)(void (*)(void))fork0, METH_FASTCALL, NULL},
    {"fork1", (PyCFunction)(void (*)(void))fork1, METH_FASTCALL, NULL},
    {"fork2", (PyCFunction)(void (*)(void))fork2, METH_FASTCALL, NULL},
    {"wait0", wait0, METH_O, NULL},
    {"wait1", wait0, METH_O, NULL},
    {"wait2", wait2, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lazy_fork", NULL, -1, methods};

PyMODINIT_FUNC PyInit__lazy_fork(void) {
    if (PyType_Ready(&LazyType) < 0) return NULL;
    return PyModule_Create(&module);
}
