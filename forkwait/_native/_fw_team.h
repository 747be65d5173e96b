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

#include "_fw_atomic.h"

static pthread_mutex_t fw_team_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fw_team_cond = PTHREAD_COND_INITIALIZER;
static int fw_team_waiting = 0;          /* kernels blocked for a token */
static __thread int fw_tokens_held = 0;  /* tokens of this thread's kernel */
/* 1 (default): a kernel that finds no free token runs at once on its
   caller's thread (holding one token) instead of waiting: measured faster
   (bench/ops_ratios.py branches), at the cost of one extra thread per such
   kernel until the teams already running finish. 0: wait for a token. */
static int fw_team_nowait = 1;

/* Take between 1 and want tokens out of budget (busy counts those taken). */
static int fw_team_acquire(int *busy, const int *budget, int want) {
    int b, avail, team, share;
    if (FW_LOAD(&fw_team_waiting) == 0) {            /* fast path */
        b = FW_LOAD(busy);
        avail = FW_LOAD(budget) - b;
        while (avail >= 1 && FW_LOAD(&fw_team_waiting) == 0) {
            team = want < avail ? want : avail;
            if (FW_CAS(busy, &b, b + team))
                return team;
            avail = FW_LOAD(budget) - b;
        }
    }
    if (fw_team_nowait) {
        FW_ADD(busy, 1);
        return 1;
    }
    pthread_mutex_lock(&fw_team_lock);
    FW_ADD(&fw_team_waiting, 1);
    for (;;) {
        b = FW_LOAD(busy);
        avail = FW_LOAD(budget) - b;
        if (avail >= 1) {
            share = avail / FW_LOAD(&fw_team_waiting);
            team = share < 1 ? 1 : share;
            team = want < team ? want : team;
            if (FW_CAS(busy, &b, b + team))
                break;
            continue;
        }
        pthread_cond_wait(&fw_team_cond, &fw_team_lock);
    }
    FW_ADD(&fw_team_waiting, -1);
    pthread_mutex_unlock(&fw_team_lock);
    return team;
}

static void fw_team_release(int *busy, int tokens) {
    FW_ADD(busy, -tokens);
    if (FW_LOAD(&fw_team_waiting) > 0) {
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
