/* The inter-op pool's state: one struct, fw_P (queues, sleep state, counters,
 * the per-thread records), its locks and its clock. The other headers of
 * _pool/ hold what is done with it, one concept each; pool.pyx includes them
 * all into one translation unit (see the list there).
 *
 * Locking rules:
 *  - Nobody holding one of these mutexes waits for the GIL, runs Python code
 *    or allocates a Python object, so a GIL holder may take them at any time.
 *  - At most one queue lock is held at a time; the sleep lock may be held
 *    while taking a queue lock (never the other way round). cb_lock is a leaf.
 *  - os.fork(): see fork.h.
 */
#ifndef FORKWAIT_POOL_STATE_H
#define FORKWAIT_POOL_STATE_H

#include <Python.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <time.h>
#include <errno.h>
#include <string.h>
#include <stddef.h>
#include <stdlib.h>
#include "../_fw_atomic.h"
#include "../_fw_gil_free.h"

/* 1 on a free-threaded CPython (PEP 703, the GIL off): what leans on the GIL
 * elsewhere (the Future's free list, leaving futures out of the cyclic GC)
 * is off there, and what it guarded is locked or atomic (docs/freethreading.md). */
#ifdef Py_GIL_DISABLED
#define FW_FREE_THREADED 1
#else
#define FW_FREE_THREADED 0
#endif

#define FW_MAX_INTEROP 4096
#define FW_MAX_SPARES 2048
#define FW_MAX_SLOTS (FW_MAX_INTEROP + FW_MAX_SPARES)

/* Future states; the first two are "not done". */
enum { FW_PENDING = 0, FW_RUNNING = 1, FW_FINISHED = 2, FW_FAILED = 3, FW_CANCELLED = 4 };
/* a new (zeroed) Future is pending: FutureCore has no __cinit__ to set it */
_Static_assert(FW_PENDING == 0, "FW_PENDING must be 0");
/* A final state as concurrent.futures sees it (fw_node.cf_pub, complete.h). */
enum { FW_CF_UNDECIDED = 0, FW_CF_SEEN = 1, FW_CF_TO_PUBLISH = 2, FW_CF_PUBLISHED = 3 };
/* Pool states. */
enum { FW_POOL_IDLE = 0, FW_POOL_RUNNING = 1, FW_POOL_DRAINING = 2, FW_POOL_CLOSED = 3 };


struct fw_queue;
struct fw_thread;
struct fw_many;

typedef struct fw_node {
    /* first: the fields a pass over many futures reads (wait_all), next to
     * the object header and the Future's result (see FutureCore) */
    int state;                  /* atomic */
    int is_task;
    struct fw_node *prev, *next;
    struct fw_node *parent;     /* the task that forked it (the Future holds a reference) */
    struct fw_queue *queue;     /* the queue it is linked in, or NULL */
    struct fw_thread *runner;   /* while RUNNING: the thread that runs it (atomic) */
    int depth;                  /* 0: forked outside any task */
    int waiters;                /* threads sleeping until it is done (sleep lock) */
    int help_waiters;           /* of those, threads that would run its subtree (atomic) */
    int cf_watched;             /* concurrent.futures waiters may be installed (atomic) */
    int cf_pub;                 /* the final state as concurrent.futures sees it (FW_CF_*;
                                   atomic; see complete.h) */
    int cb_adders;              /* callbacks were ever added (atomic): while 0 the
                                   completer skips the callback lock (see _after_final) */
    struct fw_node *outer;      /* while RUNNING: the task beneath it on its thread */
    int live;                   /* a task: 1 while it is not done, plus 1 per forked child
                                   whose own `live` is not 0 yet (atomic). Its parent link
                                   stays until it reaches 0, whoever brings it there drops
                                   it (once): so every queued task's chain of ancestors
                                   stays whole for helpers that walk it (queue.h), and no
                                   ancestor on it is freed under a walker */
    int on_pool;                /* while RUNNING: counted in n_running_pool */
    long long mark;             /* a wait_all's token (help roots) */
    struct fw_many *many;       /* a collect_all future: the members it waits for (set at
                                   its making, freed with it; the cycle check reads it) */
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
    fw_node *waiting_on;        /* what it sleeps on in an untimed wait (sleep lock) */
    struct fw_many *waiting_many; /* ... in an untimed wait on many: the members (sleep lock) */
    fw_node *top;               /* changed under a queue lock (claim) or by the thread */
    struct fw_thread *reg_prev, *reg_next;
} fw_thread;

/* Futures that one wait, or one collect_all future, waits for: all of them
 * (wait_all, collect_all: `any` 0) or the first (wait_any, as_completed:
 * `any` 1). The members are borrowed: whoever made it keeps them alive. */
typedef struct fw_many {
    Py_ssize_t n;
    int any;
    fw_node *nodes[];
} fw_many;

static inline fw_many *fw_many_new(Py_ssize_t n, int any) {
    fw_many *m = (fw_many *)PyMem_RawMalloc(sizeof(fw_many) + (size_t)n * sizeof(fw_node *));
    if (m != NULL) { m->n = n; m->any = any; }
    return m;
}

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
    /* The intra-op side of an idle pool thread (set at import: _team's
     * team_held, team_release): does this thread keep an OpenMP team, and
     * give it back (sleep.h). */
    int (*team_held)(void);
    void (*team_release)(void);
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


static void fw_thread_free(void *p) {
    fw_thread *t = (fw_thread *)p;
    pthread_mutex_lock(&fw_P.sleep_lock);
    FW_ADD(&fw_P.n_running, FW_LOAD_RLX(&t->n_run));
    FW_ADD(&fw_P.n_completed, FW_LOAD_RLX(&t->n_done));
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
    /* (callers pass deadlines under threading.TIMEOUT_MAX from now; a larger
     * one would overflow time_t: clamped to about 30 years of seconds) */
    if (deadline > 1e9) deadline = 1e9;
    ts->tv_sec = (time_t)deadline;
    ts->tv_nsec = (long)((deadline - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) { ts->tv_sec += 1; ts->tv_nsec -= 1000000000L; }
    if (ts->tv_nsec < 0) ts->tv_nsec = 0;
}

/* ------------------------------------------------------------ locks and init */
static inline void fw_lock(pthread_mutex_t *m) { pthread_mutex_lock(m); }
static inline void fw_unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

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

/* Tasks queued in deque i now (a hint: no lock). */
static inline Py_ssize_t fw_deque_len(int i) { return FW_LOAD(&fw_P.deques[i].len); }

/* Tasks queued anywhere now: the injection queue and every deque (a hint: no lock). */
static inline Py_ssize_t fw_queued_hint(void) {
    Py_ssize_t q = FW_LOAD(&fw_P.inject.len);
    int i, ns = FW_LOAD(&fw_P.n_slots);
    for (i = 0; i < ns; i++) q += fw_deque_len(i);
    return q;
}

/* ------------------------------------------------------------ totals */
/* Totals for reports (sleep lock held). */
static inline long long fw_stats_running(void) {
    long long r = FW_LOAD(&fw_P.n_running);
    for (fw_thread *t = fw_P.registry; t != NULL; t = t->reg_next)
        r += FW_LOAD_RLX(&t->n_run);
    return r;
}

static inline long long fw_stats_completed(void) {
    long long r = FW_LOAD(&fw_P.n_completed);
    for (fw_thread *t = fw_P.registry; t != NULL; t = t->reg_next)
        r += FW_LOAD_RLX(&t->n_done);
    return r;
}

/* ------------------------------------------------------------ profiling */
static int fw_prof_on = 0;
static __thread long long fw_cur_task = 0;   /* profiling id of the task running here */
static __thread double fw_wait_acc = 0.0;    /* seconds it spent blocked in waits */

#endif
