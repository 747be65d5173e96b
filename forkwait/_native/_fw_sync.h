/* The inter-op pool's one mutex and one condition variable (monotonic clock).
 * Included by pool.pyx only. Rule: nobody holding fw_pool_mutex ever waits for
 * the GIL or touches a Python object, so a GIL holder may lock it freely. */
#ifndef FORKWAIT_SYNC_H
#define FORKWAIT_SYNC_H

#include <Python.h>
#include <pthread.h>
#include <time.h>
#include <errno.h>
#include <stddef.h>

static pthread_mutex_t fw_pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fw_pool_cond;
static int fw_pool_cond_ready = 0;

static void fw_sync_init(void) {
    pthread_condattr_t attr;
    pthread_mutex_init(&fw_pool_mutex, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&fw_pool_cond, &attr);
    pthread_condattr_destroy(&attr);
    fw_pool_cond_ready = 1;
}

static inline void fw_lock(void) { pthread_mutex_lock(&fw_pool_mutex); }
static inline void fw_unlock(void) { pthread_mutex_unlock(&fw_pool_mutex); }
static inline void fw_signal(void) { pthread_cond_signal(&fw_pool_cond); }
static inline void fw_broadcast(void) { pthread_cond_broadcast(&fw_pool_cond); }
static inline void fw_cond_wait(void) { pthread_cond_wait(&fw_pool_cond, &fw_pool_mutex); }

static inline double fw_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait until signalled or until the monotonic time `deadline` (seconds).
 * Returns 1 on timeout. */
static inline int fw_cond_wait_until(double deadline) {
    struct timespec ts;
    ts.tv_sec = (time_t)deadline;
    ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    return pthread_cond_timedwait(&fw_pool_cond, &fw_pool_mutex, &ts) == ETIMEDOUT;
}

/* The calling thread's id as PyThread_get_thread_ident() gives it (pthread_self
 * on POSIX), callable without the GIL. In a child of fork() the forking thread
 * keeps its id. */
static inline unsigned long fw_thread_id(void) { return (unsigned long)pthread_self(); }

/* Tasks this thread is running now, nested (a worker's task, and the ones a
 * wait ran inline inside it). */
static __thread int fw_task_depth = 0;

/* Python frames this thread may still push before RecursionError. Needs the
 * GIL (it reads the thread state). */
static inline int fw_py_frames_left(void) {
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030C0000
    return ts->py_recursion_remaining;
#elif PY_VERSION_HEX >= 0x030B0000
    return ts->recursion_remaining;
#else
    return Py_GetRecursionLimit() - ts->recursion_depth;
#endif
}

/* Bytes of C stack left below the caller's frame, and the thread's stack size
 * (both (size_t)-1 where the platform does not tell). */
static __thread char *fw_stack_lo = NULL;
static __thread size_t fw_stack_size = 0;

static inline void fw_stack_probe(void) {
    fw_stack_lo = (char *)1;
    fw_stack_size = (size_t)-1;
#if defined(__linux__) && defined(_GNU_SOURCE)
    {
        pthread_attr_t a;
        void *addr = NULL;
        size_t size = 0;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            if (pthread_attr_getstack(&a, &addr, &size) == 0 && addr != NULL) {
                fw_stack_lo = (char *)addr;
                fw_stack_size = size;
            }
            pthread_attr_destroy(&a);
        }
    }
#endif
}

static inline size_t fw_stack_left(void) {
    char here = 0;
    char *volatile p = &here;
    if (fw_stack_lo == NULL) fw_stack_probe();
    if (fw_stack_lo == (char *)1 || p < fw_stack_lo) return (size_t)-1;
    return (size_t)(p - fw_stack_lo);
}

static inline size_t fw_stack_total(void) {
    if (fw_stack_lo == NULL) fw_stack_probe();
    return fw_stack_size;
}

/* Profiling (forkwait.profile): on/off, and per thread the task that runs
 * now (0: none) and the seconds it has spent blocked in wait(). */
static int fw_prof_on = 0;
static __thread long long fw_cur_task = 0;
static __thread double fw_wait_acc = 0.0;

#endif
