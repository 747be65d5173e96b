/* A forked kernel call that runs without the GIL ("GIL-free task").
 *
 * An op that registers with the pool (pool._register_gil_free) gives fork() a
 * prepare function: called at fork, with the GIL, on the call's arguments, it
 * checks them, allocates the result and returns (capsule, result), or None
 * to leave the call to the ordinary path (which then reports any error
 * through the future, as for any task). The capsule holds a struct that
 * starts with fw_gil_free_call; `run` computes the result in place and cannot
 * fail. Whoever claims the task runs `run` without the GIL: a pool worker
 * then completes the future without taking the GIL at all unless a callback
 * or a concurrent.futures waiter needs it (see _run_gil_free_nogil in pool.pyx).
 */
#ifndef FW_GIL_FREE_H
#define FW_GIL_FREE_H

typedef struct fw_gil_free_call {
    void (*run)(struct fw_gil_free_call *self);  /* without the GIL; cannot fail */
    int intra;                                 /* the forking thread's intra-op setting
                                                  (filled in by fork) */
} fw_gil_free_call;

#define FW_GIL_FREE_CAPSULE "forkwait.gil_free_call"

static void fw_gil_free_capsule_free(PyObject *capsule) {
    PyMem_RawFree(PyCapsule_GetPointer(capsule, FW_GIL_FREE_CAPSULE));
}

/* A zeroed call struct of `size` bytes (starting with fw_gil_free_call, `run`
 * set) in a new capsule that frees it; NULL (and no exception) when out of
 * memory: the op then leaves the fork to the ordinary path. */
static PyObject *fw_gil_free_capsule_new(size_t size, void (*run)(fw_gil_free_call *),
                                       fw_gil_free_call **call) {
    PyObject *capsule;
    fw_gil_free_call *c = (fw_gil_free_call *)PyMem_RawCalloc(1, size);
    if (c == NULL) return NULL;
    c->run = run;
    capsule = PyCapsule_New(c, FW_GIL_FREE_CAPSULE, fw_gil_free_capsule_free);
    if (capsule == NULL) {
        PyErr_Clear();
        PyMem_RawFree(c);
        return NULL;
    }
    *call = c;
    return capsule;
}

#endif
