/* CPU tokens for the shared intra-op mode. Included by _team.pyx only, so
 * there is one copy of this state in the process.
 *
 * The process has fw_cpu_budget tokens (the CPUs it may use). A parallel
 * kernel takes between 1 and the team size it wants, never more than are
 * free. When none is free it runs on its caller's thread alone (default), or,
 * with fw_team_nowait = 0, waits (blocked on a condition variable, not
 * spinning); waiting kernels then have precedence over new ones and split
 * the freed tokens between them.
 * Serial kernels (below the grain size, nested, one thread asked) take no
 * token: they run on the caller's thread, like the Python code around them.
 */
#ifndef FORKWAIT_FW_TEAM_H
#define FORKWAIT_FW_TEAM_H

#include <pthread.h>

static pthread_mutex_t fw_team_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fw_team_cond = PTHREAD_COND_INITIALIZER;
static int fw_team_waiting = 0;          /* kernels blocked for a token */
static __thread int fw_tokens_held = 0;  /* tokens of this thread's kernel */
/* 1 (default): a kernel that finds no free token runs at once on its
   caller's thread (holding one token) instead of waiting: measured faster
   (bench/ops_ratios.py branches), at the cost of one extra thread per such
   kernel until the teams already running finish. 0: wait for a token. */
static int fw_team_nowait = 1;

static inline int fw_sc_load(const int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

/* Take between 1 and want tokens out of budget (busy counts those taken). */
static int fw_team_acquire(int *busy, const int *budget, int want) {
    int b, avail, team, share;
    if (fw_sc_load(&fw_team_waiting) == 0) {            /* fast path */
        b = fw_sc_load(busy);
        avail = fw_sc_load(budget) - b;
        while (avail >= 1 && fw_sc_load(&fw_team_waiting) == 0) {
            team = want < avail ? want : avail;
            if (__atomic_compare_exchange_n(busy, &b, b + team, 0, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST))
                return team;
            avail = fw_sc_load(budget) - b;
        }
    }
    if (fw_team_nowait) {
        __atomic_add_fetch(busy, 1, __ATOMIC_SEQ_CST);
        return 1;
    }
    pthread_mutex_lock(&fw_team_lock);
    __atomic_add_fetch(&fw_team_waiting, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        b = fw_sc_load(busy);
        avail = fw_sc_load(budget) - b;
        if (avail >= 1) {
            share = avail / fw_sc_load(&fw_team_waiting);
            team = share < 1 ? 1 : share;
            team = want < team ? want : team;
            if (__atomic_compare_exchange_n(busy, &b, b + team, 0, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST))
                break;
            continue;
        }
        pthread_cond_wait(&fw_team_cond, &fw_team_lock);
    }
    __atomic_sub_fetch(&fw_team_waiting, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&fw_team_lock);
    return team;
}

static void fw_team_release(int *busy, int tokens) {
    __atomic_sub_fetch(busy, tokens, __ATOMIC_SEQ_CST);
    if (fw_sc_load(&fw_team_waiting) > 0) {
        pthread_mutex_lock(&fw_team_lock);
        pthread_cond_broadcast(&fw_team_cond);
        pthread_mutex_unlock(&fw_team_lock);
    }
}

/* After os.fork() only the forking thread exists: no kernel runs, none waits. */
static void fw_team_atfork_child(void) {
    pthread_mutex_init(&fw_team_lock, NULL);
    pthread_cond_init(&fw_team_cond, NULL);
    fw_team_waiting = 0;
    fw_tokens_held = 0;
}

#endif
