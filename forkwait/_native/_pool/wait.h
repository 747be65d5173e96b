/* Threads that wait on a future: sleeping until it is done (or a deadline,
 * or new work of the subtree they help), registering as helpers, spinning on
 * a short GIL-free kernel, and the cycle check that turns a wait on oneself
 * into an error.
 */
#ifndef FORKWAIT_POOL_WAIT_H
#define FORKWAIT_POOL_WAIT_H

#include "state.h"
#include "sleep.h"

#define FW_GIL_FREE_SPIN_S 50e-6  /* a wait on a running GIL-free task spins this long */

/* Without the GIL: spin until `n` is done or `seconds` (or the deadline, when
 * >= 0) have passed. The runner of a GIL-free task needs no GIL to complete
 * it, so a short kernel's waiter returns without a futex wake and without
 * a GIL hand-off. 1 when done. */
static inline int fw_spin_until_done(fw_node *n, double seconds, double deadline) {
    double until = fw_now() + seconds;
    int spins = 0;
    if (deadline >= 0.0 && deadline < until) until = deadline;
    for (;;) {
        if (FW_LOAD(&n->state) >= FW_FINISHED) return 1;
        if (FW_LOAD(&n->state) != FW_RUNNING) return 0;
        if ((++spins & 63) == 0 && fw_now() >= until) return 0;
        FW_PAUSE();
    }
}

/* ------------------------------------------------------------ waiting */
enum { FW_W_DONE = 0, FW_W_RESCAN = 1, FW_W_POLL = 2, FW_W_TIMEOUT = 3, FW_W_CYCLE = 4 };

/* Would waiting on `target` close a cycle of waits (sleep lock held)?
 * Follows target -> its runner -> what that thread waits on -> ... */
static inline int fw_closes_cycle(fw_node *target) {
    fw_node *t = target;
    int steps = 0;
    while (t != NULL && steps++ < 100000) {
        fw_thread *r;
        if (FW_LOAD(&t->state) != FW_RUNNING) return 0;
        r = t->runner;
        if (r == NULL) return 0;
        if (r == fw_me) return 1;
        t = r->waiting_on;
    }
    return 0;
}

/* Sleep until `target` is done (or the deadline, or a poll interval for the
 * main thread, or, for a helping waiter, until subtree work appeared since
 * `epoch`). Called without the GIL. `help_node`: the node whose
 * help_waiters count this waiter is in (NULL: not helping). */
static inline int fw_sleep_wait(fw_node *target, double deadline, double poll_s,
                                fw_node *help_node, unsigned long long epoch,
                                int check_cycle, double *slept) {
    int action, timed_out = 0;
    double now, until, t0;
    struct timespec ts;
    fw_thread *me = fw_me_get();
    if (me == NULL) check_cycle = 0;
    pthread_mutex_lock(&fw_P.sleep_lock);
    FW_ADD(&target->waiters, 1);  /* before reading the state: see fw_wake_waiters */
    for (;;) {
        if (FW_LOAD(&target->state) >= FW_FINISHED) { action = FW_W_DONE; break; }
        if (help_node != NULL && fw_P.work_epoch != epoch) { action = FW_W_RESCAN; break; }
        now = fw_now();
        if (deadline >= 0.0 && now >= deadline) { action = FW_W_TIMEOUT; break; }
        if (timed_out && poll_s > 0.0) { action = FW_W_POLL; break; }
        if (me) me->waiting_on = target;
        if (check_cycle && fw_closes_cycle(target)) { action = FW_W_CYCLE; break; }
        until = deadline;
        if (poll_s > 0.0 && (until < 0.0 || until > now + poll_s)) until = now + poll_s;
        t0 = now;
        fw_wake_for_queued();
        if (until < 0.0) {
            pthread_cond_wait(&fw_P.done_cond, &fw_P.sleep_lock);
            timed_out = 0;
        } else {
            fw_deadline_ts(until, &ts);
            timed_out = pthread_cond_timedwait(&fw_P.done_cond, &fw_P.sleep_lock, &ts) == ETIMEDOUT;
        }
        *slept += fw_now() - t0;
    }
    if (me) me->waiting_on = NULL;
    FW_ADD(&target->waiters, -1);
    pthread_mutex_unlock(&fw_P.sleep_lock);
    return action;
}

/* Register as a helper of `n` (sleep lock); returns the work epoch to pass
 * to fw_sleep_wait. */
static inline unsigned long long fw_help_begin(fw_node *n) {
    unsigned long long e;
    pthread_mutex_lock(&fw_P.sleep_lock);
    FW_ADD(&fw_P.n_helping, 1);
    FW_ADD(&n->help_waiters, 1);
    e = fw_P.work_epoch;
    pthread_mutex_unlock(&fw_P.sleep_lock);
    return e;
}

static inline void fw_help_end(fw_node *n) {
    FW_ADD(&n->help_waiters, -1);
    FW_ADD(&fw_P.n_helping, -1);
}

#endif
