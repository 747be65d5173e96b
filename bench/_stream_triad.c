/* Peers written in plain C + OpenMP, for bench/ops_ratios.py.
 *
 * triad: the STREAM triad a[i] = b[i] + s * c[i], the memory bandwidth that
 *        OpenMP threads reach on this machine.
 * csum:  the sum of a[i] as OpenMP's `parallel for simd reduction(+)` compiles
 *        it: the read-only bandwidth a plain C reduction reaches (a reduction
 *        reads one stream per thread, the triad two and writes one).
 * poly:  y[i] = a degree-12 polynomial of x[i] (Horner, FMAs), over the same
 *        arrays as an element-wise op: compute-bound, no libm, no reduction;
 *        how much a second thread can give a compute-bound loop here and now
 *        (on a quiet machine with two real cores, 2.0x).
 */
#include <stddef.h>

void triad(double *a, const double *b, const double *c, double s, ptrdiff_t n, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (ptrdiff_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

double csum(const double *a, ptrdiff_t n, int threads) {
    double s = 0.0;
    #pragma omp parallel for simd schedule(static) reduction(+ : s) num_threads(threads)
    for (ptrdiff_t i = 0; i < n; i++) s += a[i];
    return s;
}

#define POLY(T, v) \
    ((((((((((((v + (T)0.5) * v + (T)0.5) * v + (T)0.5) * v + (T)0.5) * v + (T)0.5) * v + \
    (T)0.5) * v + (T)0.5) * v + (T)0.5) * v + (T)0.5) * v + (T)0.5) * v + (T)0.5) * v + (T)0.5)

void poly64(double *y, const double *x, ptrdiff_t n, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (ptrdiff_t i = 0; i < n; i++) y[i] = POLY(double, x[i]);
}

void poly32(float *y, const float *x, ptrdiff_t n, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (ptrdiff_t i = 0; i < n; i++) y[i] = POLY(float, x[i]);
}
