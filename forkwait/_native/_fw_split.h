/* The parallel region of every chunked kernel (run_chunked in _fw_common.pxd):
 * n items dealt out in chunks to a team, each thread first taking the chunks
 * of its own contiguous share, in order, then helping with the others'.
 *
 * Why not OpenMP's schedule(dynamic) (what run_chunked used before): with one
 * shared counter, which thread gets which chunk changes from call to call, so
 * a chain of kernels over the same arrays (gelu, then layer_norm, then tanh
 * of its result) read, on each core, data that the other core had just
 * written, from the other core's cache; and every chunk's claim was an atomic
 * add on a line that moves between the cores. Here the shares are the same
 * in every kernel of a given size (thread t owns the t-th contiguous block
 * of chunks, what a static split gives, as ATen's parallel_for does), so
 * consecutive kernels find their input in their own core's cache; each
 * thread claims chunks on a counter of its own (its own cache line); and a
 * thread that the OS takes off its CPU still leaves its unclaimed chunks to
 * the others, as the dynamic schedule did. One barrier (the region's end), not
 * two (Cython's prange adds the loop's).
 *
 * Which thread computes a chunk never changes a value: a chunk is a run of
 * whole items with the same start and stop whatever the team (chunk starts
 * are multiples of 16 elements for the element-wise kernels: see
 * chunk_items), so results are the same bits at any thread count. */
#ifndef FORKWAIT_FW_SPLIT_H
#define FORKWAIT_FW_SPLIT_H

#include <stdlib.h>

#include "_fw_atomic.h"
#include "_openmp_helpers.h"

typedef void (*fw_split_body)(void *ctx, Py_ssize_t start, Py_ssize_t stop);

/* One thread's share of the chunks: [next, stop), claimed from the front. */
typedef struct {
    Py_ssize_t next;
    Py_ssize_t stop;
} __attribute__((aligned(64))) fw_share;

#define FW_SPLIT_STACK_TEAM 64 /* larger teams put their shares on the heap */

/* Claim and run the chunks of share s until none is left. */
static inline void fw_split_drain(fw_share *s, fw_split_body body, void *ctx, Py_ssize_t n,
                                  Py_ssize_t chunk) {
    Py_ssize_t c, start;
    while (FW_LOAD_RLX(&s->next) < s->stop) {
        c = FW_FETCH_ADD_RLX(&s->next, 1);
        if (c >= s->stop) break;
        start = c * chunk;
        body(ctx, start, start + chunk < n ? start + chunk : n);
    }
}

/* body(ctx, start, stop) over [0, n) in chunks of `chunk` items, on a team
 * of `team` threads (team >= 2; fewer if OpenMP gives fewer: the shares of
 * threads that do not exist are taken by the others). */
static void fw_split_run(fw_split_body body, void *ctx, Py_ssize_t n, Py_ssize_t chunk,
                         int team) {
    Py_ssize_t nchunks = (n + chunk - 1) / chunk;
    fw_share stack_shares[FW_SPLIT_STACK_TEAM];
    fw_share *shares = stack_shares;
    int t;
    if (team > nchunks) team = (int)nchunks;
    if (team > FW_SPLIT_STACK_TEAM) {
        shares = (fw_share *)aligned_alloc(64, sizeof(fw_share) * (size_t)team);
        if (shares == NULL) { /* no memory for the shares: run on this thread */
            body(ctx, 0, n);
            return;
        }
    }
    for (t = 0; t < team; t++) {
        shares[t].next = nchunks * t / team;
        shares[t].stop = nchunks * (t + 1) / team;
    }
#if FW_HAVE_OPENMP
    #pragma omp parallel num_threads(team)
    {
        int k, me = omp_get_thread_num();
        /* its own share first, then the others' in turn from the next one */
        for (k = 0; k < team; k++)
            fw_split_drain(&shares[(me + k) % team], body, ctx, n, chunk);
    }
#else
    for (t = 0; t < team; t++) fw_split_drain(&shares[t], body, ctx, n, chunk);
#endif
    if (shares != stack_shares) free(shares);
}

/* (Benchmarks) An empty region of libgomp's alone: the floor under any team. */
static inline void fw_omp_empty_region(int team) {
#if FW_HAVE_OPENMP
    #pragma omp parallel num_threads(team)
    { __asm__ __volatile__("" ::: "memory"); }
#else
    (void)team;
#endif
}

#endif
