/* PyTorch's intra-op threads in forked tasks: the torch budget.
 *
 * ATen's OpenMP parallel_for (and MKL and oneDNN inside torch) size their
 * team from the OpenMP ICV nthreads-var of the calling thread:
 * omp_get_max_threads() of the libgomp that libtorch_cpu is linked with. That
 * ICV is per thread. torch.set_num_threads(n) stores n process-wide and sets
 * the calling thread's ICV; any other thread takes n into its own ICV once,
 * at its first parallel call (at::internal::lazy_init_num_threads), and never
 * again (measured with torch 2.13, docs/pytorch.md). So a pool thread running
 * a forked eager branch runs torch's full team whatever else runs, and
 * branches running at once put tasks x torch threads on the CPUs.
 *
 * The budget: a thread beginning its outermost forked task (the pool's
 * workers and a waiting thread that runs a task inline) sets its own ICV, in
 * torch's libgomp, to min(cap, budget) for the task and puts it back after:
 *   - cap: torch's thread count in the thread that forked the task, read at
 *     the fork (at::get_num_threads(): the user's torch.set_num_threads or
 *     OMP_NUM_THREADS, else torch's default); a task forked by a budgeted
 *     task passes its own cap on;
 *   - budget: the BLAS budget's rule, over the same count of threads running
 *     task code (_fw_blas.h), plus the tasks queued that other pool threads
 *     may begin soon (at most the pool's size: the pool's estimate, passed
 *     in): none while one runs alone, max(1, cpus / r) while r do. Counting
 *     the queued tasks matters: a thread whose wait runs the first of four
 *     forked branches inline begins before the workers wake, and with the
 *     whole team it slowed the other branches' threads (measured: 6.4 ms
 *     instead of 2.9 for 4 branches of 4 x Linear(512) at B=64, 2 cores).
 * Only this thread's ICV changes (and, where torch has MKL, MKL's count for
 * this thread: mkl_set_num_threads_local), never torch's process-wide
 * setting; an OpenMP count the task sets itself (torch.set_num_threads inside
 * it) is left as it is.
 *
 * torch's libgomp is found the way _fw_blas.h finds BLAS libraries: the
 * loaded libtorch_cpu among dl_iterate_phdr's entries, dlopen RTLD_NOLOAD,
 * dlsym through its handle (which searches its dependencies: the libgomp it
 * was linked with, torch's own copy or one loaded before it under the same
 * name), at::get_num_threads in libtorch_cpu itself.
 *
 * Compiled into _blas only; the pool calls it through _blas.pxd. */
#ifndef FW_TORCH_H
#define FW_TORCH_H

#include <dlfcn.h>
#include <link.h>
#include <string.h>

#include "_fw_atomic.h"

typedef void (*fw_omp_set_t)(int);
typedef int (*fw_omp_get_t)(void);

static fw_omp_set_t fw_torch_omp_set;   /* torch's libgomp: omp_set_num_threads */
static fw_omp_get_t fw_torch_omp_get;   /* ... omp_get_max_threads */
static fw_omp_get_t fw_torch_at_get;    /* at::get_num_threads() (lazy init first) */
static fw_omp_get_t fw_torch_mkl_get;   /* torch's MKL, where it has one: mkl_get_max_threads */
static int (*fw_torch_mkl_local)(int);  /* ... mkl_set_num_threads_local (returns the old one) */
static int fw_torch_ready = 0;          /* the three above are set (atomic) */
static int fw_torch_on = 1;             /* the budget's switch (atomic) */
static unsigned long long fw_torch_tried_adds = (unsigned long long)-1;
static char fw_torch_lib[200];          /* libtorch_cpu's file */
static char fw_torch_gomp[200];         /* its libgomp's file */
static unsigned long long fw_torch_sets = 0; /* ICV changes made (tests, info; atomic) */

/* per thread: the task's cap, the count put back after it, the count set */
static __thread int fw_torch_task_cap = 0;
static __thread int fw_torch_saved = 0;
static __thread int fw_torch_applied = 0;
static __thread int fw_torch_mkl_saved = -1;  /* MKL's local count to put back; -1: none set */

static int fw_torch_adds_of(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    *(unsigned long long *)data = info->dlpi_adds;
    return 1;
}

static int fw_torch_note(struct dl_phdr_info *info, size_t size, void *data) {
    const char *path = info->dlpi_name, *base;
    (void)size;
    if (path == NULL || path[0] == '\0') return 0;
    base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, "libtorch_cpu.", 13) != 0 || strlen(path) >= 200) return 0;
    strcpy((char *)data, path);
    return 1;
}

/* Find torch's libgomp and at::get_num_threads (the caller holds the BLAS
 * limiter's lock). Returns 1 when found; looks again only once a library
 * was loaded since the last try. */
static int fw_torch_find(void) {
    unsigned long long adds = 0;
    char path[200] = "";
    void *h, *s, *g, *a;
    Dl_info di;
    if (FW_LOAD(&fw_torch_ready)) return 1;
    dl_iterate_phdr(fw_torch_adds_of, &adds);
    if (adds == fw_torch_tried_adds) return 0;
    fw_torch_tried_adds = adds;
    dl_iterate_phdr(fw_torch_note, path);
    if (path[0] == '\0') return 0;
    h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL) return 0;
    s = dlsym(h, "omp_set_num_threads");
    g = dlsym(h, "omp_get_max_threads");
    a = dlsym(h, "_ZN2at15get_num_threadsEv");
    /* torch's MKL (linked into libtorch_cpu) keeps a count of its own once
     * torch.set_num_threads has run (mkl_set_num_threads), and then no
     * longer follows the OpenMP setting: measured, a thread at OpenMP 1 ran
     * MKL's sgemm on 2 threads. Its per-thread count is set with the ICV. */
    /* (the C entry points, as mkl.h maps them: the lower-case
     * mkl_set_num_threads_local is the Fortran one, which takes a pointer) */
    if (dlsym(h, "MKL_Set_Num_Threads_Local") != NULL && dlsym(h, "MKL_Get_Max_Threads") != NULL &&
        dladdr(dlsym(h, "MKL_Set_Num_Threads_Local"), &di) != 0 && di.dli_fname != NULL &&
        strcmp(di.dli_fname, path) == 0) {
        fw_torch_mkl_local = (int (*)(int))dlsym(h, "MKL_Set_Num_Threads_Local");
        fw_torch_mkl_get = (fw_omp_get_t)dlsym(h, "MKL_Get_Max_Threads");
    }
    /* at::get_num_threads must be libtorch_cpu's own; the two OpenMP
     * functions one library's (a torch built without OpenMP has none) */
    if (s != NULL && g != NULL && a != NULL && dladdr(a, &di) != 0 && di.dli_fname != NULL &&
        strcmp(di.dli_fname, path) == 0 && dladdr(s, &di) != 0 && di.dli_fname != NULL &&
        strlen(di.dli_fname) < sizeof fw_torch_gomp) {
        strcpy(fw_torch_gomp, di.dli_fname);
        strcpy(fw_torch_lib, path);
        fw_torch_omp_set = (fw_omp_set_t)s;
        fw_torch_omp_get = (fw_omp_get_t)g;
        fw_torch_at_get = (fw_omp_get_t)a;
        FW_STORE(&fw_torch_ready, 1);
    }
    dlclose(h);
    return FW_LOAD(&fw_torch_ready);
}

/* torch's thread count in the calling thread, as a task forked here takes it
 * for its cap: a budgeted task's own cap, else at::get_num_threads(); 0 when
 * torch is not found or the budget is off. */
static inline int fw_torch_cap_here(void) {
    if (!FW_LOAD_RLX(&fw_torch_ready) || !FW_LOAD_RLX(&fw_torch_on)) return 0;
    if (fw_torch_applied && fw_torch_omp_get() == fw_torch_applied) return fw_torch_task_cap;
    return fw_torch_at_get();
}

/* The thread begins its outermost task (counted in `running` already, with
 * the tasks that may begin soon), with `cap` read at the fork (0: none
 * read). `cpus`: the budget's. */
static inline void fw_torch_begin(int cap, int cpus, int running) {
    int now, target;
    fw_torch_applied = 0;
    fw_torch_task_cap = 0;
    fw_torch_mkl_saved = -1;
    if (!FW_LOAD_RLX(&fw_torch_ready) || !FW_LOAD_RLX(&fw_torch_on)) return;
    now = fw_torch_at_get();  /* first in this thread: torch's own lazy init */
    if (cap <= 0) cap = now;
    target = cap;
    if (running >= 2) {
        int limit = cpus / running;
        if (limit < 1) limit = 1;
        if (limit < target) target = limit;
    }
    fw_torch_task_cap = cap;
    if (target != now) {
        fw_torch_saved = now;
        fw_torch_omp_set(target);
        fw_torch_applied = target;
        FW_ADD(&fw_torch_sets, 1ULL);
    }
    if (fw_torch_mkl_local != NULL && fw_torch_mkl_get() != target)
        fw_torch_mkl_saved = fw_torch_mkl_local(target);
}

/* The thread's outermost task ended: its ICV back, unless the task set its
 * own count (then that count stays, as it would without forkwait). */
static inline void fw_torch_end(void) {
    if (fw_torch_mkl_saved >= 0) {
        fw_torch_mkl_local(fw_torch_mkl_saved);  /* 0: MKL's global count again */
        fw_torch_mkl_saved = -1;
    }
    if (fw_torch_applied) {
        if (fw_torch_omp_get() == fw_torch_applied) fw_torch_omp_set(fw_torch_saved);
        fw_torch_applied = 0;
    }
    fw_torch_task_cap = 0;
}

#endif
