/* The vectors of forkwait's hot loops, and the loops gcc does not vectorise
 * from plain C at -O3 without -ffast-math:
 *   sqrt   with -fmath-errno (the default) every sqrt keeps a scalar errno path;
 *   sum    a reduction needs reassociation, which only we may choose: here it
 *          is a fixed one (256 bytes of lanes, combined in a fixed order);
 *   max    the NaN-propagating select `v > acc || v != v` is two compares and
 *          a blend per element; here the max is a plain `v > acc ? v : acc`
 *          (one vmaxpd/vblendvpd) and NaN is a separate flag;
 *   rows   the row ops' sums and maxima (softmax, log_softmax, layer_norm).
 * Everything is written on the variant's own vectors (GCC vector extensions
 * of the widest width the instruction set has: fw_nf, fw_nd below), so every
 * value stays in a register; a sum's lanes are a fixed number of bytes (256,
 * or 64 for the row ops) held as as many of those vectors as it takes, with
 * the same lane-wise IEEE arithmetic in each variant: the bits do not depend
 * on the instruction set.
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

/* ------------------------------------------------ the variant's vectors */

/* The hot loops' own vectors (_fw_kernels.c, _fw_math.h): the widest this
   variant has (64 bytes under AVX-512, 32 under AVX, 16 otherwise), so that
   every value stays in a register. gcc keeps a vector wider than the
   instruction set in memory (a 64-byte vector under AVX2 went through the
   stack at every operation: the row ops ran 4x slower than under AVX-512).
   Element-wise code on them computes lane for lane, so its bits do not depend
   on the width; sums across lanes use the 64-byte layout of fw_row below. */
#if defined(__AVX512F__)
#define FW_NB 64
#elif defined(__AVX__)
#define FW_NB 32
#else
#define FW_NB 16
#endif
typedef float fw_nf __attribute__((vector_size(FW_NB)));
typedef double fw_nd __attribute__((vector_size(FW_NB)));
typedef int32_t fw_ni __attribute__((vector_size(FW_NB)));
typedef uint32_t fw_nu __attribute__((vector_size(FW_NB)));
typedef int64_t fw_nl __attribute__((vector_size(FW_NB)));
typedef uint64_t fw_nul __attribute__((vector_size(FW_NB)));
typedef float fw_hf __attribute__((vector_size(FW_NB / 2))); /* FW_ND floats */
#define FW_NF (FW_NB / 4) /* float lanes */
#define FW_ND (FW_NB / 8) /* double lanes */
#define FW_NK (64 / FW_NB) /* native vectors in 64 bytes */
/* the helpers below are called once per vector in the hot loops: inlined always */
#define FW_VI static inline __attribute__((always_inline))

FW_VI fw_nf fw_ldf(const float *p) { fw_nf v; memcpy(&v, p, sizeof v); return v; }
FW_VI fw_nd fw_ldd(const double *p) { fw_nd v; memcpy(&v, p, sizeof v); return v; }
FW_VI void fw_stf(float *p, fw_nf v) { memcpy(p, &v, sizeof v); }
FW_VI void fw_std(double *p, fw_nd v) { memcpy(p, &v, sizeof v); }
/* FW_ND floats widened to doubles */
FW_VI fw_nd fw_ldfd(const float *p) {
    fw_hf v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, fw_nd);
}
/* the lane numbers 0, 1, 2, ... of a vector of n lanes (n <= 16) */
FW_VI fw_ni fw_iota_i(void) {
    fw_ni v;
    for (int j = 0; j < FW_NF; j++) v[j] = j;
    return v;
}
FW_VI fw_nl fw_iota_l(void) {
    fw_nl v;
    for (int j = 0; j < FW_ND; j++) v[j] = j;
    return v;
}

/* c in every lane */
FW_VI fw_nf fw_splatf(float c) {
    fw_nf v;
    for (int j = 0; j < FW_NF; j++) v[j] = c;
    return v;
}
FW_VI fw_nd fw_splatd(double c) {
    fw_nd v;
    for (int j = 0; j < FW_ND; j++) v[j] = c;
    return v;
}

/* c ? a : b lane for lane, c a comparison's mask (-1 or 0 in every lane) */
FW_VI fw_nf fw_vself(fw_ni c, fw_nf a, fw_nf b) {
    return (fw_nf)(((fw_ni)a & c) | ((fw_ni)b & ~c));
}
FW_VI fw_nd fw_vseld(fw_nl c, fw_nd a, fw_nd b) {
    return (fw_nd)(((fw_nl)a & c) | ((fw_nl)b & ~c));
}

/* a < b ? a : b and a > b ? a : b lane for lane (x86's minps and maxps: b
   where either is NaN: min(C, x) keeps a NaN x, min(x, C) does not):
   one instruction where a select of computed values took a compare and two
   logic operations. */
FW_VI fw_nf fw_vminf(fw_nf a, fw_nf b) {
#if defined(__AVX512F__)
    return (fw_nf)_mm512_min_ps((__m512)a, (__m512)b);
#elif FW_NB == 32
    return (fw_nf)_mm256_min_ps((__m256)a, (__m256)b);
#elif defined(__SSE2__)
    return (fw_nf)_mm_min_ps((__m128)a, (__m128)b);
#else
    for (int j = 0; j < FW_NF; j++) a[j] = a[j] < b[j] ? a[j] : b[j];
    return a;
#endif
}
FW_VI fw_nf fw_vmaxf(fw_nf a, fw_nf b) {
#if defined(__AVX512F__)
    return (fw_nf)_mm512_max_ps((__m512)a, (__m512)b);
#elif FW_NB == 32
    return (fw_nf)_mm256_max_ps((__m256)a, (__m256)b);
#elif defined(__SSE2__)
    return (fw_nf)_mm_max_ps((__m128)a, (__m128)b);
#else
    for (int j = 0; j < FW_NF; j++) a[j] = a[j] > b[j] ? a[j] : b[j];
    return a;
#endif
}

FW_VI fw_nd fw_vmind(fw_nd a, fw_nd b) {
#if defined(__AVX512F__)
    return (fw_nd)_mm512_min_pd((__m512d)a, (__m512d)b);
#elif FW_NB == 32
    return (fw_nd)_mm256_min_pd((__m256d)a, (__m256d)b);
#elif defined(__SSE2__)
    return (fw_nd)_mm_min_pd((__m128d)a, (__m128d)b);
#else
    for (int j = 0; j < FW_ND; j++) a[j] = a[j] < b[j] ? a[j] : b[j];
    return a;
#endif
}
FW_VI fw_nd fw_vmaxd(fw_nd a, fw_nd b) {
#if defined(__AVX512F__)
    return (fw_nd)_mm512_max_pd((__m512d)a, (__m512d)b);
#elif FW_NB == 32
    return (fw_nd)_mm256_max_pd((__m256d)a, (__m256d)b);
#elif defined(__SSE2__)
    return (fw_nd)_mm_max_pd((__m128d)a, (__m128d)b);
#else
    for (int j = 0; j < FW_ND; j++) a[j] = a[j] > b[j] ? a[j] : b[j];
    return a;
#endif
}

/* fma(a, b, c) lane for lane: the source's own fused multiply-adds (part of
   the algorithm, see _fw_math.h), an instruction where the variant has one,
   libm's correctly rounded fma elsewhere: the same bits. */
FW_VI fw_nf fw_vfmaf(fw_nf a, fw_nf b, fw_nf c) {
#if defined(__AVX512F__)
    return (fw_nf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && FW_NB == 32
    return (fw_nf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    for (int j = 0; j < FW_NF; j++) a[j] = fmaf(a[j], b[j], c[j]);
    return a;
#endif
}

FW_VI fw_nd fw_vfmad(fw_nd a, fw_nd b, fw_nd c) {
#if defined(__AVX512F__)
    return (fw_nd)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif defined(__FMA__) && FW_NB == 32
    return (fw_nd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
    for (int j = 0; j < FW_ND; j++) a[j] = fma(a[j], b[j], c[j]);
    return a;
#endif
}

/* p 2^n rounded once (n an integer-valued vector; p in [0.7, 1.42] and n in
   the range of exp's full versions, _fw_math.h): AVX-512's vscalefps, or the
   product by two normal powers of two, the first of which is exact (p 2^n1
   stays normal): the same correctly rounded value, subnormal, zero or
   infinite results included. */
FW_VI fw_nf fw_vscalef(fw_nf p, fw_nf n) {
#if defined(__AVX512F__)
    return (fw_nf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    fw_ni ni = __builtin_convertvector(n, fw_ni); /* n in [-150, 129] */
    fw_ni n1 = ni >> 1;
    fw_ni n2 = ni - n1;
    fw_nf s1 = (fw_nf)((n1 + 127) << 23);
    fw_nf s2 = (fw_nf)((n2 + 127) << 23);
    return (p * s1) * s2;
#endif
}
FW_VI fw_nd fw_vscaled(fw_nd p, fw_nd n) {
#if defined(__AVX512F__)
    return (fw_nd)_mm512_scalef_pd((__m512d)p, (__m512d)n);
#else
    /* n in [-1077, 1025]; n1 = floor(n/2) by rounding n/2 - 1/4 to nearest,
       the powers of two built from the low bits of n1 + 1023 + 2^52 */
    const double magic = 6755399441055744.0;
    fw_nd n1 = (n * 0.5 - 0.25 + magic) - magic;
    fw_nd n2 = n - n1;
    fw_nd t1 = n1 + (1023.0 + 4503599627370496.0);
    fw_nd t2 = n2 + (1023.0 + 4503599627370496.0);
    fw_nd s1 = (fw_nd)((fw_nul)t1 << 52);
    fw_nd s2 = (fw_nd)((fw_nul)t2 << 52);
    return (p * s1) * s2;
#endif
}

/* t[k & 15] lane for lane: one permute under AVX-512 (the table in one
   register), two and a blend on bit 3 under AVX2, a load per lane otherwise;
   an exact copy of the entry in every case. */
FW_VI fw_nf fw_lut16f(const float t[16], fw_ni k) {
#if defined(__AVX512F__)
    return (fw_nf)_mm512_permutexvar_ps((__m512i)k, _mm512_loadu_ps(t));
#elif defined(__AVX2__)
    __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t), (__m256i)k);
    __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t + 8), (__m256i)k);
    return (fw_nf)_mm256_blendv_ps(lo, hi, (__m256)(k << 28));
#else
    fw_nf r;
    for (int j = 0; j < FW_NF; j++) r[j] = t[k[j] & 15];
    return r;
#endif
}

/* ----------------------------------------------------------------- sqrt */

/* y[i] = sqrt(x[i]); y may be x. Correctly rounded (IEEE), as libm's sqrt:
   the same bits as the scalar loop, without its errno branch. */
static inline void fw_sqrt_d(const double *x, double *y, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(y + i, _mm512_sqrt_pd(_mm512_loadu_pd(x + i)));
#elif defined(__AVX__)
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
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_sqrt_ps(_mm512_loadu_ps(x + i)));
#elif defined(__AVX__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
#elif defined(__SSE2__)
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(y + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
#endif
    for (; i < n; i++) y[i] = sqrtf(x[i]);
}

/* ------------------------------------------------------------------ sum */

/* The sum of n elements: 256 bytes of lanes (32 float64 / 64 float32), held
   as FW_SK of the variant's vectors (piece q: lanes q * FW_ND or q * FW_NF
   onwards); lane j sums the elements i = j (mod lanes) pairwise, down to
   leaves of 8 consecutive steps (256 float64 / 512 float32 elements), so the
   error grows as log2(n), like NumPy's pairwise sum. The lanes are combined
   in a fixed tree, then the tail (n mod lanes elements) is added in order,
   starting from +0.0 (so a sum of -0.0s is +0.0, as NumPy's). (Until the
   kernels v5 these lanes were eight 32-byte GCC vectors, which gcc kept in
   memory in the x86-64-v2 build: a sum went at a third of the memory's speed,
   a max at a sixth; the lanes and their order are the same.)

   The "2" variants reduce two arrays of the same length at once, with the
   very same operations on each (so the same bits as two single calls): two
   memory streams per core read ~1.6x faster than one on the machines we
   measured (the reductions call them on two distant blocks). */
#define FW_SB 256             /* bytes of lanes of a sum or a max */
#define FW_SK (FW_SB / FW_NB) /* the variant's vectors that hold them */
#define FW_SUM_LEAF_D 256
#define FW_SUM_LEAF_F 512
typedef struct { fw_nd v[FW_SK]; } fw_lanesd;
typedef struct { fw_nf v[FW_SK]; } fw_lanesf;

/* FW_VSUM1/2(name, T, S, NL, LEAF, LD): the pairwise lane sums of one or two
   streams (T: element, S: the lanes, NL: lanes of one piece, LD: its load) */
#define FW_VSUM1(name, T, S, NL, LEAF, LD)                                     \
    static void name(const T *x, ptrdiff_t n, S *acc) {                        \
        /* n: a positive multiple of the lanes */                              \
        const ptrdiff_t L = FW_SB / sizeof(T);                                 \
        ptrdiff_t i, h;                                                        \
        int q;                                                                 \
        S a, r;                                                                \
        if (n <= LEAF) {                                                       \
            for (q = 0; q < FW_SK; q++) a.v[q] = LD(x + q * NL);               \
            for (i = L; i < n; i += L)                                         \
                for (q = 0; q < FW_SK; q++) a.v[q] += LD(x + i + q * NL);      \
            *acc = a;                                                          \
            return;                                                            \
        }                                                                      \
        h = n / 2;                                                             \
        h -= h % L;                                                            \
        name(x, h, &a);                                                        \
        name(x + h, n - h, &r);                                                \
        for (q = 0; q < FW_SK; q++) a.v[q] += r.v[q];                          \
        *acc = a;                                                              \
    }
#define FW_VSUM2(name, T, S, NL, LEAF, LD)                                     \
    static void name(const T *x, const T *y, ptrdiff_t n, S *acc, S *bcc) {    \
        const ptrdiff_t L = FW_SB / sizeof(T);                                 \
        ptrdiff_t i, h;                                                        \
        int q;                                                                 \
        S a, b, r, s;                                                          \
        if (n <= LEAF) {                                                       \
            for (q = 0; q < FW_SK; q++) {                                      \
                a.v[q] = LD(x + q * NL);                                       \
                b.v[q] = LD(y + q * NL);                                       \
            }                                                                  \
            for (i = L; i < n; i += L)                                         \
                for (q = 0; q < FW_SK; q++) {                                  \
                    a.v[q] += LD(x + i + q * NL);                              \
                    b.v[q] += LD(y + i + q * NL);                              \
                }                                                              \
            *acc = a;                                                          \
            *bcc = b;                                                          \
            return;                                                            \
        }                                                                      \
        h = n / 2;                                                             \
        h -= h % L;                                                            \
        name(x, y, h, &a, &b);                                                 \
        name(x + h, y + h, n - h, &r, &s);                                     \
        for (q = 0; q < FW_SK; q++) {                                          \
            a.v[q] += r.v[q];                                                  \
            b.v[q] += s.v[q];                                                  \
        }                                                                      \
        *acc = a;                                                              \
        *bcc = b;                                                              \
    }

FW_VSUM1(fw_vsum_d, double, fw_lanesd, FW_ND, FW_SUM_LEAF_D, fw_ldd)
FW_VSUM2(fw_vsum2_d, double, fw_lanesd, FW_ND, FW_SUM_LEAF_D, fw_ldd)
FW_VSUM1(fw_vsum_f, float, fw_lanesf, FW_NF, FW_SUM_LEAF_F, fw_ldf)
FW_VSUM2(fw_vsum2_f, float, fw_lanesf, FW_NF, FW_SUM_LEAF_F, fw_ldf)

/* the lanes (when m > 0) combined, then the tail x[m:n]: the 32 float64 lanes
   are 8 groups of 4 (group k: lanes 4k..4k+3), added as
   ((g0 + g4) + (g2 + g6)) + ((g1 + g5) + (g3 + g7)) lane for lane, then those
   4 as (l0 + l2) + (l1 + l3); the 64 float32 lanes likewise, 8 groups of 8 and
   ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) */
static inline double fw_sum_end_d(const fw_lanesd *acc, const double *x, ptrdiff_t m,
                                  ptrdiff_t n) {
    double s = 0.0, l[32], a[4];
    if (m > 0) {
        memcpy(l, acc, sizeof l);
        for (int j = 0; j < 4; j++)
            a[j] = ((l[j] + l[16 + j]) + (l[8 + j] + l[24 + j])) +
                   ((l[4 + j] + l[20 + j]) + (l[12 + j] + l[28 + j]));
        s += (a[0] + a[2]) + (a[1] + a[3]);
    }
    for (ptrdiff_t i = m; i < n; i++) s += x[i];
    return s;
}

static inline float fw_sum_end_f(const fw_lanesf *acc, const float *x, ptrdiff_t m,
                                 ptrdiff_t n) {
    float s = 0.0f, l[64], a[8];
    if (m > 0) {
        memcpy(l, acc, sizeof l);
        for (int j = 0; j < 8; j++)
            a[j] = ((l[j] + l[32 + j]) + (l[16 + j] + l[48 + j])) +
                   ((l[8 + j] + l[40 + j]) + (l[24 + j] + l[56 + j]));
        s += ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    }
    for (ptrdiff_t i = m; i < n; i++) s += x[i];
    return s;
}

static inline double fw_sum_d(const double *x, ptrdiff_t n) {
    ptrdiff_t m = n - n % 32;
    fw_lanesd acc;
    if (m > 0) fw_vsum_d(x, m, &acc);
    return fw_sum_end_d(&acc, x, m, n);
}

static inline float fw_sum_f(const float *x, ptrdiff_t n) {
    ptrdiff_t m = n - n % 64;
    fw_lanesf acc;
    if (m > 0) fw_vsum_f(x, m, &acc);
    return fw_sum_end_f(&acc, x, m, n);
}

static inline void fw_sum2_d(const double *x, const double *y, ptrdiff_t n, double *sx,
                             double *sy) {
    ptrdiff_t m = n - n % 32;
    fw_lanesd acc, bcc;
    if (m > 0) fw_vsum2_d(x, y, m, &acc, &bcc);
    *sx = fw_sum_end_d(&acc, x, m, n);
    *sy = fw_sum_end_d(&bcc, y, m, n);
}

static inline void fw_sum2_f(const float *x, const float *y, ptrdiff_t n, float *sx,
                             float *sy) {
    ptrdiff_t m = n - n % 64;
    fw_lanesf acc, bcc;
    if (m > 0) fw_vsum2_f(x, y, m, &acc, &bcc);
    *sx = fw_sum_end_f(&acc, x, m, n);
    *sy = fw_sum_end_f(&bcc, y, m, n);
}

/* -------------------------------------------------------------- max/min */

/* The max (is_max) or min of n >= 1 elements; NaN if any element is NaN
   (the first NaN of x). 256 bytes of lanes take `v > acc ? v : acc` (min:
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

/* FW_VMAX1/2(name, T, S, V, M, NL, LD): max/min lanes of one or two streams
   over x[:m] (and y[:m]), m a positive multiple of the lanes */
#define FW_VMAX1(name, T, S, V, M, NL, LD)                                     \
    static void name(const T *x, ptrdiff_t m, int is_max, S *acc, M *nan) {    \
        const ptrdiff_t L = FW_SB / sizeof(T);                                 \
        ptrdiff_t i;                                                           \
        int q;                                                                 \
        S a;                                                                   \
        M f = *nan;                                                            \
        V w;                                                                   \
        for (q = 0; q < FW_SK; q++) a.v[q] = LD(x + q * NL);                   \
        if (is_max) {                                                          \
            for (i = 0; i < m; i += L)                                         \
                for (q = 0; q < FW_SK; q++) {                                  \
                    w = LD(x + i + q * NL);                                    \
                    FW_MAXSTEP(V, M, a.v[q], w, f, >);                         \
                }                                                              \
        } else {                                                               \
            for (i = 0; i < m; i += L)                                         \
                for (q = 0; q < FW_SK; q++) {                                  \
                    w = LD(x + i + q * NL);                                    \
                    FW_MAXSTEP(V, M, a.v[q], w, f, <);                         \
                }                                                              \
        }                                                                      \
        *acc = a;                                                              \
        *nan = f;                                                              \
    }
#define FW_VMAX2(name, T, S, V, M, NL, LD)                                     \
    static void name(const T *x, const T *y, ptrdiff_t m, int is_max, S *acc, S *bcc, \
                     M *nan, M *nbn) {                                         \
        const ptrdiff_t L = FW_SB / sizeof(T);                                 \
        ptrdiff_t i;                                                           \
        int q;                                                                 \
        S a, b;                                                                \
        M f = *nan, g = *nbn;                                                  \
        V w, u;                                                                \
        for (q = 0; q < FW_SK; q++) {                                          \
            a.v[q] = LD(x + q * NL);                                           \
            b.v[q] = LD(y + q * NL);                                           \
        }                                                                      \
        if (is_max) {                                                          \
            for (i = 0; i < m; i += L)                                         \
                for (q = 0; q < FW_SK; q++) {                                  \
                    w = LD(x + i + q * NL);                                    \
                    u = LD(y + i + q * NL);                                    \
                    FW_MAXSTEP(V, M, a.v[q], w, f, >);                         \
                    FW_MAXSTEP(V, M, b.v[q], u, g, >);                         \
                }                                                              \
        } else {                                                               \
            for (i = 0; i < m; i += L)                                         \
                for (q = 0; q < FW_SK; q++) {                                  \
                    w = LD(x + i + q * NL);                                    \
                    u = LD(y + i + q * NL);                                    \
                    FW_MAXSTEP(V, M, a.v[q], w, f, <);                         \
                    FW_MAXSTEP(V, M, b.v[q], u, g, <);                         \
                }                                                              \
        }                                                                      \
        *acc = a;                                                              \
        *bcc = b;                                                              \
        *nan = f;                                                              \
        *nbn = g;                                                              \
    }

FW_VMAX1(fw_vmax_d, double, fw_lanesd, fw_nd, fw_nl, FW_ND, fw_ldd)
FW_VMAX2(fw_vmax2_d, double, fw_lanesd, fw_nd, fw_nl, FW_ND, fw_ldd)
FW_VMAX1(fw_vmax_f, float, fw_lanesf, fw_nf, fw_ni, FW_NF, fw_ldf)
FW_VMAX2(fw_vmax2_f, float, fw_lanesf, fw_nf, fw_ni, FW_NF, fw_ldf)

/* FW_MAXEND(name, T, S, M, NL): the lanes (when m > 0) combined in lane
   order, then the tail x[m:n]; the first NaN of x if there is any NaN */
#define FW_MAXEND(name, T, S, M, NL)                                           \
    static inline T name(const S *acc, M nanv, const T *x, ptrdiff_t m, ptrdiff_t n, \
                         int is_max) {                                         \
        T r = x[0], v, l[FW_SB / sizeof(T)];                                   \
        int j, nan = 0;                                                        \
        ptrdiff_t i;                                                           \
        if (m > 0) {                                                           \
            for (j = 0; j < NL; j++) nan |= nanv[j] != 0;                      \
            memcpy(l, acc, sizeof l);                                          \
            r = l[0];                                                          \
            for (j = 0; j < (int)(FW_SB / sizeof(T)); j++) {                   \
                v = l[j];                                                      \
                r = (is_max ? v > r : v < r) ? v : r;                          \
            }                                                                  \
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

FW_MAXEND(fw_max_end_d, double, fw_lanesd, fw_nl, FW_ND)
FW_MAXEND(fw_max_end_f, float, fw_lanesf, fw_ni, FW_NF)

static inline double fw_max_d(const double *x, ptrdiff_t n, int is_max) {
    ptrdiff_t m = n - n % 32;
    fw_lanesd acc;
    fw_nl nan = {0};
    if (m > 0) fw_vmax_d(x, m, is_max, &acc, &nan);
    return fw_max_end_d(&acc, nan, x, m, n, is_max);
}

static inline float fw_max_f(const float *x, ptrdiff_t n, int is_max) {
    ptrdiff_t m = n - n % 64;
    fw_lanesf acc;
    fw_ni nan = {0};
    if (m > 0) fw_vmax_f(x, m, is_max, &acc, &nan);
    return fw_max_end_f(&acc, nan, x, m, n, is_max);
}

static inline void fw_max2_d(const double *x, const double *y, ptrdiff_t n, int is_max,
                             double *rx, double *ry) {
    ptrdiff_t m = n - n % 32;
    fw_lanesd acc, bcc;
    fw_nl nan = {0}, nbn = {0};
    if (m > 0) fw_vmax2_d(x, y, m, is_max, &acc, &bcc, &nan, &nbn);
    *rx = fw_max_end_d(&acc, nan, x, m, n, is_max);
    *ry = fw_max_end_d(&bcc, nbn, y, m, n, is_max);
}

static inline void fw_max2_f(const float *x, const float *y, ptrdiff_t n, int is_max,
                             float *rx, float *ry) {
    ptrdiff_t m = n - n % 64;
    fw_lanesf acc, bcc;
    fw_ni nan = {0}, nbn = {0};
    if (m > 0) fw_vmax2_f(x, y, m, is_max, &acc, &bcc, &nan, &nbn);
    *rx = fw_max_end_f(&acc, nan, x, m, n, is_max);
    *ry = fw_max_end_f(&bcc, nbn, y, m, n, is_max);
}

/* ------------------------------------------------------ row-op helpers */

/* The row ops (softmax, log_softmax, layer_norm) work on rows of a few hundred
   to a few thousand elements, where the lanes' combination and a scalar tail
   cost as much as the loop. Their sums and maxima run in "row lanes": 64
   bytes (16 float32 / 8 float64 lanes) whatever the variant, held as FW_NK
   native vectors (one under AVX-512, two under AVX2, four under SSE), piece q
   holding row lanes q * FW_NF (or FW_ND) onwards: the same lane-wise
   arithmetic in each variant, so the same bits. The last partial 64 bytes of
   a row are taken as one whole (overlapping the one before it, the repeated
   lanes masked out where they would count twice) instead of a tail one
   element at a time. */
#define FW_RLF 16 /* float row lanes */
#define FW_RLD 8  /* double row lanes */
typedef struct { fw_nf v[FW_NK]; } fw_rowf;
typedef struct { fw_nd v[FW_NK]; } fw_rowd;

/* FW_ROWACC(name, T, R, N, NI, NL, W, LD, IOTA): x[:k] added into the row
   lanes of a[0..3]: each 4W elements in turn lane for lane, then each
   remaining W into a[0], then the last k mod W (when k >= W) as the row
   vector x[k-W:k] with its first lanes (the elements already added) zeroed.
   Every call but the last one of a row gives a multiple of 4W elements, so
   where an element lands depends only on its index and the row's length: the
   same bits in every variant and for any split of the rows between threads.
   Adding +0.0 changes no sum but that of a -0.0 lane. Four accumulators: an
   add's latency is several cycles. */
#define FW_ROWACC(name, T, R, N, NI, NL, W, LD, IOTA)                          \
    static inline void name(R a[4], const T *x, ptrdiff_t k) {                 \
        ptrdiff_t i = 0;                                                       \
        int j, q;                                                              \
        for (; i + 4 * W <= k; i += 4 * W)                                     \
            for (j = 0; j < 4; j++)                                            \
                for (q = 0; q < FW_NK; q++)                                    \
                    a[j].v[q] += LD(x + i + j * W + q * NL);                   \
        for (; i + W <= k; i += W)                                             \
            for (q = 0; q < FW_NK; q++) a[0].v[q] += LD(x + i + q * NL);       \
        if (i < k && k >= W) {                                                 \
            /* lanes >= W - (k - i) are new */                                 \
            NI first = (NI){0} + (int)(W - (k - i));                           \
            for (q = 0; q < FW_NK; q++) {                                      \
                NI keep = IOTA() + q * NL >= first;                            \
                a[0].v[q] += (N)((NI)LD(x + k - W + q * NL) & keep);           \
            }                                                                  \
        } else if (i < k) {                                                    \
            T pad[W] = {0};                                                    \
            for (; i < k; i++) pad[i] = x[i];                                  \
            for (q = 0; q < FW_NK; q++) a[0].v[q] += LD(pad + q * NL);         \
        }                                                                      \
    }
FW_ROWACC(fw_rowacc_f, float, fw_rowf, fw_nf, fw_ni, FW_NF, FW_RLF, fw_ldf, fw_iota_i)
FW_ROWACC(fw_rowacc_d, double, fw_rowd, fw_nd, fw_nl, FW_ND, FW_RLD, fw_ldd, fw_iota_l)

/* the 64-byte row vector (a[0] + a[2]) + (a[1] + a[3]), lane for lane, into h */
static inline void fw_rowf_store(float h[FW_RLF], const fw_rowf a[4]) {
    for (int q = 0; q < FW_NK; q++)
        fw_stf(h + q * FW_NF, (a[0].v[q] + a[2].v[q]) + (a[1].v[q] + a[3].v[q]));
}
static inline void fw_rowd_store(double h[FW_RLD], const fw_rowd a[4]) {
    for (int q = 0; q < FW_NK; q++)
        fw_std(h + q * FW_ND, (a[0].v[q] + a[2].v[q]) + (a[1].v[q] + a[3].v[q]));
}

/* The 4W row lanes of a[0..3] summed in a fixed tree. */
static inline float fw_rowsum_end_f(const fw_rowf a[4]) {
    float v[FW_RLF], h[8];
    fw_rowf_store(v, a);
    for (int j = 0; j < 8; j++) h[j] = v[j] + v[j + 8];
    return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}
/* the 8 lanes of v summed in a fixed tree */
static inline double fw_lanes8_d(const double v[8]) {
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}
static inline double fw_rowsum_end_d(const fw_rowd a[4]) {
    double v[FW_RLD];
    fw_rowd_store(v, a);
    return fw_lanes8_d(v);
}

/* FW_ROWMAX(name, T, R, N, NI, NL, W, LD): the largest of x[:n] (n >= 1) by
   `v > acc ? v : acc` in four row-lane accumulators (the last partial 64
   bytes are x[n-W:n], which takes some elements twice: harmless for a max),
   combined, then the lanes in a fixed tree. A NaN may or may not win (a row
   op that meets one makes the whole row NaN anyway, through its sum); the
   order is fixed, so the result is too. */
#define FW_VMAXSEL(N, NI, a, v)                                                \
    do {                                                                       \
        NI c_ = (v) > (a);                                                     \
        (a) = (N)(((NI)(v) & c_) | ((NI)(a) & ~c_));                           \
    } while (0)
#define FW_ROWMAX(name, T, R, N, NI, NL, W, LD)                                \
    static inline T name(const T *x, ptrdiff_t n) {                            \
        ptrdiff_t i = 0;                                                       \
        R a[4];                                                                \
        T h[W];                                                                \
        int j, w, q;                                                           \
        if (n < W) {                                                           \
            T r = x[0];                                                        \
            for (i = 1; i < n; i++) r = x[i] > r ? x[i] : r;                   \
            return r;                                                          \
        }                                                                      \
        for (q = 0; q < FW_NK; q++) a[0].v[q] = LD(x + q * NL);                \
        a[1] = a[2] = a[3] = a[0];                                             \
        for (; i + 4 * W <= n; i += 4 * W)                                     \
            for (j = 0; j < 4; j++)                                            \
                for (q = 0; q < FW_NK; q++)                                    \
                    FW_VMAXSEL(N, NI, a[j].v[q], LD(x + i + j * W + q * NL));  \
        for (; i + W <= n; i += W)                                             \
            for (q = 0; q < FW_NK; q++) FW_VMAXSEL(N, NI, a[0].v[q], LD(x + i + q * NL)); \
        if (i < n)                                                             \
            for (q = 0; q < FW_NK; q++)                                        \
                FW_VMAXSEL(N, NI, a[1].v[q], LD(x + n - W + q * NL));          \
        for (q = 0; q < FW_NK; q++) {                                          \
            FW_VMAXSEL(N, NI, a[0].v[q], a[2].v[q]);                           \
            FW_VMAXSEL(N, NI, a[1].v[q], a[3].v[q]);                           \
            FW_VMAXSEL(N, NI, a[0].v[q], a[1].v[q]);                           \
            memcpy(h + q * NL, &a[0].v[q], sizeof(N));                         \
        }                                                                      \
        for (w = W / 2; w >= 1; w /= 2)                                        \
            for (j = 0; j < w; j++) h[j] = h[j + w] > h[j] ? h[j + w] : h[j];  \
        return h[0];                                                           \
    }
FW_ROWMAX(fw_rowmax_f, float, fw_rowf, fw_nf, fw_ni, FW_NF, FW_RLF, fw_ldf)
FW_ROWMAX(fw_rowmax_d, double, fw_rowd, fw_nd, fw_nl, FW_ND, FW_RLD, fw_ldd)

/* FW_ROWDEV(name, T, LD): the sums of t = x[i] - c and of t^2 over x[:n], in
   float64 (T = float: each element widened first), for layer_norm: two pairs
   of 8-lane (64-byte) accumulators, then whole 8s into the first, then the
   last partial 8 (x[n-8:n] with the lanes already added masked out; or, for
   n < 8, the lanes built one by one), each sum's lanes in a fixed tree. */
#define FW_ROWDEV(name, T, LD)                                                 \
    static inline void name(const T *x, ptrdiff_t n, double c, double *s1, double *s2) { \
        fw_rowd a0, a1, b0, b1;                                                \
        fw_nd t0, t1;                                                          \
        ptrdiff_t i = 0;                                                       \
        int q;                                                                 \
        double h[FW_RLD], g[FW_RLD];                                           \
        for (q = 0; q < FW_NK; q++)                                            \
            a0.v[q] = a1.v[q] = b0.v[q] = b1.v[q] = (fw_nd){0};                \
        for (; i + 16 <= n; i += 16)                                           \
            for (q = 0; q < FW_NK; q++) {                                      \
                t0 = LD(x + i + q * FW_ND) - c;                                \
                t1 = LD(x + i + 8 + q * FW_ND) - c;                            \
                a0.v[q] += t0;                                                 \
                a1.v[q] += t1;                                                 \
                b0.v[q] += t0 * t0;                                            \
                b1.v[q] += t1 * t1;                                            \
            }                                                                  \
        for (; i + 8 <= n; i += 8)                                             \
            for (q = 0; q < FW_NK; q++) {                                      \
                t0 = LD(x + i + q * FW_ND) - c;                                \
                a0.v[q] += t0;                                                 \
                b0.v[q] += t0 * t0;                                            \
            }                                                                  \
        if (i < n && n >= 8) {                                                 \
            fw_nl first = (fw_nl){0} + (int)(8 - (n - i));                     \
            for (q = 0; q < FW_NK; q++) {                                      \
                fw_nl keep = fw_iota_l() + q * FW_ND >= first;                 \
                t0 = LD(x + n - 8 + q * FW_ND) - c;                            \
                t0 = (fw_nd)((fw_nl)t0 & keep);                                \
                a0.v[q] += t0;                                                 \
                b0.v[q] += t0 * t0;                                            \
            }                                                                  \
        } else if (i < n) {                                                    \
            double pad[FW_RLD] = {0};                                          \
            for (int j = 0; i + j < n; j++) pad[j] = (double)x[i + j] - c;     \
            for (q = 0; q < FW_NK; q++) {                                      \
                t0 = fw_ldd(pad + q * FW_ND);                                  \
                a0.v[q] += t0;                                                 \
                b0.v[q] += t0 * t0;                                            \
            }                                                                  \
        }                                                                      \
        for (q = 0; q < FW_NK; q++) {                                          \
            fw_std(h + q * FW_ND, a0.v[q] + a1.v[q]);                          \
            fw_std(g + q * FW_ND, b0.v[q] + b1.v[q]);                          \
        }                                                                      \
        *s1 = fw_lanes8_d(h);                                                  \
        *s2 = fw_lanes8_d(g);                                                  \
    }
FW_ROWDEV(fw_rowdev_d, double, fw_ldd)
FW_ROWDEV(fw_rowdev_fd, float, fw_ldfd)

#endif
