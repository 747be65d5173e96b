/* The hot loops of forkwait's kernels, compiled once per CPU variant.
 *
 * _fw_kernels.c is compiled several times by setup.py, each time with other
 * instruction-set flags and FW_VARIANT set (baseline: x86-64-v2 on x86-64,
 * the compiler's default elsewhere; avx2: AVX2 + FMA; avx512: AVX-512
 * F/DQ/BW/VL), and every copy fills one table of function pointers. The
 * module _dispatch picks one table at import, the best this CPU runs
 * (FORKWAIT_CPU_VARIANT overrides), as NumPy's runtime dispatch does.
 *
 * Same bits from every variant: the source writes every operation and its
 * order; the build passes -ffp-contract=off (no fused multiply-add the source
 * does not write), lanes and accumulators are combined in a fixed order, and
 * the only library calls (log) are the same scalar libm calls in every
 * variant. A variant changes the width of the vector instructions, never the
 * arithmetic; where it has a cheaper instruction for the very same value
 * (AVX-512's vscalefps for a scaling by 2^n that rounds once, vpermps for a
 * table lookup) it uses it. tests/test_ops_dispatch.py checks it.
 */
#ifndef FORKWAIT_FW_KERNELS_H
#define FORKWAIT_FW_KERNELS_H

#include <stddef.h>

/* unary op codes (the Python layer passes them; PROBE is _elementwise's) */
enum {
    FW_NEG = 0, FW_ABS = 1, FW_EXP = 2, FW_LOG = 3, FW_SQRT = 4,
    FW_TANH = 5, FW_SIGMOID = 6, FW_RELU = 7, FW_GELU = 8
};
/* row op codes */
enum { FW_SOFTMAX = 0, FW_LOG_SOFTMAX = 1 };

typedef struct fw_kernels {
    const char *name;
    /* the instruction-set extensions this copy was compiled for (from the
       compiler's own macros: what the variant's flags turned on) */
    const char *isa;
    /* y[i] = op(x[i]) for i < n; y may be x */
    void (*unary_f)(int op, const float *x, float *y, ptrdiff_t n);
    void (*unary_d)(int op, const double *x, double *y, ptrdiff_t n);
    /* softmax / log_softmax of rows [r0, r1) of x viewed as (rows, d) */
    void (*softmax_f)(int op, const float *x, float *y, ptrdiff_t r0, ptrdiff_t r1,
                      ptrdiff_t d);
    void (*softmax_d)(int op, const double *x, double *y, ptrdiff_t r0, ptrdiff_t r1,
                      ptrdiff_t d);
    /* layer_norm of rows [r0, r1); w, b: length d or NULL */
    void (*layer_norm_f)(const float *x, float *y, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t d,
                         const float *w, const float *b, double eps);
    void (*layer_norm_d)(const double *x, double *y, ptrdiff_t r0, ptrdiff_t r1,
                         ptrdiff_t d, const double *w, const double *b, double eps);
    /* the reductions' blocks (_fw_simd.h): the pairwise sum of x[:n]; the max
       (is_max) or min of x[:n], n >= 1; the "2" ones, two arrays at once */
    float (*sum_f)(const float *x, ptrdiff_t n);
    double (*sum_d)(const double *x, ptrdiff_t n);
    void (*sum2_f)(const float *x, const float *y, ptrdiff_t n, float *sx, float *sy);
    void (*sum2_d)(const double *x, const double *y, ptrdiff_t n, double *sx, double *sy);
    float (*max_f)(const float *x, ptrdiff_t n, int is_max);
    double (*max_d)(const double *x, ptrdiff_t n, int is_max);
    void (*max2_f)(const float *x, const float *y, ptrdiff_t n, int is_max, float *rx,
                   float *ry);
    void (*max2_d)(const double *x, const double *y, ptrdiff_t n, int is_max, double *rx,
                   double *ry);
} fw_kernels;

#define FW_HIDDEN __attribute__((visibility("hidden")))

extern FW_HIDDEN const fw_kernels fw_kernels_baseline;
#ifdef FW_BUILT_AVX2
extern FW_HIDDEN const fw_kernels fw_kernels_avx2;
#endif
#ifdef FW_BUILT_AVX512
extern FW_HIDDEN const fw_kernels fw_kernels_avx512;
#endif

/* The variants built into this module, best first, and whether this CPU
   (and its OS) runs each. */
static inline const fw_kernels *fw_variant_table(int i) {
    const fw_kernels *all[] = {
#ifdef FW_BUILT_AVX512
        &fw_kernels_avx512,
#endif
#ifdef FW_BUILT_AVX2
        &fw_kernels_avx2,
#endif
        &fw_kernels_baseline,
    };
    return i >= 0 && i < (int)(sizeof(all) / sizeof(all[0])) ? all[i] : NULL;
}

static inline int fw_variant_runs(const fw_kernels *k) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
#ifdef FW_BUILT_AVX512
    if (k == &fw_kernels_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#ifdef FW_BUILT_AVX2
    if (k == &fw_kernels_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#endif
    return k == &fw_kernels_baseline;
}

#endif
