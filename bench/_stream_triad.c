/* STREAM-style triad a[i] = b[i] + s * c[i] with OpenMP, for bench/ops_ratios.py. */
#include <stddef.h>
void triad(double *a, const double *b, const double *c, double s, ptrdiff_t n, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (ptrdiff_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}
