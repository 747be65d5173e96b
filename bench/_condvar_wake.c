/* The floor for handing a task to a sleeping thread: a pthread condition
 * variable wake of a thread that has slept for `idle_ms`, measured from the
 * signal to the moment the woken thread runs. Built and loaded by
 * bench/sched_ratios.py (ctypes); prints nothing itself. */
#include <pthread.h>
#include <time.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int go = 0, quit = 0;
static double woke_at = 0.0;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *sleeper(void *arg) {
    (void)arg;
    pthread_mutex_lock(&m);
    for (;;) {
        while (!go && !quit) pthread_cond_wait(&c, &m);
        if (quit) break;
        woke_at = now();
        go = 0;
        pthread_cond_broadcast(&c);
    }
    pthread_mutex_unlock(&m);
    return NULL;
}

/* Fills lat[0..n) with wake latencies in seconds; returns 0 on success. */
int condvar_wake(int n, double idle_ms, double *lat) {
    pthread_t t;
    struct timespec idle = {0, (long)(idle_ms * 1e6)};
    int i;
    quit = 0;
    go = 0;
    if (pthread_create(&t, NULL, sleeper, NULL) != 0) return -1;
    for (i = 0; i < n; i++) {
        double t0;
        nanosleep(&idle, NULL);
        pthread_mutex_lock(&m);
        t0 = now();
        go = 1;
        pthread_cond_signal(&c);
        while (go) pthread_cond_wait(&c, &m);  /* until the sleeper ran */
        lat[i] = woke_at - t0;
        pthread_mutex_unlock(&m);
    }
    pthread_mutex_lock(&m);
    quit = 1;
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    pthread_join(t, NULL);
    return 0;
}
