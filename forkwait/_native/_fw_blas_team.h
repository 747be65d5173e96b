/* OpenBLAS's threaded calls on forkwait's own OpenMP team, for the one copy
 * of OpenBLAS that forkwait loads itself (scipy-openblas64's; see
 * _blas_find.pxi). Compiled into _blas only: installed when _blas loads the
 * library, reset in an os.fork() child by blas_atfork_child.
 *
 * OpenBLAS 0.3.27+ lets a program run the jobs of a threaded call on threads
 * of its own: `openblas_set_threads_callback_function(cb)`, after which
 * exec_blas hands `cb` the jobs (all of which must run at the same time: the
 * level-3 jobs wait on each other's packed panels) instead of queueing them
 * for OpenBLAS's thread server. Run on the calling thread's OpenMP team, a
 * wide GEMM (the whole product at T threads, packed panels shared between
 * the threads) uses the same threads as forkwait's kernels before and after
 * it, so nothing spins beside it or after it (OpenBLAS's server threads spin
 * ~0.1 s after each call and took a core from the next kernel; measured in
 * docs/performance.md).
 *
 * Safe only in a copy that nothing else calls: the callback path runs job i
 * in OpenBLAS's per-thread slot i (its buffer and status word), the same
 * slots its server thread i uses, and LU (`getrf_parallel`) queues jobs for
 * the server threads directly, past the callback. So it is installed only in
 * a library file that forkwait dlopens itself (RTLD_LOCAL, not loaded
 * before), right after loading it and before any call, and only GEMMs go to
 * it. Calls that run at the same time (a threaded sgemm and dgemm of two
 * matmuls) take turns on one lock, so no two use slot i at once.
 *
 * Every job gets a thread of its own, always: where OpenMP gives fewer
 * threads than jobs (inside a parallel region, a thread limit) the jobs run
 * on threads started for them instead. */
#ifndef FW_BLAS_TEAM_H
#define FW_BLAS_TEAM_H

#include <pthread.h>

#include "_fw_atomic.h"
#include <stddef.h>
#include <stdlib.h>
#include <time.h>
#include "_openmp_helpers.h"

typedef void (*fw_ob_dojob_t)(int thread_num, void *jobdata, int dojob_data);

static pthread_mutex_t fw_ob_lock = PTHREAD_MUTEX_INITIALIZER;
/* May this thread start an OpenMP team? Set to _team's omp_team_ok, which
 * says no in the forking thread of an os.fork() child after that thread ran
 * one (GCC bug 60035: libgomp would hang) and notes that it did otherwise. */
static int (*fw_ob_team_ok)(void) = NULL;
/* 1: threads started for the jobs, never the team (the warm-up call made
 * when the library is loaded, so that loading it starts no OpenMP team in
 * the importing thread) */
static int fw_ob_force_threads = 0;
static long fw_ob_calls = 0;        /* threaded calls run here (tests) */
static long fw_ob_team_calls = 0;   /* ... of them on the OpenMP team */

typedef struct {
    fw_ob_dojob_t dojob;
    char *job;
    int thread_num;
    int dojob_data;
    int started;
    pthread_t tid;
} fw_ob_job_t;

static void *fw_ob_job_main(void *p) {
    fw_ob_job_t *j = (fw_ob_job_t *)p;
    j->dojob(j->thread_num, j->job, j->dojob_data);
    return NULL;
}

static void fw_ob_pause_ms(void) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
}

/* Jobs 1..n-1 on threads started for them, job 0 on the caller. A thread
 * (or the memory for the list) that cannot be had is tried again, 1 ms
 * apart, up to a second: the jobs wait for each other, so none may run
 * before all have a thread. Only when threads cannot be made for a whole
 * second does a job run on the caller after job 0 (OpenBLAS's level-3 jobs
 * would then wait for ever: there is no other way left). */
static void fw_ob_run_on_threads(fw_ob_dojob_t dojob, int numjobs, size_t elsize,
                                 char *jobs, int dojob_data) {
    fw_ob_job_t *job = NULL;
    int i, tries;
    for (tries = 0; tries < 1000 && job == NULL; tries++) {
        job = (fw_ob_job_t *)calloc((size_t)numjobs, sizeof *job);
        if (job == NULL) fw_ob_pause_ms();
    }
    if (job == NULL) {      /* no memory for a second: in turn, the last resort */
        for (i = 0; i < numjobs; i++) dojob(i, jobs + elsize * (size_t)i, dojob_data);
        return;
    }
    for (i = 1; i < numjobs; i++) {
        job[i].dojob = dojob;
        job[i].job = jobs + elsize * (size_t)i;
        job[i].thread_num = i;
        job[i].dojob_data = dojob_data;
        for (tries = 0; tries < 1000 && !job[i].started; tries++) {
            job[i].started = pthread_create(&job[i].tid, NULL, fw_ob_job_main, &job[i]) == 0;
            if (!job[i].started) fw_ob_pause_ms();
        }
    }
    dojob(0, jobs, dojob_data);
    for (i = 1; i < numjobs; i++) {
        if (job[i].started) pthread_join(job[i].tid, NULL);
        else dojob(i, jobs + elsize * (size_t)i, dojob_data);
    }
    free(job);
}

/* The callback (OpenBLAS's openblas_threads_callback type). */
static void fw_ob_run_jobs(int sync, fw_ob_dojob_t dojob, int numjobs, size_t elsize,
                           void *jobdata, int dojob_data) {
    char *jobs = (char *)jobdata;
    int got = 0;
    (void)sync; /* OpenBLAS calls it with sync = 1: return when every job is done */
    if (numjobs <= 0) return;
    pthread_mutex_lock(&fw_ob_lock);
    fw_ob_calls++;
    if (numjobs == 1) {
        dojob(0, jobs, dojob_data);
        pthread_mutex_unlock(&fw_ob_lock);
        return;
    }
#if FW_HAVE_OPENMP
    if (!fw_ob_force_threads && !omp_in_parallel() && (fw_ob_team_ok == NULL || fw_ob_team_ok())) {
        #pragma omp parallel num_threads(numjobs)
        {
            int t = omp_get_thread_num();
            /* all or none: a job started without its partners would wait
             * for them for ever */
            if (omp_get_num_threads() == numjobs)
                dojob(t, jobs + elsize * (size_t)t, dojob_data);
            if (t == 0) got = omp_get_num_threads();
        }
    }
#endif
    if (got == numjobs) fw_ob_team_calls++;
    else fw_ob_run_on_threads(dojob, numjobs, elsize, jobs, dojob_data);
    pthread_mutex_unlock(&fw_ob_lock);
}

/* After os.fork(): only the forking thread exists; no call runs. */
static void fw_ob_atfork_child(void) {
    pthread_mutex_init(&fw_ob_lock, NULL);
    fw_ob_force_threads = 0;
}

/* Tests: n jobs that each wait until all n have started (the level-3
 * pattern), through the callback; returns how many ran. `nested`: called
 * from inside an OpenMP parallel region, where the team cannot be had. */
static int fw_ob_test_arrived;
static int fw_ob_test_ran;
static void fw_ob_test_job(int thread_num, void *job, int n) {
    (void)thread_num;
    (void)job;
    FW_ADD(&fw_ob_test_arrived, 1);
    while (FW_LOAD(&fw_ob_test_arrived) < n) FW_PAUSE();
    FW_ADD(&fw_ob_test_ran, 1);
}

static int fw_ob_test(int n, int nested) {
    char jobs[128];
    if (n < 1 || n > 128) return -1;
    fw_ob_test_arrived = 0;
    fw_ob_test_ran = 0;
    if (nested) {
#if FW_HAVE_OPENMP
        #pragma omp parallel num_threads(2)
        {
            if (omp_get_thread_num() == 0) fw_ob_run_jobs(1, fw_ob_test_job, n, 1, jobs, n);
        }
#else
        fw_ob_run_jobs(1, fw_ob_test_job, n, 1, jobs, n);
#endif
    } else {
        fw_ob_run_jobs(1, fw_ob_test_job, n, 1, jobs, n);
    }
    return fw_ob_test_ran;
}

#endif
