/* A future's final step: the state settled once (a compare-and-swap), the
 * threads sleeping on it woken; and the stack of GIL-free tasks that a worker
 * completed without the GIL, until a thread with the GIL releases them.
 */
#ifndef FORKWAIT_POOL_COMPLETE_H
#define FORKWAIT_POOL_COMPLETE_H

#include "state.h"

/* A worker finished a GIL-free task without the GIL: the Future's Python-side
 * release (its queue reference, the call's arguments) waits here for a thread
 * that holds the GIL. take_all swaps the whole stack out, so no ABA. */
static inline void fw_defer_push(fw_node *n) {
    /* `next` links it: a finished node is in no queue */
    fw_node *head = FW_LOAD_RLX(&fw_P.deferred);
    do {
        n->next = head;
    } while (!FW_CAS_WEAK_REL(&fw_P.deferred, &head, n));
}

static inline fw_node *fw_defer_take_all(void) {
    if (FW_LOAD_RLX(&fw_P.deferred) == NULL) return NULL;
    return FW_XCHG_ACQ(&fw_P.deferred, NULL);
}

static inline int fw_any_deferred(void) {
    return FW_LOAD_RLX(&fw_P.deferred) != NULL;
}


/* A future reached a final state: wake the threads sleeping on it. */
static inline void fw_wake_waiters(fw_node *n) {
    /* No fence: every caller has just written the final state with a
     * sequentially consistent operation (fw_settle's CAS, a cancel's store),
     * and a waiter adds itself to `waiters` (SC) before it reads the state:
     * one of the two sees the other. */
    if (FW_LOAD(&n->waiters) > 0) {
        pthread_mutex_lock(&fw_P.sleep_lock);
        pthread_cond_broadcast(&fw_P.done_cond);
        pthread_mutex_unlock(&fw_P.sleep_lock);
    }
}

/* concurrent.futures' waiters (cf.wait, cf.as_completed) read a future's
 * `_state` under its `_condition` (forkwait's one _cf_lock), twice, and count
 * on every change of it to come with a notification of the waiters installed
 * meanwhile, under that lock: the standard Future changes both in one step.
 * A forkwait future's state changes without that lock (a compare-and-swap,
 * on a worker without the GIL for a GIL-free task), so what `_state` shows
 * of a final state is decided once, right after the state becomes final:
 *  - no cf waiter was ever installed (cf_watched 0; Dekker with `_condition`,
 *    which sets it before the reader takes the lock and reads): FW_CF_SEEN,
 *    final at once; any later reader sees it final in both of its reads;
 *  - else FW_CF_TO_PUBLISH: `_state` stays RUNNING until the completer, with
 *    the lock held, marks it FW_CF_PUBLISHED and notifies the waiters
 *    (_notify_cf_waiters): one step under the lock, as the standard Future.
 * A reader that finds a final state still FW_CF_UNDECIDED waits for the
 * decision (a few instructions of the completer, which holds nothing then). */
static inline void fw_cf_decide(fw_node *n) {
    /* after the final state's sequentially consistent write (the Dekker
     * pair: `_condition` stores cf_watched, then its caller reads the state) */
    FW_STORE_REL(&n->cf_pub, FW_LOAD(&n->cf_watched) ? FW_CF_TO_PUBLISH : FW_CF_SEEN);
}

/* Move a RUNNING task or a PENDING hand-made future to a final state, once.
 * 1 on success (the caller then wakes waiters and runs callbacks). */
static inline int fw_settle(fw_node *n, int final_state, int from_running) {
    int expected = from_running ? FW_RUNNING : FW_PENDING;
    if (!FW_CAS(&n->state, &expected, final_state)) {
        if (!from_running && final_state != FW_CANCELLED) {
            expected = FW_RUNNING;  /* set_running_or_notify_cancel() was called */
            if (!n->is_task && FW_CAS(&n->state, &expected, final_state)) {
                fw_cf_decide(n);
                return 1;
            }
        }
        return 0;
    }
    fw_cf_decide(n);
    if (from_running) {
        fw_thread *runner = FW_LOAD_RLX(&n->runner);  /* this thread's own write */
        if (runner != NULL && runner->top == n) runner->top = n->outer;
        n->outer = NULL;
        if (fw_me != NULL) FW_OWN_ADD(&fw_me->n_run, -1);
        else FW_ADD(&fw_P.n_running, -1);
        if (n->on_pool) FW_ADD(&fw_P.n_running_pool, -1);
        n->on_pool = 0;
        FW_STORE_REL(&n->runner, NULL);  /* atomic: the cycle check and a wait's
                                            own-ancestor check read it unlocked */
    }
    if (n->is_task) {
        if (fw_me != NULL) FW_OWN_ADD(&fw_me->n_done, 1);
        else FW_ADD(&fw_P.n_completed, 1);
    }
    return 1;
}

static inline int fw_cas_state(fw_node *n, int from, int to) {
    int expected = from;
    return FW_CAS(&n->state, &expected, to);
}

#endif
