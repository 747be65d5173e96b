/* Explicitly vectorised loops for forkwait's kernels: sqrt, block sums, max/min.
 *
 * gcc does not vectorise these from plain C at -O3 without -ffast-math:
 *   sqrt   with -fmath-errno (the default) every sqrt keeps a scalar errno path;
 *   sum    a reduction needs reassociation, which only we may choose: here it
 *          is a fixed one (8 vector accumulators, combined in a fixed order);
 *   max    the NaN-propagating select `v > acc || v != v` is two compares and
 *          a blend per element; here the max is a plain `v > acc ? v : acc`
 *          (one vmaxpd/vblendvpd) and NaN is a separate flag.
 * GCC vector extensions (vector_size(32): 4 doubles / 8 floats) keep this
 * portable: without AVX gcc splits each operation in two, with the same
 * lane-wise IEEE results, so the bits do not depend on the instruction set.
 *
 * Every result below depends on the element count only (never on a thread
 * count): the lane/accumulator layout and the combination order are fixed.
 */
#ifndef FORKWAIT_FW_SIMD_H
#define FORKWAIT_FW_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

typedef double fw_v4d __attribute__((vector_size(32)));
typedef float fw_v8f __attribute__((vector_size(32)));
typedef int64_t fw_v4l __attribute__((vector_size(32)));
typedef int32_t fw_v8i __attribute__((vector_size(32)));

static inline fw_v4d fw_ld4d(const double *p) { fw_v4d v; memcpy(&v, p, 32); return v; }
static inline fw_v8f fw_ld8f(const float *p) { fw_v8f v; memcpy(&v, p, 32); return v; }

/* ----------------------------------------------------------------- sqrt */

/* y[i] = sqrt(x[i]); y may be x. Correctly rounded (IEEE), as libm's sqrt:
   the same bits as the scalar loop, without its errno branch. */
static inline void fw_sqrt_d(const double *x, double *y, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX__)
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(y + i, _mm256_sqrt_pd(_mm256_loadu_pd(x + i)));
#elif defined(__SSE2__)
    for (; i + 2 <= n; i += 2)
        _mm_storeu_pd(y + i, _mm_sqrt_pd(_mm_loadu_pd(x + i)));
#endif
    for (; i < n; i++) y[i] = sqrt(x[i]);
}

static inline void fw_sqrt_f(const float *x, float *y, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
#elif defined(__SSE2__)
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(y + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
#endif
    for (; i < n; i++) y[i] = sqrtf(x[i]);
}

/* ------------------------------------------------------------------ sum */

/* The sum of n elements: 8 vector accumulators (32 lanes of float64, 64 of
   float32); lane j sums the elements i = j (mod lanes) pairwise, down to
   leaves of 8 consecutive steps (256 float64 / 512 float32 elements), so the
   error grows as log2(n), like NumPy's pairwise sum. The lanes are combined
   in a fixed tree, then the tail (n mod lanes elements) is added in order,
   starting from +0.0 (so a sum of -0.0s is +0.0, as NumPy's).

   The "2" variants reduce two arrays of the same length at once, with the
   very same operations on each (so the same bits as two single calls): two
   memory streams per core read ~1.6x faster than one on the machines we
   measured (the reductions call them on two distant blocks). */
#define FW_SUM_LEAF_D 256
#define FW_SUM_LEAF_F 512

/* FW_VSUM1/2(name, T, V, W, LEAF, LD): the pairwise vector sum of one or
   two streams (T: element, V: vector of W elements, LD: its unaligned load) */
#define FW_VSUM1(name, T, V, W, LEAF, LD)                                      \
    static void name(const T *x, ptrdiff_t n, V acc[8]) {                     \
        /* n: a positive multiple of 8 * W */                                  \
        ptrdiff_t i, h;                                                        \
        int k;                                                                 \
        V r[8];                                                                \
        if (n <= LEAF) {                                                       \
            for (k = 0; k < 8; k++) acc[k] = LD(x + W * k);                    \
            for (i = 8 * W; i < n; i += 8 * W)                                 \
                for (k = 0; k < 8; k++) acc[k] += LD(x + i + W * k);           \
            return;                                                            \
        }                                                                      \
        h = n / 2;                                                             \
        h -= h % (8 * W);                                                      \
        name(x, h, acc);                                                       \
        name(x + h, n - h, r);                                                 \
        for (k = 0; k < 8; k++) acc[k] += r[k];                                \
    }
#define FW_VSUM2(name, T, V, W, LEAF, LD)                                      \
    static void name(const T *x, const T *y, ptrdiff_t n, V acc[8], V bcc[8]) { \
        ptrdiff_t i, h;                                                        \
        int k;                                                                 \
        V r[8], q[8];                                                          \
        if (n <= LEAF) {                                                       \
            for (k = 0; k < 8; k++) {                                          \
                acc[k] = LD(x + W * k);                                        \
                bcc[k] = LD(y + W * k);                                        \
            }                                                                  \
            for (i = 8 * W; i < n; i += 8 * W)                                 \
                for (k = 0; k < 8; k++) {                                      \
                    acc[k] += LD(x + i + W * k);                               \
                    bcc[k] += LD(y + i + W * k);                               \
                }                                                              \
            return;                                                            \
        }                                                                      \
        h = n / 2;                                                             \
        h -= h % (8 * W);                                                      \
        name(x, y, h, acc, bcc);                                               \
        name(x + h, y + h, n - h, r, q);                                       \
        for (k = 0; k < 8; k++) {                                              \
            acc[k] += r[k];                                                    \
            bcc[k] += q[k];                                                    \
        }                                                                      \
    }

FW_VSUM1(fw_vsum_d, double, fw_v4d, 4, FW_SUM_LEAF_D, fw_ld4d)
FW_VSUM2(fw_vsum2_d, double, fw_v4d, 4, FW_SUM_LEAF_D, fw_ld4d)
FW_VSUM1(fw_vsum_f, float, fw_v8f, 8, FW_SUM_LEAF_F, fw_ld8f)
FW_VSUM2(fw_vsum2_f, float, fw_v8f, 8, FW_SUM_LEAF_F, fw_ld8f)

/* the lanes (when m > 0) combined, then the tail x[m:n] */
static inline double fw_sum_end_d(const fw_v4d *acc, const double *x, ptrdiff_t m,
                                  ptrdiff_t n) {
    double s = 0.0;
    fw_v4d a;
    if (m > 0) {
        a = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        s += (a[0] + a[2]) + (a[1] + a[3]);
    }
    for (ptrdiff_t i = m; i < n; i++) s += x[i];
    return s;
}

static inline float fw_sum_end_f(const fw_v8f *acc, const float *x, ptrdiff_t m,
                                 ptrdiff_t n) {
    float s = 0.0f;
    fw_v8f a;
    if (m > 0) {
        a = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        s += ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    }
    for (ptrdiff_t i = m; i < n; i++) s += x[i];
    return s;
}

static inline double fw_sum_d(const double *x, ptrdiff_t n) {
    ptrdiff_t m = n - n % 32;
    fw_v4d acc[8];
    if (m > 0) fw_vsum_d(x, m, acc);
    return fw_sum_end_d(acc, x, m, n);
}

static inline float fw_sum_f(const float *x, ptrdiff_t n) {
    ptrdiff_t m = n - n % 64;
    fw_v8f acc[8];
    if (m > 0) fw_vsum_f(x, m, acc);
    return fw_sum_end_f(acc, x, m, n);
}

static inline void fw_sum2_d(const double *x, const double *y, ptrdiff_t n, double *sx,
                             double *sy) {
    ptrdiff_t m = n - n % 32;
    fw_v4d acc[8], bcc[8];
    if (m > 0) fw_vsum2_d(x, y, m, acc, bcc);
    *sx = fw_sum_end_d(acc, x, m, n);
    *sy = fw_sum_end_d(bcc, y, m, n);
}

static inline void fw_sum2_f(const float *x, const float *y, ptrdiff_t n, float *sx,
                             float *sy) {
    ptrdiff_t m = n - n % 64;
    fw_v8f acc[8], bcc[8];
    if (m > 0) fw_vsum2_f(x, y, m, acc, bcc);
    *sx = fw_sum_end_f(acc, x, m, n);
    *sy = fw_sum_end_f(bcc, y, m, n);
}

/* -------------------------------------------------------------- max/min */

/* The max (is_max) or min of n >= 1 elements; NaN if any element is NaN
   (the first NaN of x). 8 vector accumulators take `v > acc ? v : acc` (min:
   `<`) lane-wise, a separate mask records NaNs; the lanes are then combined
   in lane order and the tail added in index order, keeping the first of
   equal values (which matters only for the sign of a zero result). */

/* acc = w CMP acc ? w : acc, lane-wise; nan |= w != w */
#define FW_MAXSTEP(V, M, acc, w, nan, CMP)                                     \
    do {                                                                       \
        M c_ = (w) CMP (acc);                                                  \
        (acc) = (V)(((M)(w) & c_) | ((M)(acc) & ~c_));                          \
        (nan) |= (w) != (w);                                                   \
    } while (0)

/* FW_VMAX(name, T, V, M, W, LD): max/min lanes of S = 1 or 2 streams over
   x[:m] (and y[:m]), m a positive multiple of 8 * W */
#define FW_VMAX1(name, T, V, M, W, LD)                                         \
    static inline void name(const T *x, ptrdiff_t m, int is_max, V acc[8], M *nan) { \
        ptrdiff_t i;                                                           \
        int k;                                                                 \
        V w;                                                                   \
        for (k = 0; k < 8; k++) acc[k] = LD(x + W * k);                        \
        if (is_max) {                                                          \
            for (i = 0; i < m; i += 8 * W)                                     \
                for (k = 0; k < 8; k++) {                                      \
                    w = LD(x + i + W * k);                                     \
                    FW_MAXSTEP(V, M, acc[k], w, *nan, >);                      \
                }                                                              \
        } else {                                                               \
            for (i = 0; i < m; i += 8 * W)                                     \
                for (k = 0; k < 8; k++) {                                      \
                    w = LD(x + i + W * k);                                     \
                    FW_MAXSTEP(V, M, acc[k], w, *nan, <);                      \
                }                                                              \
        }                                                                      \
    }
#define FW_VMAX2(name, T, V, M, W, LD)                                         \
    static inline void name(const T *x, const T *y, ptrdiff_t m, int is_max, V acc[8], \
                            V bcc[8], M *nan, M *nbn) {                        \
        ptrdiff_t i;                                                           \
        int k;                                                                 \
        V w, u;                                                                \
        for (k = 0; k < 8; k++) {                                              \
            acc[k] = LD(x + W * k);                                            \
            bcc[k] = LD(y + W * k);                                            \
        }                                                                      \
        if (is_max) {                                                          \
            for (i = 0; i < m; i += 8 * W)                                     \
                for (k = 0; k < 8; k++) {                                      \
                    w = LD(x + i + W * k);                                     \
                    u = LD(y + i + W * k);                                     \
                    FW_MAXSTEP(V, M, acc[k], w, *nan, >);                      \
                    FW_MAXSTEP(V, M, bcc[k], u, *nbn, >);                      \
                }                                                              \
        } else {                                                               \
            for (i = 0; i < m; i += 8 * W)                                     \
                for (k = 0; k < 8; k++) {                                      \
                    w = LD(x + i + W * k);                                     \
                    u = LD(y + i + W * k);                                     \
                    FW_MAXSTEP(V, M, acc[k], w, *nan, <);                      \
                    FW_MAXSTEP(V, M, bcc[k], u, *nbn, <);                      \
                }                                                              \
        }                                                                      \
    }

FW_VMAX1(fw_vmax_d, double, fw_v4d, fw_v4l, 4, fw_ld4d)
FW_VMAX2(fw_vmax2_d, double, fw_v4d, fw_v4l, 4, fw_ld4d)
FW_VMAX1(fw_vmax_f, float, fw_v8f, fw_v8i, 8, fw_ld8f)
FW_VMAX2(fw_vmax2_f, float, fw_v8f, fw_v8i, 8, fw_ld8f)

/* FW_MAXEND(name, T, V, M, W): the lanes (when m > 0) combined in order, then
   the tail x[m:n]; the first NaN of x if there is any NaN */
#define FW_MAXEND(name, T, V, M, W)                                            \
    static inline T name(const V *acc, M nanv, const T *x, ptrdiff_t m, ptrdiff_t n, \
                         int is_max) {                                         \
        T r = x[0], v;                                                         \
        int k, j, nan = 0;                                                     \
        ptrdiff_t i;                                                           \
        if (m > 0) {                                                           \
            for (j = 0; j < W; j++) nan |= nanv[j] != 0;                       \
            r = acc[0][0];                                                     \
            for (k = 0; k < 8; k++)                                            \
                for (j = 0; j < W; j++) {                                      \
                    v = acc[k][j];                                             \
                    r = (is_max ? v > r : v < r) ? v : r;                      \
                }                                                              \
        }                                                                      \
        for (i = m; i < n; i++) {                                              \
            v = x[i];                                                          \
            nan |= v != v;                                                     \
            r = (is_max ? v > r : v < r) ? v : r;                              \
        }                                                                      \
        if (nan)                                                               \
            for (i = 0; i < n; i++)                                            \
                if (x[i] != x[i]) return x[i];                                 \
        return r;                                                              \
    }

FW_MAXEND(fw_max_end_d, double, fw_v4d, fw_v4l, 4)
FW_MAXEND(fw_max_end_f, float, fw_v8f, fw_v8i, 8)

static inline double fw_max_d(const double *x, ptrdiff_t n, int is_max) {
    ptrdiff_t m = n - n % 32;
    fw_v4d acc[8];
    fw_v4l nan = {0, 0, 0, 0};
    if (m > 0) fw_vmax_d(x, m, is_max, acc, &nan);
    return fw_max_end_d(acc, nan, x, m, n, is_max);
}

static inline float fw_max_f(const float *x, ptrdiff_t n, int is_max) {
    ptrdiff_t m = n - n % 64;
    fw_v8f acc[8];
    fw_v8i nan = {0, 0, 0, 0, 0, 0, 0, 0};
    if (m > 0) fw_vmax_f(x, m, is_max, acc, &nan);
    return fw_max_end_f(acc, nan, x, m, n, is_max);
}

static inline void fw_max2_d(const double *x, const double *y, ptrdiff_t n, int is_max,
                             double *rx, double *ry) {
    ptrdiff_t m = n - n % 32;
    fw_v4d acc[8], bcc[8];
    fw_v4l nan = {0, 0, 0, 0}, nbn = {0, 0, 0, 0};
    if (m > 0) fw_vmax2_d(x, y, m, is_max, acc, bcc, &nan, &nbn);
    *rx = fw_max_end_d(acc, nan, x, m, n, is_max);
    *ry = fw_max_end_d(bcc, nbn, y, m, n, is_max);
}

static inline void fw_max2_f(const float *x, const float *y, ptrdiff_t n, int is_max,
                             float *rx, float *ry) {
    ptrdiff_t m = n - n % 64;
    fw_v8f acc[8], bcc[8];
    fw_v8i nan = {0, 0, 0, 0, 0, 0, 0, 0}, nbn = {0, 0, 0, 0, 0, 0, 0, 0};
    if (m > 0) fw_vmax2_f(x, y, m, is_max, acc, bcc, &nan, &nbn);
    *rx = fw_max_end_f(acc, nan, x, m, n, is_max);
    *ry = fw_max_end_f(bcc, nbn, y, m, n, is_max);
}

/* ------------------------------------------------------ row-op helpers */

/* The row ops (softmax, log_softmax, layer_norm) work on rows of a few hundred
   to a few thousand elements, where the lanes' combination and a scalar tail
   cost as much as the loop: these helpers use 64-byte vectors (16 float32 / 8
   float64 lanes: one register under AVX-512, two under AVX2, four under SSE,
   the same lane-wise arithmetic in each) and take the last partial vector as
   one vector (overlapping the one before it, the repeated lanes masked out
   where they would count twice) instead of a tail one element at a time. */
typedef float fw_v16f __attribute__((vector_size(64)));
typedef double fw_v8d __attribute__((vector_size(64)));
typedef int32_t fw_v16i __attribute__((vector_size(64)));
typedef int64_t fw_v8l __attribute__((vector_size(64)));

/* FW_ROWACC(name, T, V, M, W): x[:k] added into the lanes of a[0..3]: each
   4W elements in turn lane for lane, then each remaining W into a[0], then the
   last k mod W (when k >= W) as the vector x[k-W:k] with its first lanes (the
   elements already added) zeroed. Every call but the last one of a row gives
   a multiple of 4W elements, so where an element lands depends only on its
   index and the row's length: the same bits in every variant and for any
   split of the rows between threads. Adding +0.0 changes no sum but that of
   a -0.0 lane. Four accumulators: an add's latency is several cycles. */
#define FW_ROWACC(name, T, V, M, W)                                            \
    static inline void name(V a[4], const T *x, ptrdiff_t k) {                 \
        ptrdiff_t i = 0;                                                       \
        V a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], v0, v1, v2, v3;          \
        for (; i + 4 * W <= k; i += 4 * W) {                                   \
            memcpy(&v0, x + i, sizeof(V));                                     \
            memcpy(&v1, x + i + W, sizeof(V));                                 \
            memcpy(&v2, x + i + 2 * W, sizeof(V));                             \
            memcpy(&v3, x + i + 3 * W, sizeof(V));                             \
            a0 += v0;                                                          \
            a1 += v1;                                                          \
            a2 += v2;                                                          \
            a3 += v3;                                                          \
        }                                                                      \
        for (; i + W <= k; i += W) {                                           \
            memcpy(&v0, x + i, sizeof(V));                                     \
            a0 += v0;                                                          \
        }                                                                      \
        if (i < k && k >= W) {                                                 \
            M lane = FW_LANES_##W, keep = lane >= (int)(W - (k - i));         \
            memcpy(&v0, x + k - W, sizeof(V));                                 \
            a0 += (V)((M)v0 & keep);                                          \
        } else if (i < k) {                                                    \
            T pad[W] = {0};                                                    \
            for (; i < k; i++) pad[i] = x[i];                                  \
            memcpy(&v0, pad, sizeof(V));                                       \
            a0 += v0;                                                          \
        }                                                                      \
        a[0] = a0;                                                             \
        a[1] = a1;                                                             \
        a[2] = a2;                                                             \
        a[3] = a3;                                                             \
    }
#define FW_LANES_16 {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
#define FW_LANES_8 {0, 1, 2, 3, 4, 5, 6, 7}
FW_ROWACC(fw_rowacc_f, float, fw_v16f, fw_v16i, 16)
FW_ROWACC(fw_rowacc_d, double, fw_v8d, fw_v8l, 8)

/* The 4W lanes of a[0..3] summed in a fixed tree. */
static inline float fw_rowsum_end_f(const fw_v16f a[4]) {
    fw_v16f v = (a[0] + a[2]) + (a[1] + a[3]);
    float h[8];
    for (int j = 0; j < 8; j++) h[j] = v[j] + v[j + 8];
    return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}
/* the 8 lanes of v summed in a fixed tree */
static inline double fw_lanes8_d(fw_v8d v) {
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}
static inline double fw_rowsum_end_d(const fw_v8d a[4]) {
    return fw_lanes8_d((a[0] + a[2]) + (a[1] + a[3]));
}

/* FW_ROWMAX(name, T, V, M, W): the largest of x[:n] (n >= 1) by `v > acc ?
   v : acc` in four vector accumulators (the last partial vector is x[n-W:n],
   which takes some elements twice: harmless for a max), combined, then the
   lanes in a fixed tree. A NaN may or may not win (a row op that meets one
   makes the whole row NaN anyway, through its sum); the order is fixed, so
   the result is too. */
#define FW_VMAXSEL(V, M, a, v)                                                 \
    do {                                                                       \
        M c_ = (v) > (a);                                                      \
        (a) = (V)(((M)(v) & c_) | ((M)(a) & ~c_));                             \
    } while (0)
#define FW_ROWMAX(name, T, V, M, W)                                            \
    static inline T name(const T *x, ptrdiff_t n) {                            \
        ptrdiff_t i = 0;                                                       \
        V a0, a1, a2, a3, v0, v1, v2, v3;                                      \
        T h[W];                                                                \
        int j, w;                                                              \
        if (n < W) {                                                           \
            T r = x[0];                                                        \
            for (i = 1; i < n; i++) r = x[i] > r ? x[i] : r;                   \
            return r;                                                          \
        }                                                                      \
        memcpy(&a0, x, sizeof(V));                                             \
        a1 = a2 = a3 = a0;                                                     \
        for (; i + 4 * W <= n; i += 4 * W) {                                   \
            memcpy(&v0, x + i, sizeof(V));                                     \
            memcpy(&v1, x + i + W, sizeof(V));                                 \
            memcpy(&v2, x + i + 2 * W, sizeof(V));                             \
            memcpy(&v3, x + i + 3 * W, sizeof(V));                             \
            FW_VMAXSEL(V, M, a0, v0);                                          \
            FW_VMAXSEL(V, M, a1, v1);                                          \
            FW_VMAXSEL(V, M, a2, v2);                                          \
            FW_VMAXSEL(V, M, a3, v3);                                          \
        }                                                                      \
        for (; i + W <= n; i += W) {                                           \
            memcpy(&v0, x + i, sizeof(V));                                     \
            FW_VMAXSEL(V, M, a0, v0);                                          \
        }                                                                      \
        if (i < n) {                                                           \
            memcpy(&v0, x + n - W, sizeof(V));                                 \
            FW_VMAXSEL(V, M, a1, v0);                                          \
        }                                                                      \
        FW_VMAXSEL(V, M, a0, a2);                                              \
        FW_VMAXSEL(V, M, a1, a3);                                              \
        FW_VMAXSEL(V, M, a0, a1);                                              \
        memcpy(h, &a0, sizeof(V));                                             \
        for (w = W / 2; w >= 1; w /= 2)                                        \
            for (j = 0; j < w; j++) h[j] = h[j + w] > h[j] ? h[j + w] : h[j];  \
        return h[0];                                                           \
    }
FW_ROWMAX(fw_rowmax_f, float, fw_v16f, fw_v16i, 16)
FW_ROWMAX(fw_rowmax_d, double, fw_v8d, fw_v8l, 8)

/* FW_ROWDEV(name, T, LD): the sums of t = x[i] - c and of t^2 over x[:n], in
   float64 (T = float: each element widened first), for layer_norm: two pairs
   of 8-lane accumulators, then whole vectors into the first, then the last
   partial vector (x[n-8:n] with the lanes already added masked out; or, for
   n < 8, the lanes built one by one), each sum's lanes in a fixed tree. */
static inline fw_v8d fw_ld8d(const double *p) { fw_v8d v; memcpy(&v, p, 64); return v; }
static inline fw_v8d fw_ld8f_d(const float *p) {
    fw_v8f v;
    memcpy(&v, p, 32);
    return __builtin_convertvector(v, fw_v8d);
}
#define FW_ROWDEV(name, T, LD)                                                 \
    static inline void name(const T *x, ptrdiff_t n, double c, double *s1, double *s2) { \
        fw_v8d a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, t0, t1;                 \
        ptrdiff_t i = 0;                                                       \
        for (; i + 16 <= n; i += 16) {                                         \
            t0 = LD(x + i) - c;                                                \
            t1 = LD(x + i + 8) - c;                                            \
            a0 += t0;                                                          \
            a1 += t1;                                                          \
            b0 += t0 * t0;                                                     \
            b1 += t1 * t1;                                                     \
        }                                                                      \
        for (; i + 8 <= n; i += 8) {                                           \
            t0 = LD(x + i) - c;                                                \
            a0 += t0;                                                          \
            b0 += t0 * t0;                                                     \
        }                                                                      \
        if (i < n && n >= 8) {                                                 \
            fw_v8l lane = FW_LANES_8, keep = lane >= (int64_t)(8 - (n - i));   \
            t0 = LD(x + n - 8) - c;                                            \
            t0 = (fw_v8d)((fw_v8l)t0 & keep);                                  \
            a0 += t0;                                                          \
            b0 += t0 * t0;                                                     \
        } else if (i < n) {                                                    \
            t0 = (fw_v8d){0};                                                  \
            for (int j = 0; i + j < n; j++) t0[j] = (double)x[i + j] - c;      \
            a0 += t0;                                                          \
            b0 += t0 * t0;                                                     \
        }                                                                      \
        *s1 = fw_lanes8_d(a0 + a1);                                            \
        *s2 = fw_lanes8_d(b0 + b1);                                            \
    }
FW_ROWDEV(fw_rowdev_d, double, fw_ld8d)
FW_ROWDEV(fw_rowdev_fd, float, fw_ld8f_d)

#endif
