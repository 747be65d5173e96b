/* The inter-op scheduler's C core: one pool-state struct (queues, sleep
 * state, counters), its locks, and its os.fork() handlers. Included by
 * pool.pyx only.
 *
 * Queues: one injection queue for forks from threads outside the pool, and
 * one deque per pool thread (worker or spare) for forks made by the tasks it
 * runs. A deque's owner pushes and pops at the tail (LIFO); thieves take from
 * the head (FIFO), as in Chase-Lev / Rayon / oneTBB. Each queue has its own
 * mutex (uncontended in practice: a claim is always followed by running
 * Python code, so the GIL already spaces claims out); there is no global lock
 * on the fork path.
 *
 * Locking rules:
 *  - Nobody holding one of these mutexes waits for the GIL, runs Python code
 *    or allocates a Python object, so a GIL holder may take them at any time.
 *  - At most one queue lock is held at a time; the sleep lock may be held
 *    while taking a queue lock (never the other way round). cb_lock is a leaf.
 *  - os.fork(): pthread_atfork's prepare handler takes every lock in that
 *    order and the parent handler releases them. It runs inside fork(), after
 *    CPython's own before-fork steps (import lock, logging's lock), so no
 *    forkwait lock is ever held across them: a pool thread can never block on
 *    a forkwait lock while it holds the GIL that the forking thread needs.
 *    The child handler re-initialises every lock.
 */
#ifndef FORKWAIT_SCHED_H
#define FORKWAIT_SCHED_H

#include <Python.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <time.h>
#include <errno.h>
#include <string.h>
#include <stddef.h>
#include <stdlib.h>

#include "_fw_atomic.h"
#include "_fw_gil_free.h"

#define FW_MAX_INTEROP 4096
#define FW_MAX_SPARES 2048
#define FW_MAX_SLOTS (FW_MAX_INTEROP + FW_MAX_SPARES)

/* Future states; the first two are "not done". */
enum { FW_PENDING = 0, FW_RUNNING = 1, FW_FINISHED = 2, FW_FAILED = 3, FW_CANCELLED = 4 };
/* a new (zeroed) Future is pending: FutureCore has no __cinit__ to set it */
_Static_assert(FW_PENDING == 0, "FW_PENDING must be 0");
/* Pool states. */
enum { FW_POOL_IDLE = 0, FW_POOL_RUNNING = 1, FW_POOL_DRAINING = 2, FW_POOL_CLOSED = 3 };


struct fw_queue;
struct fw_thread;

typedef struct fw_node {
    /* first: the fields a pass over many futures reads (wait_all), next to
     * the object header and the Future's result (see FutureCore) */
    int state;                  /* atomic */
    int is_task;
    struct fw_node *prev, *next;
    struct fw_node *parent;     /* the task that forked it (the Future holds a reference) */
    struct fw_queue *queue;     /* the queue it is linked in, or NULL */
    struct fw_thread *runner;   /* while RUNNING: the thread that runs it */
    int depth;                  /* 0: forked outside any task */
    int waiters;                /* threads sleeping until it is done (sleep lock) */
    int help_waiters;           /* of those, threads that would run its subtree (atomic) */
    int cf_watched;             /* concurrent.futures waiters may be installed (atomic) */
    int cb_adders;              /* callbacks were ever added (atomic): while 0 the
                                   completer skips the callback lock (see _after_final) */
    struct fw_node *outer;      /* while RUNNING: the task beneath it on its thread */
    int live_children;          /* forked tasks not yet done (atomic): while > 0, the
                                   parent link stays, so helpers see the whole subtree */
    int on_pool;                /* while RUNNING: counted in n_running_pool */
    long long mark;             /* a wait_all's token (help roots) */
    fw_gil_free_call *gil_free;     /* a GIL-free kernel call (set at fork; the Future's
                                   capsule, in its context's slot, owns it), or NULL */
} fw_node;

typedef struct fw_queue {
    pthread_mutex_t lock;
    fw_node *head;              /* oldest: thieves take it */
    fw_node *tail;              /* newest: the owner pushes and pops here */
    Py_ssize_t len;             /* atomic: read without the lock */
    Py_ssize_t n_gil_free_queued;        /* of those, GIL-free calls (atomic, as len): a thread
                                   without the GIL skips a queue without any unlocked */
} fw_queue;

/* Per thread that runs or waits on tasks: heap-allocated on first use,
 * linked in the pool's registry (sleep lock), freed when the thread ends.
 * `top` is the innermost task it runs; each running node's `outer` is the
 * task beneath it on the same thread, so the child of os.fork() can find
 * the tasks of threads it does not have. `waiting_on` is what it sleeps on
 * (deadlock detection follows runner -> waiting_on -> runner ...). */
typedef struct fw_thread {
    long long n_run, n_done;    /* this thread's share of fw_P.n_running / n_completed: only
                                   the thread itself writes them (no locked instruction per
                                   task); readers add them up under the sleep lock */
    fw_node *waiting_on;        /* sleep lock */
    fw_node *top;               /* changed under a queue lock (claim) or by the thread */
    struct fw_thread *reg_prev, *reg_next;
} fw_thread;

typedef struct fw_pool {
    pthread_mutex_t sleep_lock; /* sleep state, pool state, counters below it */
    pthread_cond_t work_cond;   /* idle workers and spares sleep here */
    pthread_cond_t done_cond;   /* threads in a wait sleep here */
    pthread_mutex_t cb_lock;    /* the futures' callback lists (a leaf lock) */
    fw_queue inject;
    int n_slots;                /* high-water mark of deque slots (atomic) */
    int n_cpus;                 /* CPUs this process may run on (at init) */
    int sleepers;               /* idle pool threads asleep (atomic; written under sleep lock) */
    int searching;              /* idle pool threads awake and looking for work (atomic) */
    int wake_tokens;            /* wake-ups handed out and not yet taken (sleep lock) */
    unsigned long long work_epoch; /* bumped when subtree work appears for a helper (sleep lock) */
    int n_helping;              /* threads registered as helpers (fw_help_begin; atomic): while
                                   0, a fork need not look for a helper among its ancestors */
    int target_workers;         /* atomic */
    int live_workers;
    int state;                  /* atomic */
    int n_deep;                 /* threads blocked in a wait because they are too deep */
    int n_spares;               /* live compensating threads */
    long long n_running;        /* tasks running now, anywhere, less the threads' own n_run
                                   (atomic; fw_stats_running() gives the total) */
    long long n_running_pool;   /* of those, on workers (atomic): exit waits for them */
    long long n_completed;      /* forked tasks finished, any outcome, less the threads' own
                                   n_done (atomic; fw_stats_completed() gives the total) */
    long long n_spawned_spares, n_spare_failures;
    long long n_steals;         /* tasks taken from another thread's deque (atomic) */
    long long n_helped;         /* tasks a wait ran for its own subtree (atomic) */
    fw_thread *registry;        /* every fw_thread (sleep lock) */
    /* Read by every fork and wait, written only around GIL-free tasks: a
     * cache line of its own, away from the counters that every task writes. */
    fw_node *deferred __attribute__((aligned(64)));  /* GIL-free tasks a worker completed
                                   without the GIL, until a thread with the GIL releases
                                   their references (a Treiber stack; atomic) */
    int n_kernels __attribute__((aligned(64)));  /* GIL-free calls running now (atomic) */
    int n_kernels_out;          /* of those, run by threads outside the pool (atomic) */
    long long n_gil_free;       /* GIL-free calls run (atomic) */
    pthread_key_t thread_key;   /* frees a thread's fw_thread when it ends */
    char slot_alive[FW_MAX_INTEROP];
    char slot_used[FW_MAX_SLOTS];
    fw_queue deques[FW_MAX_SLOTS];
} fw_pool;

/* The Future that embeds a node: the node's address less its offset in
 * the object (set once at import), so no field is set per Future for it. */
static Py_ssize_t fw_node_offset = 0;
#define FW_FUT_OF(n) ((PyObject *)((char *)(n) - fw_node_offset))

static fw_pool fw_P;

/* Thread-local state. */
static __thread fw_thread *fw_me = NULL;
static __thread int fw_slot = -1;            /* deque slot of a pool thread; -1 elsewhere */
static __thread PyObject *fw_cur_fut = NULL; /* innermost task running in this thread (borrowed) */
static __thread int fw_task_depth = 0;       /* tasks running in this thread now, nested */

/* A count that only the calling thread writes: a plain add, readable by others. */
static inline void fw_own_add(long long *p, long long v) {
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static void fw_thread_free(void *p) {
    fw_thread *t = (fw_thread *)p;
    pthread_mutex_lock(&fw_P.sleep_lock);
    FW_ADD(&fw_P.n_running, __atomic_load_n(&t->n_run, __ATOMIC_RELAXED));
    FW_ADD(&fw_P.n_completed, __atomic_load_n(&t->n_done, __ATOMIC_RELAXED));
    if (t->reg_prev) t->reg_prev->reg_next = t->reg_next; else fw_P.registry = t->reg_next;
    if (t->reg_next) t->reg_next->reg_prev = t->reg_prev;
    pthread_mutex_unlock(&fw_P.sleep_lock);
    free(t);
}

/* This thread's record, registered on first use. Never called with a queue
 * lock held (it may take the sleep lock). NULL only when out of memory. */
static inline fw_thread *fw_me_get(void) {
    fw_thread *t = fw_me;
    if (t != NULL) return t;
    t = (fw_thread *)calloc(1, sizeof(fw_thread));
    if (t == NULL) return NULL;
    pthread_mutex_lock(&fw_P.sleep_lock);
    t->reg_next = fw_P.registry;
    if (fw_P.registry) fw_P.registry->reg_prev = t;
    fw_P.registry = t;
    pthread_mutex_unlock(&fw_P.sleep_lock);
    pthread_setspecific(fw_P.thread_key, t);
    fw_me = t;
    return t;
}
static inline int fw_get_slot(void) { return fw_slot; }
static inline void fw_set_slot(int s) { fw_slot = s; }
static inline PyObject *fw_get_cur(void) { return fw_cur_fut; }
static inline void fw_set_cur(PyObject *f) { fw_cur_fut = f; }

/* ------------------------------------------------------------ clock */
static inline double fw_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void fw_deadline_ts(double deadline, struct timespec *ts) {
    ts->tv_sec = (time_t)deadline;
    ts->tv_nsec = (long)((deadline - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) { ts->tv_sec += 1; ts->tv_nsec -= 1000000000L; }
    if (ts->tv_nsec < 0) ts->tv_nsec = 0;
}

/* ------------------------------------------------------------ init and fork */
static void fw_cond_init(pthread_cond_t *c) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}

static void fw_locks_init(void) {
    int i, n = fw_P.n_slots;
    pthread_mutex_init(&fw_P.sleep_lock, NULL);
    pthread_mutex_init(&fw_P.cb_lock, NULL);
    fw_cond_init(&fw_P.work_cond);
    fw_cond_init(&fw_P.done_cond);
    pthread_mutex_init(&fw_P.inject.lock, NULL);
    for (i = 0; i < n; i++) pthread_mutex_init(&fw_P.deques[i].lock, NULL);
}

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

static int fw_cpu_count(void) {
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
#if defined(_SC_NPROCESSORS_ONLN)
    {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n > 0) return n > 1 << 20 ? 1 << 20 : (int)n;
    }
#endif
    return 1;
}

static int fw_sched_init(void) {
    memset(&fw_P, 0, sizeof(fw_P));
    fw_P.n_cpus = fw_cpu_count();
    if (pthread_key_create(&fw_P.thread_key, fw_thread_free) != 0) return -1;
    fw_P.target_workers = 1;
    fw_P.state = FW_POOL_IDLE;
    fw_P.n_slots = 0;
    fw_locks_init();
    return 0;
}

/* ------------------------------------------------------------ queues */
static inline void fw_q_link_tail(fw_queue *q, fw_node *n) {
    n->prev = q->tail;
    n->next = NULL;
    if (q->tail) q->tail->next = n; else q->head = n;
    q->tail = n;
    n->queue = q;
    if (n->gil_free != NULL) FW_ADD(&q->n_gil_free_queued, 1);
    FW_ADD(&q->len, 1);
}

static inline void fw_q_unlink(fw_queue *q, fw_node *n) {
    if (n->prev) n->prev->next = n->next; else q->head = n->next;
    if (n->next) n->next->prev = n->prev; else q->tail = n->prev;
    n->prev = n->next = NULL;
    n->queue = NULL;
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
    __atomic_store_n(&n->state, FW_RUNNING, __ATOMIC_RELEASE);
    n->runner = fw_me;
    n->outer = fw_me->top;
    fw_me->top = n;
    n->on_pool = fw_slot >= 0 && fw_slot < FW_MAX_INTEROP;  /* a worker (spares are never joined) */
    fw_own_add(&fw_me->n_run, 1);
    if (n->on_pool) FW_ADD(&fw_P.n_running_pool, 1);
}

/* Claim one particular queued node (a wait on it, a cancel). The node is
 * unlinked and moved to `to_state` (RUNNING or CANCELLED). 1 on success. */
static inline int fw_claim_node(fw_node *n, int to_state) {
    fw_queue *q = __atomic_load_n(&n->queue, __ATOMIC_ACQUIRE);
    int ok = 0;
    if (q == NULL) return 0;
    if (to_state == FW_RUNNING && fw_me_get() == NULL) return 0;
    pthread_mutex_lock(&q->lock);
    if (n->queue == q && FW_LOAD(&n->state) == FW_PENDING) {
        fw_q_unlink(q, n);
        if (to_state == FW_RUNNING) fw_mark_running(n);
        else FW_STORE(&n->state, to_state);
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
 * Ancestors stay alive while `n` is queued (each Future holds its parent);
 * the caller holds the GIL, which keeps a finishing ancestor from dropping
 * its parent meanwhile. */
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
#if defined(__x86_64__) || defined(__i386__)
        else __builtin_ia32_pause();
#endif
    }
    /* Finished GIL-free tasks whose references nobody has released yet: the
     * caller takes the GIL for them (returns 2) once this thread has slept
     * FW_DEFER_S without work and they are still there. Not at once: every
     * wait releases them too, and a worker that queues for the GIL while the
     * forking thread runs Python is neither searching nor asleep (a fork then
     * wakes another thread for its work), and when it gets the GIL it may
     * preempt that thread on its CPU (seen: a 30 us stall of a 58 us pair). */
    double defer_until = fw_any_deferred() ? fw_now() + FW_DEFER_S : -1.0;
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
        pthread_cond_wait(&fw_P.work_cond, &fw_P.sleep_lock);
    }
}

static inline void fw_searching_done(void) { FW_ADD(&fw_P.searching, -1); }

/* ------------------------------------------------------------ GIL-free tasks */
/* A worker finished a GIL-free task without the GIL: the Future's Python-side
 * release (its queue reference, the call's arguments) waits here for a thread
 * that holds the GIL. take_all swaps the whole stack out, so no ABA. */
static inline void fw_defer_push(fw_node *n) {
    /* `next` links it: a finished node is in no queue */
    fw_node *head = __atomic_load_n(&fw_P.deferred, __ATOMIC_RELAXED);
    do {
        n->next = head;
    } while (!__atomic_compare_exchange_n(&fw_P.deferred, &head, n, 1,
                                          __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

static inline fw_node *fw_defer_take_all(void) {
    if (__atomic_load_n(&fw_P.deferred, __ATOMIC_RELAXED) == NULL) return NULL;
    return __atomic_exchange_n(&fw_P.deferred, NULL, __ATOMIC_ACQUIRE);
}

static inline int fw_any_deferred(void) {
    return __atomic_load_n(&fw_P.deferred, __ATOMIC_RELAXED) != NULL;
}

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
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
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

/* Move a RUNNING task or a PENDING hand-made future to a final state, once.
 * 1 on success (the caller then wakes waiters and runs callbacks). */
static inline int fw_settle(fw_node *n, int final_state, int from_running) {
    int expected = from_running ? FW_RUNNING : FW_PENDING;
    if (!__atomic_compare_exchange_n(&n->state, &expected, final_state, 0,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        if (!from_running && final_state != FW_CANCELLED) {
            expected = FW_RUNNING;  /* set_running_or_notify_cancel() was called */
            if (!n->is_task && __atomic_compare_exchange_n(&n->state, &expected, final_state, 0,
                                                           __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
                return 1;
        }
        return 0;
    }
    if (from_running) {
        if (n->runner != NULL && n->runner->top == n) n->runner->top = n->outer;
        n->outer = NULL;
        if (fw_me != NULL) fw_own_add(&fw_me->n_run, -1);
        else FW_ADD(&fw_P.n_running, -1);
        if (n->on_pool) FW_ADD(&fw_P.n_running_pool, -1);
        n->on_pool = 0;
        n->runner = NULL;
    }
    if (n->is_task) {
        if (fw_me != NULL) fw_own_add(&fw_me->n_done, 1);
        else FW_ADD(&fw_P.n_completed, 1);
    }
    return 1;
}

static inline int fw_cas_state(fw_node *n, int from, int to) {
    int expected = from;
    return __atomic_compare_exchange_n(&n->state, &expected, to, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------------ slots */
/* A deque slot for a new pool thread (sleep lock held): workers use their
 * index, spares the first free slot above FW_MAX_INTEROP. -1: none. */
static inline int fw_slot_acquire(int want) {
    int s = want, ns;
    if (s < 0) {
        for (s = FW_MAX_INTEROP; s < FW_MAX_SLOTS; s++)
            if (!fw_P.slot_used[s]) break;
        if (s >= FW_MAX_SLOTS) return -1;
    }
    fw_P.slot_used[s] = 1;
    ns = FW_LOAD(&fw_P.n_slots);
    while (ns <= s) {
        pthread_mutex_init(&fw_P.deques[ns].lock, NULL);
        ns++;
    }
    FW_STORE(&fw_P.n_slots, ns);
    return s;
}

/* ------------------------------------------------------------ os.fork() child */
/* Totals for reports (sleep lock held). */
static inline long long fw_stats_running(void) {
    long long r = FW_LOAD(&fw_P.n_running);
    for (fw_thread *t = fw_P.registry; t != NULL; t = t->reg_next)
        r += __atomic_load_n(&t->n_run, __ATOMIC_RELAXED);
    return r;
}

static inline long long fw_stats_completed(void) {
    long long r = FW_LOAD(&fw_P.n_completed);
    for (fw_thread *t = fw_P.registry; t != NULL; t = t->reg_next)
        r += __atomic_load_n(&t->n_done, __ATOMIC_RELAXED);
    return r;
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

/* ------------------------------------------------------------ stack depth */
/* 1 when this thread is near RecursionError (GIL held): fewer than
 * `py_margin` Python frames left, or, on CPython 3.12 and 3.13, less than a
 * quarter of the separate count of C-level recursion, which every nested
 * fork/wait level uses too (the call of `wait` and the eval loop's entry:
 * two units of 1500 on 3.12, so without this check a chain of waits failed
 * with RecursionError there before the Python count reached its margin). */
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000
#  if defined(Py_C_RECURSION_LIMIT)
#    define FW_C_RECURSION_LIMIT Py_C_RECURSION_LIMIT
#  elif defined(C_RECURSION_LIMIT)
#    define FW_C_RECURSION_LIMIT C_RECURSION_LIMIT
#  else
#    define FW_C_RECURSION_LIMIT 1500
#  endif
#endif
static inline int fw_recursion_low(int py_margin) {
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030C0000
    if (ts->py_recursion_remaining < py_margin) return 1;
#  ifdef FW_C_RECURSION_LIMIT
    if (ts->c_recursion_remaining < FW_C_RECURSION_LIMIT / 4) return 1;
#  endif
    return 0;
#elif PY_VERSION_HEX >= 0x030B0000
    return ts->recursion_remaining < py_margin;
#else
    return Py_GetRecursionLimit() - ts->recursion_depth < py_margin;
#endif
}

static __thread char *fw_stack_lo = NULL;      /* this thread's stack: lowest address */
static __thread char *fw_stack_limit = NULL;   /* below it, the stack is low (NULL: unknown) */

/* Find this thread's stack once; the margin is `margin` bytes, at most a
 * quarter of the stack. */
static inline void fw_stack_probe(size_t margin) {
    fw_stack_lo = (char *)1;
    fw_stack_limit = NULL;
#if defined(__linux__) && defined(_GNU_SOURCE)
    {
        pthread_attr_t a;
        void *addr = NULL;
        size_t size = 0;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            if (pthread_attr_getstack(&a, &addr, &size) == 0 && addr != NULL) {
                fw_stack_lo = (char *)addr;
                fw_stack_limit = fw_stack_lo + (size / 4 < margin ? size / 4 : margin);
            }
            pthread_attr_destroy(&a);
        }
    }
#endif
}

/* 1 when less than the margin of C stack is left below this frame. An
 * address outside the thread's stack (another stack, as some coroutine
 * libraries use) or an unknown stack: 0. */
static inline int fw_stack_low(size_t margin) {
    char here = 0;
    char *volatile p = &here;
    if (fw_stack_lo == NULL) fw_stack_probe(margin);
    return fw_stack_limit != NULL && p >= fw_stack_lo && p < fw_stack_limit;
}

/* ------------------------------------------------------------ profiling */
static int fw_prof_on = 0;
static __thread long long fw_cur_task = 0;   /* profiling id of the task running here */
static __thread double fw_wait_acc = 0.0;    /* seconds it spent blocked in waits */

static inline void fw_lock(pthread_mutex_t *m) { pthread_mutex_lock(m); }
static inline void fw_unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

#endif
