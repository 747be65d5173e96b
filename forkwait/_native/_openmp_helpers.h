/* The one place that includes <omp.h>. Without OpenMP every helper has a
 * serial fallback, so the rest of forkwait compiles and runs on one thread. */
#ifndef FORKWAIT_OPENMP_HELPERS_H
#define FORKWAIT_OPENMP_HELPERS_H

#ifdef _OPENMP
#include <omp.h>
#define FW_HAVE_OPENMP 1
#define FW_OPENMP_VERSION _OPENMP
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
#endif

#endif
