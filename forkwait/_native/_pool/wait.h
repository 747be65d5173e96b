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

/* The cycle check (sleep lock held): would this thread's untimed wait
 * never end because what it waits for waits, directly or through other
 * threads' untimed waits, on this thread? Follows a running task to its
 * runner, a thread to what it sleeps on (one future, or many: all of them
 * for wait_all, the first for wait_any), a collect_all future to its
 * members. A timed wait is no edge (it ends), nor is a queued task (a pool
 * thread may run it) or a future made by hand (anyone may complete it).
 * `budget` bounds the walk; when it runs out, no cycle is reported. */
static int fw_many_waits_on_me(const fw_many *m, int *budget);

/* The thread running `n` now, or NULL (an atomic read: runners set and
 * clear it without a lock the reader holds). */
static inline fw_thread *fw_runner_of(fw_node *n) { return FW_LOAD_ACQ(&n->runner); }

static int fw_waits_on_me(fw_node *t, int *budget) {
    fw_thread *r;
    if (t == NULL || --*budget < 0) return 0;
    if (FW_LOAD(&t->state) >= FW_FINISHED) return 0;
    if (t->many != NULL) return fw_many_waits_on_me(t->many, budget);
    if (FW_LOAD(&t->state) != FW_RUNNING) return 0;
    r = fw_runner_of(t);  /* (a thread is freed only under the sleep lock, held here) */
    if (r == NULL) return 0;
    if (r == fw_me) return 1;
    if (r->waiting_many != NULL) return fw_many_waits_on_me(r->waiting_many, budget);
    return fw_waits_on_me(r->waiting_on, budget);
}

static int fw_many_waits_on_me(const fw_many *m, int *budget) {
    Py_ssize_t i;
    for (i = 0; i < m->n; i++) {
        int w = fw_waits_on_me(m->nodes[i], budget);
        if (m->any && !w) return 0;    /* this one may end the wait */
        if (!m->any && w) return 1;    /* the wait needs this one */
        if (*budget < 0) return 0;
    }
    return m->any && m->n > 0;
}

static inline int fw_closes_cycle(fw_node *target, const fw_many *many) {
    int budget = 100000;
    return many != NULL ? fw_many_waits_on_me(many, &budget) : fw_waits_on_me(target, &budget);
}

/* Sleep until `target` is done (or the deadline, or a poll interval for the
 * main thread, or, for a helping waiter, until subtree work appeared since
 * `epoch`). Called without the GIL. `help_node`: the node whose
 * help_waiters count this waiter is in (NULL: not helping). `many`: what a
 * wait on many waits for (target is then the future its members complete),
 * for the cycle check (`check_cycle`; untimed waits only). */
static inline int fw_sleep_wait(fw_node *target, double deadline, double poll_s,
                                fw_node *help_node, unsigned long long epoch,
                                int check_cycle, fw_many *many, double *slept) {
    int action, timed_out = 0;
    double now, until, t0;
    struct timespec ts;
    fw_thread *me = fw_me_get();
    int untimed = deadline < 0.0;   /* only an untimed wait is an edge of a cycle */
    if (me == NULL || !untimed) check_cycle = 0;
    pthread_mutex_lock(&fw_P.sleep_lock);
    FW_ADD(&target->waiters, 1);  /* before reading the state: see fw_wake_waiters */
    for (;;) {
        if (FW_LOAD(&target->state) >= FW_FINISHED) { action = FW_W_DONE; break; }
        if (help_node != NULL && fw_P.work_epoch != epoch) { action = FW_W_RESCAN; break; }
        now = fw_now();
        if (deadline >= 0.0 && now >= deadline) { action = FW_W_TIMEOUT; break; }
        if (timed_out && poll_s > 0.0) { action = FW_W_POLL; break; }
        if (me && untimed) { me->waiting_on = target; me->waiting_many = many; }
        if (check_cycle && fw_closes_cycle(target, many)) { action = FW_W_CYCLE; break; }
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
    if (me && untimed) { me->waiting_on = NULL; me->waiting_many = NULL; }
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
