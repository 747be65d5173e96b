/* The inter-op pool's one mutex and one condition variable (monotonic clock).
 * Included by pool.pyx only. Rule: nobody holding fw_pool_mutex ever waits for
 * the GIL or touches a Python object, so a GIL holder may lock it freely. */
#ifndef FORKWAIT_SYNC_H
#define FORKWAIT_SYNC_H

#include <pthread.h>
#include <time.h>
#include <errno.h>

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

/* Profiling (forkwait.profile): on/off, and per thread the task that runs
 * now (0: none) and the seconds it has spent blocked in wait(). */
static int fw_prof_on = 0;
static __thread long long fw_cur_task = 0;
static __thread double fw_wait_acc = 0.0;

#endif
