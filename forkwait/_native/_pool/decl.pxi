# The C side of the pool as Cython sees it (the headers of _pool/ and
# _fw_fastcall.h). Included first by pool.pyx.

cdef extern from "Python.h":
    void PyObject_GC_Track(object op)
    void PyObject_GC_UnTrack(object op)
    int PyObject_GC_IsTracked(object op)
    int PyObject_IS_GC(object op)
    object PyContext_CopyCurrent()
    int PyContext_Enter(object ctx) except -1
    int PyContext_Exit(object ctx) except -1
    int Py_AddPendingCall(int (*func)(void *) noexcept, void *arg)
    int Py_GetRecursionLimit()

cdef extern from "_pool/state.h" nogil:
    enum:
        FW_FREE_THREADED
        FW_MAX_INTEROP
        FW_MAX_SPARES
        FW_PENDING
        FW_RUNNING
        FW_FINISHED
        FW_FAILED
        FW_CANCELLED
        FW_POOL_IDLE
        FW_POOL_RUNNING
        FW_POOL_DRAINING
        FW_POOL_CLOSED
        FW_W_DONE
        FW_W_RESCAN
        FW_W_POLL
        FW_W_TIMEOUT
        FW_W_CYCLE

    ctypedef struct fw_gil_free_call:
        void (*run)(fw_gil_free_call *c) noexcept nogil
        int intra
    const char *FW_GIL_FREE_CAPSULE

    ctypedef struct fw_queue:
        Py_ssize_t len
    ctypedef struct fw_thread:
        pass
    ctypedef struct fw_many:
        Py_ssize_t n
        int any
        fw_node *nodes[1]  # (a flexible array: n of them)
    fw_many *fw_many_new(Py_ssize_t n, int any)
    ctypedef struct fw_node:
        fw_node *parent
        fw_thread *runner
        int state
        int depth
        int waiters
        int help_waiters
        int cf_watched
        int cf_pub
        int cb_adders
        int is_task
        int live
        long long mark
        fw_gil_free_call *gil_free
        fw_many *many
        fw_node *next

    ctypedef struct pthread_mutex_t:
        pass

    ctypedef struct fw_pool:
        pthread_mutex_t sleep_lock
        pthread_mutex_t cb_lock
        fw_queue inject
        int n_slots
        int sleepers
        int searching
        int target_workers
        int live_workers
        int state
        int n_deep
        int n_spares
        long long n_running
        long long n_running_pool
        long long n_completed
        long long n_spawned_spares
        long long n_spare_failures
        long long n_steals
        long long n_helped
        int n_kernels
        int n_kernels_out
        long long n_gil_free
        char *slot_alive
        char *slot_used
        int (*team_held)() noexcept nogil
        void (*team_release)() noexcept nogil

    fw_pool fw_P

    int fw_sched_init()
    void fw_lock(pthread_mutex_t *m)
    void fw_unlock(pthread_mutex_t *m)
    double fw_now()
    fw_thread *fw_me_get()
    int fw_get_slot()
    void fw_set_slot(int s)
    PyObject *fw_get_cur()
    void fw_set_cur(PyObject *f)
    int fw_task_depth
    Py_ssize_t fw_node_offset
    PyObject *FW_FUT_OF(fw_node *n)
    long long fw_stats_running()
    long long fw_stats_completed()
    int fw_slot_acquire(int want)
    Py_ssize_t fw_deque_len(int i)
    Py_ssize_t fw_queued_hint()
    int fw_prof_on
    long long fw_cur_task
    double fw_wait_acc

cdef extern from "_pool/queue.h" nogil:
    int fw_push(fw_node *n)
    int fw_claim_node(fw_node *n, int to_state)
    fw_node *fw_find_work(int slot)
    fw_node *fw_find_gil_free_work(int slot)
    int fw_any_work()
    fw_node *fw_claim_subtree(const fw_node *root, long long mark)
    void fw_notify_helpers(const fw_node *parent)

cdef extern from "_pool/complete.h" nogil:
    enum:
        FW_CF_UNDECIDED
        FW_CF_SEEN
        FW_CF_TO_PUBLISH
        FW_CF_PUBLISHED
    void fw_defer_push(fw_node *n)
    fw_node *fw_defer_take_all()
    int fw_any_deferred()
    void fw_wake_waiters(fw_node *n)
    int fw_settle(fw_node *n, int final_state, int from_running)
    int fw_cas_state(fw_node *n, int frm, int to)

cdef extern from "_pool/sleep.h" nogil:
    void fw_notify_work()
    void fw_notify_pushed()
    void fw_notify_pushed_gil_free()
    void fw_tickle()
    void fw_wake_all_idle()
    int fw_idle(int worker_index, int spare)
    void fw_searching_done()

cdef extern from "_pool/wait.h" nogil:
    double FW_GIL_FREE_SPIN_S
    int fw_spin_until_done(fw_node *n, double seconds, double deadline)
    int fw_sleep_wait(fw_node *target, double deadline, double poll_s,
                      fw_node *help_node, unsigned long long epoch,
                      int check_cycle, fw_many *many, double *slept)
    unsigned long long fw_help_begin(fw_node *n)
    void fw_help_end(fw_node *n)
    fw_thread *fw_runner_of(fw_node *n)

cdef extern from "_pool/fork.h" nogil:
    void fw_atfork_prepare()
    void fw_atfork_parent()
    void fw_atfork_child()
    Py_ssize_t fw_child_reset(fw_node ***out)

cdef extern from "_pool/stack.h" nogil:
    int fw_stack_low(size_t margin)

cdef extern from "_pool/stack.h":
    int fw_recursion_low(int py_margin)

cdef extern from "_pool/object.h":
    void fw_future_install(object type)
    int fw_object_init() except -1
    object fw_new_of(object type)
    object fw_new_untracked(object type)
    PyObject *fw_call_caught(PyObject *fn, PyObject *args, PyObject *kwargs, PyObject **exc)
    PyObject *fw_call2_caught(PyObject *fn, PyObject *a0, PyObject *a1, int nargs,
                              PyObject **exc)
    int fw_draining
    PyObject *fw_drain_queue

cdef extern from "<stdlib.h>" nogil:
    void free(void *p)

cdef extern from "Python.h" nogil:
    void PyMem_RawFree(void *p)

cdef extern from "Python.h":
    PyObject *PyList_GET_ITEM(PyObject *lst, Py_ssize_t i)   # borrowed
    Py_ssize_t PyList_GET_SIZE(PyObject *lst)

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<string.h>" nogil:
    void *memset(void *s, int c, size_t n)

cdef extern from "<pthread.h>" nogil:
    int pthread_atfork(void (*prepare)() noexcept nogil, void (*parent)() noexcept nogil,
                       void (*child)() noexcept nogil)

cdef extern from "_fw_fastcall.h":
    ctypedef object (*fw_fork_impl_t)(object fn, PyObject **argv, Py_ssize_t nargs,
                                      object kwargs)
    object fw_make_fork(fw_fork_impl_t impl, object module_name, const char *doc)
    tuple fw_args_tuple(PyObject **argv, Py_ssize_t nargs)
    ctypedef object (*fw_wait_impl_t)(object fut, object timeout)
    object fw_make_wait(fw_wait_impl_t impl, object module_name, const char *doc)
