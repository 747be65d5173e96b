/* Queues and claims. One injection queue for forks from threads outside the
 * pool, and one deque per pool thread (worker or spare) for forks made by the
 * tasks it runs. A deque's owner pushes and pops at the tail (LIFO); thieves
 * take from the head (FIFO), as in Chase-Lev / Rayon / oneTBB. Each queue has
 * its own mutex (uncontended in practice: a claim is always followed by
 * running Python code, so the GIL already spaces claims out); there is no
 * global lock on the fork path.
 *
 * A claim unlinks a queued node and marks it RUNNING for the calling thread.
 * Which nodes a thread may claim is the isolation rule (docs/guide.md): an
 * idle pool thread any (fw_find_work); a waiter its target itself
 * (fw_claim_node) or a task of the target's subtree (fw_claim_subtree).
 */
#ifndef FORKWAIT_POOL_QUEUE_H
#define FORKWAIT_POOL_QUEUE_H

#include "state.h"
#include "complete.h"

/* ------------------------------------------------------------ queues */
static inline void fw_q_link_tail(fw_queue *q, fw_node *n) {
    n->prev = q->tail;
    n->next = NULL;
    if (q->tail) q->tail->next = n; else q->head = n;
    q->tail = n;
    FW_STORE_REL(&n->queue, q);  /* atomic: fw_claim_node reads it unlocked */
    if (n->gil_free != NULL) FW_ADD(&q->n_gil_free_queued, 1);
    FW_ADD(&q->len, 1);
}

static inline void fw_q_unlink(fw_queue *q, fw_node *n) {
    if (n->prev) n->prev->next = n->next; else q->head = n->next;
    if (n->next) n->next->prev = n->prev; else q->tail = n->prev;
    n->prev = n->next = NULL;
    FW_STORE_REL(&n->queue, NULL);
    if (n->gil_free != NULL) FW_ADD(&q->n_gil_free_queued, -1);
    FW_ADD(&q->len, -1);
}

/* The pool thread's own deque, or the injection queue for other threads. */
static inline fw_queue *fw_home_queue(void) {
    return fw_slot >= 0 ? &fw_P.deques[fw_slot] : &fw_P.inject;
}

/* Link a new task (state PENDING). 0 when the pool refuses forks now:
 * it accepts while RUNNING, and while DRAINING only from a running task
 * while workers are still there to run it (so queued fork trees finish). */
static inline int fw_push(fw_node *n) {
    fw_queue *q = fw_home_queue();
    int st;
    pthread_mutex_lock(&q->lock);
    st = FW_LOAD(&fw_P.state);
    if (!(st == FW_POOL_RUNNING ||
          (st == FW_POOL_DRAINING && fw_task_depth > 0 && FW_LOAD(&fw_P.live_workers) > 0))) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    fw_q_link_tail(q, n);
    pthread_mutex_unlock(&q->lock);
    return 1;
}

/* Under the queue lock that held `n` (fw_me is set: see fw_me_get). */
static inline void fw_mark_running(fw_node *n) {
    /* A release store: claims read the state under this queue lock, and no
     * wait-side handshake depends on RUNNING (only on the final states). */
    FW_STORE_REL(&n->state, FW_RUNNING);
    FW_STORE_REL(&n->runner, fw_me);  /* atomic: read unlocked (wait.h, wait.pxi) */
    n->outer = fw_me->top;
    fw_me->top = n;
    n->on_pool = fw_slot >= 0 && fw_slot < FW_MAX_INTEROP;  /* a worker (spares are never joined) */
    FW_OWN_ADD(&fw_me->n_run, 1);
    if (n->on_pool) FW_ADD(&fw_P.n_running_pool, 1);
}

/* Claim one particular queued node (a wait on it, a cancel). The node is
 * unlinked and moved to `to_state` (RUNNING or CANCELLED). 1 on success. */
static inline int fw_claim_node(fw_node *n, int to_state) {
    fw_queue *q = FW_LOAD_ACQ(&n->queue);
    int ok = 0;
    if (q == NULL) return 0;
    if (to_state == FW_RUNNING && fw_me_get() == NULL) return 0;
    pthread_mutex_lock(&q->lock);
    if (n->queue == q && FW_LOAD(&n->state) == FW_PENDING) {
        fw_q_unlink(q, n);
        if (to_state == FW_RUNNING) fw_mark_running(n);
        else { FW_STORE(&n->state, to_state); fw_cf_decide(n); }
        ok = 1;
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

/* `gil_free_only`: take the node only if it is a GIL-free call (a thread
 * without the GIL must not hold a Python task while it waits for the GIL: a
 * wait on that task would find it running instead of running it itself). */
static inline fw_node *fw_take_tail_if(fw_queue *q, int gil_free_only) {
    fw_node *n = NULL;
    if (FW_LOAD(gil_free_only ? &q->n_gil_free_queued : &q->len) == 0) return NULL;
    pthread_mutex_lock(&q->lock);
    n = q->tail;
    if (n && gil_free_only && n->gil_free == NULL) n = NULL;
    if (n) { fw_q_unlink(q, n); fw_mark_running(n); }
    pthread_mutex_unlock(&q->lock);
    return n;
}

static inline fw_node *fw_take_head_if(fw_queue *q, int gil_free_only) {
    fw_node *n = NULL;
    if (FW_LOAD(gil_free_only ? &q->n_gil_free_queued : &q->len) == 0) return NULL;
    pthread_mutex_lock(&q->lock);
    n = q->head;
    if (n && gil_free_only && n->gil_free == NULL) n = NULL;
    if (n) { fw_q_unlink(q, n); fw_mark_running(n); }
    pthread_mutex_unlock(&q->lock);
    return n;
}

/* Work for an idle pool thread in slot `slot`: its own deque newest first,
 * then the oldest task of another deque (a steal), then the injection queue. */
static inline fw_node *fw_find_work_if(int slot, int gil_free_only) {
    fw_node *n;
    int i, k, ns;
    if (fw_me_get() == NULL) return NULL;
    if (slot >= 0 && (n = fw_take_tail_if(&fw_P.deques[slot], gil_free_only)) != NULL) return n;
    ns = FW_LOAD(&fw_P.n_slots);
    for (k = 1; k <= ns; k++) {
        i = (slot + k) % ns;
        if (i < 0) i += ns;
        if (i == slot) continue;
        if ((n = fw_take_head_if(&fw_P.deques[i], gil_free_only)) != NULL) {
            FW_ADD(&fw_P.n_steals, 1);
            return n;
        }
    }
    return fw_take_head_if(&fw_P.inject, gil_free_only);
}

static inline fw_node *fw_find_work(int slot) { return fw_find_work_if(slot, 0); }
/* Without the GIL: a GIL-free task only (see fw_take_tail_if). */
static inline fw_node *fw_find_gil_free_work(int slot) { return fw_find_work_if(slot, 1); }

static inline int fw_any_work(void) {
    int i, ns = FW_LOAD(&fw_P.n_slots);
    if (FW_LOAD(&fw_P.inject.len) > 0) return 1;
    for (i = 0; i < ns; i++)
        if (FW_LOAD(&fw_P.deques[i].len) > 0) return 1;
    return 0;
}

/* ------------------------------------------------------------ isolated helping */
/* Is `n` in the subtree of `root` (forked by it or, transitively, by its
 * descendants)? With `mark` != 0, of any node whose mark is `mark`.
 * The caller holds the lock of the queue `n` is in: while `n` is queued its
 * `live` count is not 0, so neither is any ancestor's, and no ancestor drops
 * its parent link or can be freed during the walk (state.h, `live`); each
 * Future holds its parent. No GIL is needed for it. */
static inline int fw_in_subtree(const fw_node *n, const fw_node *root, long long mark) {
    const fw_node *a;
    if (mark != 0) {
        for (a = n->parent; a != NULL; a = a->parent)
            if (a->mark == mark) return 1;
        return 0;
    }
    for (a = n->parent; a != NULL && a->depth >= root->depth; a = a->parent)
        if (a == root) return 1;
    return 0;
}

#define FW_HELP_SCAN 64  /* queued tasks looked at per queue, newest first */

static inline fw_node *fw_claim_subtree_in(fw_queue *q, const fw_node *root, long long mark) {
    fw_node *n;
    int seen = 0;
    if (FW_LOAD(&q->len) == 0) return NULL;
    pthread_mutex_lock(&q->lock);
    for (n = q->tail; n != NULL && seen < FW_HELP_SCAN; n = n->prev, seen++) {
        if (FW_LOAD(&n->state) == FW_PENDING && fw_in_subtree(n, root, mark)) {
            fw_q_unlink(q, n);
            fw_mark_running(n);
            pthread_mutex_unlock(&q->lock);
            return n;
        }
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* A queued task of root's subtree, claimed for the calling thread, or NULL.
 * Its own deque first (a task run here forked there), then the other deques,
 * then the injection queue. */
static inline fw_node *fw_claim_subtree(const fw_node *root, long long mark) {
    fw_node *n;
    int i, ns = FW_LOAD(&fw_P.n_slots);
    if (fw_me_get() == NULL) return NULL;
    if (fw_slot >= 0 && (n = fw_claim_subtree_in(&fw_P.deques[fw_slot], root, mark)) != NULL)
        goto found;
    for (i = 0; i < ns; i++) {
        if (i == fw_slot) continue;
        if ((n = fw_claim_subtree_in(&fw_P.deques[i], root, mark)) != NULL) goto found;
    }
    if ((n = fw_claim_subtree_in(&fw_P.inject, root, mark)) != NULL) goto found;
    return NULL;
found:
    FW_ADD(&fw_P.n_helped, 1);
    return n;
}

/* After a fork from inside a task: if a thread waits (helping) on an
 * ancestor of the new task, wake it to help. Looks at most 32 levels up. */
static inline void fw_notify_helpers(const fw_node *parent) {
    const fw_node *a = parent;
    int k;
    /* The caller pushed the task (a sequentially consistent add to the
     * queue's len, under its lock): a helper that registers after this load
     * scans the queues after the push. */
    if (FW_LOAD(&fw_P.n_helping) == 0) return;
    for (k = 0; a != NULL && k < 32; a = a->parent, k++) {
        if (FW_LOAD(&a->help_waiters) > 0) {
            pthread_mutex_lock(&fw_P.sleep_lock);
            fw_P.work_epoch++;
            pthread_cond_broadcast(&fw_P.done_cond);
            pthread_mutex_unlock(&fw_P.sleep_lock);
            return;
        }
    }
}

#endif
