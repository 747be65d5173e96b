/* The one place that includes <omp.h>. Without OpenMP every helper has a
 * serial fallback, so the rest of forkwait compiles and runs on one thread. */
#ifndef FORKWAIT_OPENMP_HELPERS_H
#define FORKWAIT_OPENMP_HELPERS_H

#ifdef _OPENMP
#include <omp.h>
#define FW_HAVE_OPENMP 1
#define FW_OPENMP_VERSION _OPENMP
#include <dlfcn.h>
#include "_fw_atomic.h"
/* Give back the calling thread's OpenMP threads (its team's pool: libgomp
 * frees the calling thread's pool only, and joins its threads). OpenMP 5.0's
 * omp_pause_resource, found at run time: compilers that have it (gcc >= 9)
 * may still say _OPENMP 201511; where the runtime lacks it, nothing (-1). */
typedef int (*fw_omp_pause_t)(int kind, int device);
static inline int fw_omp_release_threads(void) {
    static fw_omp_pause_t found = NULL;
    static int looked = 0;
    fw_omp_pause_t pause;
    if (!FW_LOAD_ACQ(&looked)) {  /* two first callers both look: the same pointer */
        FW_STORE_REL(&found, (fw_omp_pause_t)dlsym(RTLD_DEFAULT, "omp_pause_resource"));
        FW_STORE_REL(&looked, 1);
    }
    pause = FW_LOAD_ACQ(&found);
    if (pause == NULL) return -1;
    return pause(1 /* omp_pause_soft */, omp_get_initial_device());
}
#else
#define FW_HAVE_OPENMP 0
#define FW_OPENMP_VERSION 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_in_parallel(void) { return 0; }
static inline int omp_get_level(void) { return 0; }
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_get_dynamic(void) { return 0; }
static inline int fw_omp_release_threads(void) { return 0; }
#endif

#endif
