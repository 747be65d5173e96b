/* Process-wide intra-op state. Included by _team.pyx only: other modules
 * reach it through the cdef functions that _team.pxd exports, so there is
 * exactly one copy of each variable in the process. */
#ifndef FORKWAIT_FW_TEAM_STATE_H
#define FORKWAIT_FW_TEAM_STATE_H

#include "_fw_atomic.h"

/* Per-thread intra-op override set by `with forkwait.num_threads(n)`; 0: none. */
static __thread int fw_local_threads = 0;
/* Process-wide intra-op team size (set_num_threads). */
static int fw_global_threads = 1;
/* CPUs this process may use; the budget that concurrent kernels share. */
static int fw_cpu_budget = 1;
/* Threads running forked task code now (the pool counts them, as it does for
 * the BLAS budget; a task blocked in a wait does not count). */
static int fw_team_tasks = 0;
/* OpenMP threads held by kernels running now (shared mode accounting). */
static int fw_busy_threads = 0;
/* 0: shared (no oversubscription), 1: fixed (torch-like). */
static int fw_mode = 0;
/* Nesting of kernels on this thread (a kernel called from inside a kernel). */
static __thread int fw_kernel_depth = 0;
/* GCC bug 60035 (docs/reliability.md): fw_ran_team is set once this thread
 * has started an OpenMP team of more than one thread (libgomp then keeps a
 * thread pool for it). In the child of fork(), the forking thread's pool refers
 * to threads that the child does not have, and its next parallel region hangs:
 * the at-fork handler sets fw_team_serial there, and team_begin returns 1 in
 * that thread from then on. Other threads of the child are not affected. */
static __thread int fw_ran_team = 0;
static __thread int fw_team_serial = 0;
/* Team size of the last kernel this thread started (read by the profiler). */
static __thread int fw_last_team = 0;


#endif
