/* os.fork(). pool.pyx registers the one pthread_atfork of forkwait's native
 * modules; its prepare handler takes every lock of the pool (the sleep lock,
 * cb_lock, then the queues, the order of state.h's rules) and the parent
 * handler releases them. It runs inside fork(), after CPython's own
 * before-fork steps (import lock, logging's lock), so no forkwait lock is
 * ever held across them: a pool thread can never block on a forkwait lock
 * while it holds the GIL that the forking thread needs. The child handler
 * re-initialises every lock; fw_child_reset (from the Python-level child
 * hook) forgets the threads the child does not have.
 */
#ifndef FORKWAIT_POOL_FORK_H
#define FORKWAIT_POOL_FORK_H

#include "state.h"

static void fw_atfork_prepare(void) {
    int i, n;
    pthread_mutex_lock(&fw_P.sleep_lock);
    pthread_mutex_lock(&fw_P.cb_lock);
    pthread_mutex_lock(&fw_P.inject.lock);
    n = FW_LOAD(&fw_P.n_slots);
    for (i = 0; i < n; i++) pthread_mutex_lock(&fw_P.deques[i].lock);
}

static void fw_atfork_parent(void) {
    int i, n = FW_LOAD(&fw_P.n_slots);
    for (i = n - 1; i >= 0; i--) pthread_mutex_unlock(&fw_P.deques[i].lock);
    pthread_mutex_unlock(&fw_P.inject.lock);
    pthread_mutex_unlock(&fw_P.cb_lock);
    pthread_mutex_unlock(&fw_P.sleep_lock);
}

static void fw_atfork_child(void) {
    /* Only the forking thread exists: every lock is free to re-create. */
    fw_locks_init();
    fw_P.sleepers = 0;
    fw_P.searching = 0;
    fw_P.wake_tokens = 0;
}

/* In the child, before any other thread exists: forget the parent's other
 * threads and hand back their running tasks (orphans: nobody will finish
 * them) in a malloc'ed array (*out, free it), returning their count; reset
 * the pool's thread state. The forking thread's own tasks carry on. */
static Py_ssize_t fw_child_reset(fw_node ***out) {
    fw_thread *t = fw_P.registry, *nx;
    fw_node *n, **buf = NULL;
    Py_ssize_t k = 0, cap = 0;
    long long mine = 0;
    fw_P.registry = NULL;
    while (t != NULL) {
        nx = t->reg_next;
        if (t == fw_me) {
            t->reg_prev = NULL;
            t->reg_next = NULL;
            fw_P.registry = t;
            for (n = t->top; n != NULL; n = n->outer) { mine++; n->on_pool = 0; }
        } else {
            fw_P.n_completed += t->n_done;
            for (n = t->top; n != NULL; n = n->outer) {
                if (FW_LOAD(&n->state) != FW_RUNNING) continue;
                if (k == cap) {
                    fw_node **nb = (fw_node **)realloc(buf, (size_t)(cap ? 2 * cap : 16) * sizeof(*buf));
                    if (nb == NULL) break;
                    buf = nb;
                    cap = cap ? 2 * cap : 16;
                }
                buf[k++] = n;
            }
            free(t);
        }
        t = nx;
    }
    for (Py_ssize_t i = 0; i < k; i++) { buf[i]->runner = NULL; buf[i]->outer = NULL; buf[i]->on_pool = 0; }
    fw_P.n_running = mine + k - (fw_me != NULL ? fw_me->n_run : 0);
    fw_P.n_running_pool = 0;
    fw_P.n_kernels_out = 0;
    fw_P.n_kernels = 0;         /* (the forking thread runs none: it is in os.fork()) */
    fw_P.live_workers = 0;
    fw_P.n_deep = 0;
    fw_P.n_spares = 0;
    fw_P.n_helping = 0;         /* helpers are threads the child does not have */
    memset(fw_P.slot_alive, 0, sizeof(fw_P.slot_alive));
    memset(fw_P.slot_used, 0, sizeof(fw_P.slot_used));
    if (fw_slot >= 0) fw_P.slot_used[fw_slot] = 1;
    if (FW_LOAD(&fw_P.state) == FW_POOL_RUNNING) FW_STORE(&fw_P.state, FW_POOL_IDLE);
    *out = buf;
    return k;
}

#endif
