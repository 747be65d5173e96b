/* Idle pool threads: how they look for work, sleep and are woken (Rayon's
 * rule: a fork into a busy pool costs no system call; a sleeper is woken only
 * when none is awake and none is already being woken).
 */
#ifndef FORKWAIT_POOL_SLEEP_H
#define FORKWAIT_POOL_SLEEP_H

#include "state.h"
#include "queue.h"
#include "complete.h"

/* ------------------------------------------------------------ sleep and wake */
/* New work was queued: wake an idle pool thread unless one is awake already
 * or a wake-up is on its way (Rayon's rule: a fork into a busy pool costs no
 * system call). Only the sleeping thread itself changes `sleepers` and
 * `searching`; a waker hands out a wake token. */
static inline void fw_notify_pushed(void);
static inline void fw_notify_work(void) {
    FW_FENCE();
    fw_notify_pushed();
}

/* fw_notify_work after a push: the push's sequentially consistent add to
 * the queue's `len` orders it before the loads of `sleepers` below, as the
 * fence does (an idle thread adds itself to `sleepers`, then reads `len`). */
/* Sleep lock held: hand a sleeper a wake token, unless a thread is awake
 * looking for work or a wake-up is on its way already. */
static inline void fw_wake_one_locked(void) {
    if (fw_P.sleepers > fw_P.wake_tokens && FW_LOAD(&fw_P.searching) == 0 &&
        fw_P.wake_tokens == 0) {
        FW_ADD(&fw_P.wake_tokens, 1);
        pthread_cond_signal(&fw_P.work_cond);
    }
}

static inline void fw_notify_pushed(void) {
    /* fw_any_work: a spinning thread may have taken the task already (then
     * it is awake and hands on a wake-up itself if more is queued): waking a
     * sleeper for nothing costs this thread a system call and, where the
     * kernel puts the wakee on this CPU, a preemption. */
    if (FW_LOAD(&fw_P.sleepers) > FW_LOAD(&fw_P.wake_tokens) &&
        FW_LOAD(&fw_P.searching) == 0 && FW_LOAD(&fw_P.wake_tokens) == 0 && fw_any_work()) {
        pthread_mutex_lock(&fw_P.sleep_lock);
        fw_wake_one_locked();
        pthread_mutex_unlock(&fw_P.sleep_lock);
    }
}

/* fw_notify_pushed for a GIL-free task: no sleeper is woken while GIL-free
 * kernels that pool threads run fill every CPU but the calling thread's (a
 * woken sleeper could only take a CPU from one of them). Each of those
 * threads looks for work when its kernel ends, and a thread that blocks in a
 * wait wakes a sleeper for queued work first (fw_wake_for_queued), so the
 * task waits at most for the end of a kernel while the CPUs are busy.
 * Measured (Zen 4, 2 CPUs): the futile wake at the second of two forked 128
 * x 128 matmuls cost the forking thread 9-12 us of a 58-67 us pair. Kernels
 * that threads outside the pool run inline do not count: such a thread may
 * go back to Python without looking for work. Python tasks still wake a
 * sleeper as before: a thread that forks one may block outside forkwait. */
static inline void fw_notify_pushed_gil_free(void) {
    int k = FW_LOAD(&fw_P.n_kernels) - FW_LOAD(&fw_P.n_kernels_out);
    if (k >= 1 && k >= fw_P.n_cpus - 1) return;
    fw_notify_pushed();
}

/* A thread about to block in a wait, sleep lock held: queued work that no
 * thread looks for gets a sleeper woken, to use the CPU this thread leaves
 * (a fork of a GIL-free task may have woken nobody while kernels filled the
 * CPUs: fw_notify_pushed_gil_free). */
static inline void fw_wake_for_queued(void) {
    if (fw_P.sleepers > fw_P.wake_tokens && fw_any_work()) fw_wake_one_locked();
}

/* A pool thread found work while more is queued: hand on a wake-up. */
static inline void fw_tickle(void) {
    if (FW_LOAD(&fw_P.sleepers) > 0 && FW_LOAD(&fw_P.searching) == 0 && fw_any_work())
        fw_notify_work();
}

static inline void fw_wake_all_idle(void) {
    pthread_mutex_lock(&fw_P.sleep_lock);
    pthread_cond_broadcast(&fw_P.work_cond);
    pthread_mutex_unlock(&fw_P.sleep_lock);
}

/* Why an idle pool thread must stop: 1 stop, 0 go on. */
static inline int fw_must_stop(int worker_index, int spare) {
    int st = FW_LOAD(&fw_P.state);
    if (st == FW_POOL_CLOSED) return 1;
    if (spare) {
        if (FW_LOAD(&fw_P.n_spares) > FW_LOAD(&fw_P.n_deep)) return 1;
    } else if (worker_index >= FW_LOAD(&fw_P.target_workers)) {
        return 1;
    }
    if (st == FW_POOL_DRAINING && !fw_any_work() && FW_LOAD(&fw_P.n_running_pool) == 0) return 1;
    return 0;
}

static inline int fw_any_deferred(void);

#define FW_SPIN_S 30e-6  /* an idle pool thread looks for work this long before it sleeps */
#define FW_TEAM_IDLE_S 5e-3 /* ... and this long asleep before it gives back its OpenMP team */
#define FW_DEFER_S 20e-3 /* ... and sleeps this long before it takes the GIL to release GIL-free tasks */

/* An idle pool thread, counted in `searching` on entry. Returns 1 when work
 * is visible (still counted in `searching`: the caller claims, then calls
 * fw_searching_done), 0 when it must stop (no longer counted), 2 when,
 * before it would sleep, GIL-free tasks wait for their release (no longer
 * counted: the caller releases them with the GIL and calls it again). Called
 * without the GIL. A spare's retirement (n_spares--) happens here, under
 * the sleep lock, so that two spares never both retire for one. */
static inline int fw_idle(int worker_index, int spare) {
    double until = fw_now() + FW_SPIN_S;
    int spins = 0;
    for (;;) {
        if (fw_any_work()) return 1;
        if (fw_must_stop(worker_index, spare)) break;
        if (fw_now() >= until) break;
        /* Spin only on a CPU that no GIL-free kernel needs: those running
         * (each keeps a CPU busy, unlike Python tasks, which take turns on
         * the GIL), the threads searching (this one among them) and one for
         * the thread that forks and waits, unless a thread outside the pool
         * runs a kernel (it is that thread: counted once, among the kernels).
         * On a machine of 2, a second worker spinning beside two forked
         * matmuls slowed one of them by half. */
        if (FW_LOAD(&fw_P.n_kernels) + FW_LOAD(&fw_P.searching) >
            fw_P.n_cpus - (FW_LOAD(&fw_P.n_kernels_out) > 0 ? 0 : 1)) break;
        if (++spins % 16 == 0) sched_yield();
        else FW_PAUSE();
    }
    /* Finished GIL-free tasks whose references nobody has released yet: the
     * caller takes the GIL for them (returns 2) once this thread has slept
     * FW_DEFER_S without work and they are still there. Not at once: every
     * wait releases them too, and a worker that queues for the GIL while the
     * forking thread runs Python is neither searching nor asleep (a fork then
     * wakes another thread for its work), and when it gets the GIL it may
     * preempt that thread on its CPU (seen: a 30 us stall of a 58 us pair). */
    double defer_until = fw_any_deferred() ? fw_now() + FW_DEFER_S : -1.0;
    /* A pool thread that ran kernels with teams of 2 or more keeps a libgomp
     * pool of its own (threads asleep in libgomp's dock). Once more OpenMP
     * threads exist in the process than CPUs, libgomp makes every team's
     * waits yield almost at once (its throttled spin), and every 2-thread
     * kernel of the main thread slowed 3x for the rest of the process
     * (docs/threads.md). So a pool thread that has slept FW_TEAM_IDLE_S
     * without work gives its team back (omp_pause_resource on its own pool:
     * _team.pyx, team_idle); the next forked kernel that wants one starts it
     * again. Not at once: while forked kernels come and go, a worker sleeps
     * for moments between them. */
    double team_until = (fw_P.team_held != NULL && fw_P.team_held()) ? fw_now() + FW_TEAM_IDLE_S
                                                                      : -1.0;
    struct timespec defer_ts;
    pthread_mutex_lock(&fw_P.sleep_lock);
    FW_ADD(&fw_P.sleepers, 1);
    FW_ADD(&fw_P.searching, -1);
    for (;;) {
        int stop = fw_must_stop(worker_index, spare);
        if (!stop && (fw_any_work() || FW_LOAD(&fw_P.wake_tokens) > 0)) {
            if (FW_LOAD(&fw_P.wake_tokens) > 0) FW_ADD(&fw_P.wake_tokens, -1);
            FW_ADD(&fw_P.sleepers, -1);
            FW_ADD(&fw_P.searching, 1);
            pthread_mutex_unlock(&fw_P.sleep_lock);
            return 1;
        }
        if (stop) {
            FW_ADD(&fw_P.sleepers, -1);
            if (spare) FW_ADD(&fw_P.n_spares, -1);
            if (FW_LOAD(&fw_P.wake_tokens) > 0) {
                /* A wake-up this thread may have taken: pass it on. */
                if (fw_P.sleepers > 0) pthread_cond_signal(&fw_P.work_cond);
                else FW_STORE(&fw_P.wake_tokens, 0);
            }
            pthread_mutex_unlock(&fw_P.sleep_lock);
            return 0;
        }
        if (defer_until >= 0.0 && fw_any_deferred()) {
            if (fw_now() >= defer_until) {
                FW_ADD(&fw_P.sleepers, -1);
                pthread_mutex_unlock(&fw_P.sleep_lock);
                return 2;
            }
            fw_deadline_ts(defer_until, &defer_ts);
            pthread_cond_timedwait(&fw_P.work_cond, &fw_P.sleep_lock, &defer_ts);
            continue;
        }
        if (team_until >= 0.0) {
            if (fw_now() >= team_until) {
                /* without the lock (libgomp joins its threads); still counted
                 * asleep: a wake-up meanwhile leaves its token, seen below */
                team_until = -1.0;
                pthread_mutex_unlock(&fw_P.sleep_lock);
                fw_P.team_release();
                pthread_mutex_lock(&fw_P.sleep_lock);
                continue;
            }
            fw_deadline_ts(team_until, &defer_ts);
            pthread_cond_timedwait(&fw_P.work_cond, &fw_P.sleep_lock, &defer_ts);
            continue;
        }
        pthread_cond_wait(&fw_P.work_cond, &fw_P.sleep_lock);
    }
}

static inline void fw_searching_done(void) { FW_ADD(&fw_P.searching, -1); }

#endif
