/* The BLAS limiter: one place that changes the thread count of the process's
 * BLAS libraries (OpenBLAS, MKL, BLIS: what threadpoolctl calls "blas"), for
 * two reasons that may overlap in time:
 *
 *  - pins: ops.matmul calls its BLAS single-threaded from every member of
 *    its OpenMP team, so while a matmul runs that library's count is 1; a
 *    matmul alone on its library with a team of T >= 2 threads may instead
 *    take a "wide" pin and hand the whole product to the BLAS with T threads
 *    (fw_blas_pin_wide: granted only while no other pin is held there);
 *  - the budget: while several forked tasks run at once, each library's count
 *    is at most max(1, cpus / running tasks), so that tasks x BLAS threads
 *    stay within the CPUs (joblib's inner_max_num_threads, applied while the
 *    tasks run rather than per worker process). Off unless enabled.
 *
 * Both go through one lock and one record per library: the count the user
 * had (`base`, read when the first constraint begins, re-read if the user
 * changed the count meanwhile) and the count applied now. The limit is always
 * recomputed from the state, never saved and restored around a call, so two
 * overlapping reasons cannot leave a library pinned (a save/restore pair per
 * reason would: the second saver saves the first one's 1).
 *
 * "Running" means executing task code: a task blocked in a wait does not
 * count (the pool calls fw_blas_tasks(-1) before it sleeps, +1 after), and a
 * task run inline by a waiting task does not count twice (only a thread's
 * outermost task counts).
 *
 * os.fork(): the child calls nothing of a library's while it is inside
 * fork() (fw_blas_atfork_child only resets forkwait's own state). OpenBLAS's
 * before-fork handler stops its thread server, and the next call that needs
 * the server (a count change, a threaded call) starts it again under
 * OpenBLAS's server_lock; a forkwait thread doing that at the moment of the
 * fork leaves that lock held for good in the child, where any such call
 * then blocks for ever. So the child brings the counts back to the user's
 * later, at its first BLAS step (fw_blas_after_fork: its first matmul, pin
 * or budget change), and never again calls a library that a forkwait thread
 * was inside at the fork (a count change under way, or a wide pin: a
 * threaded call): that library is "stranded" in the child, left at the
 * count it had, and ops.matmul calls the others (or its own kernel).
 *
 * Compiled into _blas only; everyone else calls it through _blas.pxd. */
#ifndef FW_BLAS_H
#define FW_BLAS_H

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <string.h>

#include "_fw_atomic.h"
#include "_fw_blas_gemm.h"  /* fw_blas_set_t, fw_blas_get_t */

#define FW_BLAS_MAX_LIBS 8

typedef struct {
    fw_blas_set_t set;
    fw_blas_get_t get;
    char name[24];        /* "openblas", "mkl", "blis" */
    char path[200];
    int pins;             /* ops.matmul calls running on this library, 1 thread */
    int wide;             /* ... with a wide pin (0 or 1) */
    int wide_n;           /* its thread count */
    int active;           /* base below is valid: a constraint is applied */
    int base;             /* the user's count */
    int applied;          /* the count set by us */
    int inside;           /* a set() of ours is under way (read by a fork child) */
    int stranded;         /* fork child: we were inside it at the fork; never call it */
} fw_blas_lib;

static pthread_mutex_t fw_blas_lock = PTHREAD_MUTEX_INITIALIZER;
static fw_blas_lib fw_blas_libs[FW_BLAS_MAX_LIBS];
static int fw_blas_nlibs = 0;
static int fw_blas_budget_on = 0;       /* read without the lock: a hint */
static int fw_blas_cpus = 1;
static int fw_blas_running = 0;         /* threads running task code now */
static int fw_blas_cur_limit = 0;       /* the budget's limit applied now; 0: none */
static unsigned long long fw_blas_adds = (unsigned long long)-1; /* dlpi_adds at last scan */
static unsigned long long fw_blas_changes = 0;  /* set() calls made (tests, profile) */

static inline void fw_blas_lock_acquire(void) { pthread_mutex_lock(&fw_blas_lock); }
static inline void fw_blas_lock_release(void) { pthread_mutex_unlock(&fw_blas_lock); }

/* the per-library limit of the budget now; 0: none */
static inline int fw_blas_budget_limit(void) {
    int r = FW_LOAD(&fw_blas_running);
    if (!fw_blas_budget_on || r < 2) return 0;
    r = fw_blas_cpus / r;
    return r < 1 ? 1 : r;
}

/* Bring one library to the limit its constraints ask for (lock held). */
static void fw_blas_apply(fw_blas_lib *L, int budget) {
    int target, now;
    int constrained = L->pins > 0 || L->wide > 0 || budget > 0;
    if (L->stranded) return;
    if (!L->active) {
        if (!constrained) return;
        L->base = L->get();
        L->applied = L->base;
        L->active = 1;
    } else {
        now = L->get();
        if (now != L->applied) {      /* the user changed it meanwhile: theirs */
            L->base = now;
            L->applied = now;
        }
    }
    target = L->base;
    if (L->wide > 0) target = L->wide_n;  /* forkwait's team size, not the user's count */
    if (budget > 0 && budget < target) target = budget;
    if (L->pins > 0) target = 1;
    if (target != L->applied) {
        /* a fork from here to the store of 0 strands L in the child: the
         * library's lock may be held there, and the record may not yet say
         * what the library's count is */
        FW_STORE(&L->inside, 1);
        L->set(target);
        L->applied = target;
        fw_blas_changes++;
        if (!constrained) L->active = 0;  /* back at base: forget it */
        FW_STORE(&L->inside, 0);
        return;
    }
    if (!constrained) L->active = 0;
}

static void fw_blas_apply_all(void) {
    int i, budget = fw_blas_cur_limit;
    for (i = 0; i < fw_blas_nlibs; i++) fw_blas_apply(&fw_blas_libs[i], budget);
}

/* Add a library unless known (lock held). Returns its index or -1. */
static int fw_blas_add(void *set, void *get, const char *name, const char *path) {
    int i;
    fw_blas_lib *L;
    if (set == NULL || get == NULL) return -1;
    for (i = 0; i < fw_blas_nlibs; i++)
        if ((void *)fw_blas_libs[i].set == set) return i;
    if (fw_blas_nlibs == FW_BLAS_MAX_LIBS) return -1;
    L = &fw_blas_libs[fw_blas_nlibs];
    memset(L, 0, sizeof *L);
    L->set = (fw_blas_set_t)set;
    L->get = (fw_blas_get_t)get;
    strncpy(L->name, name, sizeof L->name - 1);
    if (path) strncpy(L->path, path, sizeof L->path - 1);
    return fw_blas_nlibs++;
}

/* The symbol pairs threadpoolctl knows for the BLAS libraries it controls. */
static const char *fw_blas_syms[][3] = {
    {"openblas", "openblas_set_num_threads", "openblas_get_num_threads"},
    {"openblas", "openblas_set_num_threads64_", "openblas_get_num_threads64_"},
    {"openblas", "scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"},
    {"openblas", "scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"},
    {"mkl", "MKL_Set_Num_Threads", "MKL_Get_Max_Threads"},
    {"blis", "bli_thread_set_num_threads", "bli_thread_get_num_threads"},
};

#define FW_BLAS_MAX_PATHS 16
static char fw_blas_paths[FW_BLAS_MAX_PATHS][200];
static int fw_blas_npaths;

/* dl_iterate_phdr callback: note the paths that may be a BLAS (named as
 * threadpoolctl's filename filters name them); dlopen comes after the walk */
static int fw_blas_note_path(struct dl_phdr_info *info, size_t size, void *data) {
    const char *path = info->dlpi_name, *base;
    (void)size;
    (void)data;
    if (path == NULL || path[0] == '\0' || fw_blas_npaths == FW_BLAS_MAX_PATHS) return 0;
    base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strstr(base, "openblas") == NULL && strncmp(base, "libmkl_rt", 9) != 0 &&
        strncmp(base, "libblis", 7) != 0)
        return 0;
    if (strlen(path) >= sizeof fw_blas_paths[0]) return 0;
    strcpy(fw_blas_paths[fw_blas_npaths++], path);
    return 0;
}

static void fw_blas_add_from(const char *path) {
    size_t k;
    void *h, *s, *g;
    Dl_info di;
    h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL) return;
    for (k = 0; k < sizeof fw_blas_syms / sizeof fw_blas_syms[0]; k++) {
        s = dlsym(h, fw_blas_syms[k][1]);
        g = dlsym(h, fw_blas_syms[k][2]);
        /* dlsym searches the library's dependencies too: keep a pair only
         * if it is this library's own */
        if (s != NULL && g != NULL && dladdr(s, &di) != 0 && di.dli_fname != NULL &&
            strcmp(di.dli_fname, path) == 0)
            fw_blas_add(s, g, fw_blas_syms[k][0], path);
    }
    dlclose(h);
}

static int fw_blas_adds_of(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    *(unsigned long long *)data = info->dlpi_adds;
    return 1;  /* the first entry carries the process-wide count */
}

/* Find the BLAS libraries loaded now (lock held); cheap when nothing was
 * loaded since the last scan. */
static void fw_blas_scan(void) {
    unsigned long long adds = 0;
    int i;
    dl_iterate_phdr(fw_blas_adds_of, &adds);
    if (adds == fw_blas_adds) return;
    fw_blas_adds = adds;
    fw_blas_npaths = 0;
    dl_iterate_phdr(fw_blas_note_path, NULL);
    for (i = 0; i < fw_blas_npaths; i++) fw_blas_add_from(fw_blas_paths[i]);
}

/* The pool: `delta` threads began (+1) or stopped (-1) running task code.
 * The count is kept always (one atomic add: the budget can be turned on
 * while tasks run); the lock is taken only while the budget is on. */
static inline void fw_blas_tasks(int delta) {
    int limit;
    FW_ADD(&fw_blas_running, delta);
    if (!FW_LOAD(&fw_blas_budget_on)) return;
    pthread_mutex_lock(&fw_blas_lock);
    limit = fw_blas_budget_limit();
    if (limit != fw_blas_cur_limit) {
        if (fw_blas_cur_limit == 0) fw_blas_scan();  /* a library loaded since? */
        fw_blas_cur_limit = limit;
        fw_blas_apply_all();
    }
    pthread_mutex_unlock(&fw_blas_lock);
}

/* Threads running task code now. */
static inline int fw_blas_running_now(void) {
    return FW_LOAD(&fw_blas_running);
}

/* ops.matmul: pin library `lib` to 1 thread (+1) or release the pin (-1). */
static inline void fw_blas_pin(int lib, int delta) {
    if (lib < 0) return;
    pthread_mutex_lock(&fw_blas_lock);
    fw_blas_libs[lib].pins += delta;
    fw_blas_apply(&fw_blas_libs[lib], fw_blas_cur_limit);
    pthread_mutex_unlock(&fw_blas_lock);
}

/* ops.matmul with a team of n >= 2 threads: library `lib` at n threads for
 * one call, granted only when no other pin (1-thread or wide) is held on it,
 * at most the budget's limit. Returns the count granted (release it with
 * fw_blas_unpin_wide), or 0: nothing taken, split the product instead. A
 * 1-thread pin taken meanwhile still brings the count to 1 (a GEMM already
 * running keeps its threads). */
static inline int fw_blas_pin_wide(int lib, int n) {
    fw_blas_lib *L;
    int limit;
    if (lib < 0) return 0;
    pthread_mutex_lock(&fw_blas_lock);
    L = &fw_blas_libs[lib];
    limit = fw_blas_cur_limit;
    if (limit > 0 && n > limit) n = limit;
    if (n < 2 || L->pins > 0 || L->wide > 0 || L->stranded) {
        pthread_mutex_unlock(&fw_blas_lock);
        return 0;
    }
    L->wide = 1;
    L->wide_n = n;
    fw_blas_apply(L, limit);
    pthread_mutex_unlock(&fw_blas_lock);
    return n;
}

static inline void fw_blas_unpin_wide(int lib) {
    if (lib < 0) return;
    pthread_mutex_lock(&fw_blas_lock);
    fw_blas_libs[lib].wide = 0;
    fw_blas_apply(&fw_blas_libs[lib], fw_blas_cur_limit);
    pthread_mutex_unlock(&fw_blas_lock);
}

/* ops.matmul: pin to 1 thread whichever of the n libraries `libs` (limiter
 * indices; -1 skipped) is least used by matmuls now (1-thread pins, plus a
 * wide pin's thread count; the first on a tie). Returns its position in
 * `libs` (release with fw_blas_pin(libs[i], -1)), or -1 if none. So two
 * matmuls running at once call two different OpenBLAS libraries where two
 * are loaded (NumPy's and a second copy): measured on Zen 1, two threads calling one
 * OpenBLAS's single-threaded sgemm at once run 1.4-4x slower each, two
 * threads calling two copies do not (docs/performance.md). */
static inline int fw_blas_pin_least(const int *libs, int n) {
    int i, best = -1, load, best_load = 0;
    fw_blas_lib *L;
    pthread_mutex_lock(&fw_blas_lock);
    for (i = 0; i < n; i++) {
        if (libs[i] < 0 || fw_blas_libs[libs[i]].stranded) continue;
        L = &fw_blas_libs[libs[i]];
        load = L->pins + (L->wide ? L->wide_n : 0);
        if (best < 0 || load < best_load) {
            best = i;
            best_load = load;
        }
    }
    if (best >= 0) {
        L = &fw_blas_libs[libs[best]];
        L->pins++;
        fw_blas_apply(L, fw_blas_cur_limit);
    }
    pthread_mutex_unlock(&fw_blas_lock);
    return best;
}

/* Turn the budget on or off. */
static void fw_blas_set_budget(int on, int cpus) {
    pthread_mutex_lock(&fw_blas_lock);
    if (on) fw_blas_scan();
    fw_blas_cpus = cpus < 1 ? 1 : cpus;
    FW_STORE(&fw_blas_budget_on, on);
    fw_blas_cur_limit = fw_blas_budget_limit();
    fw_blas_apply_all();
    pthread_mutex_unlock(&fw_blas_lock);
}

/* os.fork() child (the pool's pthread_atfork child handler, through
 * blas_atfork_child): only the forking thread exists, no task runs and no
 * matmul is under way. forkwait's own state only: the lock is made anew, no
 * pin, wide pin or budget is left; a library we were inside at the fork is
 * stranded. Calls nothing of any library's. Returns 1 when something is
 * left for fw_blas_after_fork: a count of ours to undo, a stranded library. */
static int fw_blas_atfork_child(void) {
    int i, todo = 0;
    fw_blas_lib *L;
    pthread_mutex_init(&fw_blas_lock, NULL);
    FW_STORE(&fw_blas_running, 0);
    fw_blas_cur_limit = 0;
    for (i = 0; i < fw_blas_nlibs; i++) {
        L = &fw_blas_libs[i];
        if (FW_LOAD(&L->inside) || L->wide) L->stranded = 1;
        L->inside = 0;
        L->pins = 0;
        L->wide = 0;
        if (L->active || L->stranded) todo = 1;
    }
    return todo;
}

/* The child's first BLAS step (lock held): every library that is not
 * stranded back at the count its constraints ask for now (none is left from
 * the parent: the user's count, unless a pin or the budget of the child's
 * own has begun). No forkwait call was inside these libraries at the fork,
 * so their server_lock is free. */
static void fw_blas_after_fork(void) {
    fw_blas_apply_all();
}

#endif
