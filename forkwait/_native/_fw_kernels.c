/* One CPU variant of the hot loops (see _fw_kernels.h): setup.py compiles this
 * file once per variant with -DFW_VARIANT=<name> and that variant's flags. */
#include <math.h>
#include <stddef.h>

#include "_fw_kernels.h"
#include "_fw_math.h"
#include "_fw_simd.h"

#ifndef FW_VARIANT
#define FW_VARIANT baseline
#endif
#define FW_CAT2(a, b) a##b
#define FW_CAT(a, b) FW_CAT2(a, b)
#define FW_STR2(a) #a
#define FW_STR(a) FW_STR2(a)

/* ------------------------------------------------------------ unary ops */

/* One loop per op (the switch is outside the loops), so each vectorises. */
#define FW_UNARY(name, T, EXP, TANH, SIGMOID, GELU, LOG, SQRT, FABS)              \
    static void name(int op, const T *x, T *y, ptrdiff_t n) {                      \
        ptrdiff_t i;                                                               \
        switch (op) {                                                              \
        case FW_NEG: for (i = 0; i < n; i++) y[i] = -x[i]; break;                  \
        case FW_ABS: for (i = 0; i < n; i++) y[i] = FABS(x[i]); break;             \
        case FW_EXP: for (i = 0; i < n; i++) y[i] = EXP(x[i]); break;              \
        case FW_LOG: for (i = 0; i < n; i++) y[i] = LOG(x[i]); break;              \
        case FW_SQRT: SQRT(x, y, n); break;                                        \
        case FW_TANH: for (i = 0; i < n; i++) y[i] = TANH(x[i]); break;            \
        case FW_SIGMOID: for (i = 0; i < n; i++) y[i] = SIGMOID(x[i]); break;      \
        /* NaN stays NaN (as torch.relu and np.maximum(x, 0)) */                   \
        case FW_RELU: for (i = 0; i < n; i++) y[i] = x[i] < 0 ? (T)0 : x[i]; break; \
        case FW_GELU: for (i = 0; i < n; i++) y[i] = GELU(x[i]); break;            \
        default: break;                                                            \
        }                                                                          \
    }

FW_UNARY(unary_f, float, fw_expf, fw_tanhf, fw_sigmoidf, fw_geluf, logf, fw_sqrt_f, fabsf)
FW_UNARY(unary_d, double, fw_exp, fw_tanh, fw_sigmoid, fw_gelu, log, fw_sqrt_d, fabs)

/* ------------------------------------------------------------- row ops */

#define FW_BLOCK 4096 /* the reductions' block (_reduce.pyx BLOCK): same tree */
#define FW_CHUNK 256  /* stack buffer of the row ops */

/* The canonical sum of _reduce.pyx: blocks of FW_BLOCK, combined pairwise. */
#define FW_SUM_CONTIG(name, T, SUM)                                                \
    static T name(const T *x, ptrdiff_t n) {                                       \
        ptrdiff_t nb, left;                                                        \
        if (n <= FW_BLOCK) return SUM(x, n);                                       \
        nb = (n + FW_BLOCK - 1) / FW_BLOCK;                                        \
        left = ((nb + 1) / 2) * FW_BLOCK;                                          \
        return name(x, left) + name(x + left, n - left);                          \
    }
FW_SUM_CONTIG(sum_contig_f, float, fw_sum_f)
FW_SUM_CONTIG(sum_contig_d, double, fw_sum_d)

/* softmax / log_softmax of one row; y may be x (in place). */
#define FW_SOFTMAX_ROW(name, T, EXP, LOG, MAX, SUM, PSUM)                          \
    static void name(int op, const T *x, T *y, ptrdiff_t d) {                      \
        T m = MAX(x, d, 1), s = 0;                                                 \
        T buf[FW_CHUNK];                                                           \
        ptrdiff_t i, j, k;                                                         \
        if (op == FW_SOFTMAX) {                                                    \
            for (i = 0; i < d; i++) y[i] = EXP(x[i] - m);                          \
            s = 1 / SUM(y, d);                                                     \
            for (i = 0; i < d; i++) y[i] = y[i] * s;                               \
            return;                                                                \
        }                                                                          \
        for (i = 0; i < d; i++) y[i] = x[i] - m;                                   \
        for (j = 0; j < d; j += k) {                                               \
            k = j + FW_CHUNK <= d ? FW_CHUNK : d - j;                              \
            for (i = 0; i < k; i++) buf[i] = EXP(y[j + i]);                        \
            s = s + PSUM(buf, k);                                                  \
        }                                                                          \
        s = LOG(s);                                                                \
        for (i = 0; i < d; i++) y[i] = y[i] - s;                                   \
    }
FW_SOFTMAX_ROW(softmax_row_f, float, fw_expf, logf, fw_max_f, sum_contig_f, fw_sum_f)
FW_SOFTMAX_ROW(softmax_row_d, double, fw_exp, log, fw_max_d, sum_contig_d, fw_sum_d)

static void softmax_f(int op, const float *x, float *y, ptrdiff_t r0, ptrdiff_t r1,
                      ptrdiff_t d) {
    for (ptrdiff_t r = r0; r < r1; r++) softmax_row_f(op, x + r * d, y + r * d, d);
}
static void softmax_d(int op, const double *x, double *y, ptrdiff_t r0, ptrdiff_t r1,
                      ptrdiff_t d) {
    for (ptrdiff_t r = r0; r < r1; r++) softmax_row_d(op, x + r * d, y + r * d, d);
}

/* (x - mean) * rstd * w + b for one row, y may be x */
#define FW_NORM_APPLY(T, x, y, d, mean, rstd, w, b)                                \
    do {                                                                           \
        ptrdiff_t i_;                                                              \
        if (w != NULL && b != NULL)                                                \
            for (i_ = 0; i_ < d; i_++) y[i_] = (T)((x[i_] - mean) * rstd * w[i_] + b[i_]); \
        else if (w != NULL)                                                        \
            for (i_ = 0; i_ < d; i_++) y[i_] = (T)((x[i_] - mean) * rstd * w[i_]); \
        else if (b != NULL)                                                        \
            for (i_ = 0; i_ < d; i_++) y[i_] = (T)((x[i_] - mean) * rstd + b[i_]); \
        else                                                                       \
            for (i_ = 0; i_ < d; i_++) y[i_] = (T)((x[i_] - mean) * rstd);         \
    } while (0)

/* layer_norm of float32 rows: mean and variance accumulated in float64
   (fw_sum_fd, fw_sqdev_fd), so a constant row gives exactly 0 (then bias) and
   the results are correctly rounded in all but rare cases. */
static void layer_norm_f(const float *x, float *y, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t d,
                         const float *w, const float *b, double eps) {
    for (ptrdiff_t r = r0; r < r1; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        double mean = fw_sum_fd(xr, d) / d;
        double var = fw_sqdev_fd(xr, d, mean);
        double rstd = 1 / sqrt(var / d + eps);
        FW_NORM_APPLY(float, xr, yr, d, mean, rstd, w, b);
    }
}

/* float64 rows: the corrected two-pass algorithm (Chan, Golub & LeVeque): the
   second pass also sums the deviations, which corrects the rounding of the
   mean; a constant row then gives mean == c exactly, as in float32. */
static void layer_norm_d(const double *x, double *y, ptrdiff_t r0, ptrdiff_t r1,
                         ptrdiff_t d, const double *w, const double *b, double eps) {
    double dev[FW_CHUNK], sq[FW_CHUNK];
    for (ptrdiff_t r = r0; r < r1; r++) {
        const double *xr = x + r * d;
        double *yr = y + r * d;
        double mean = sum_contig_d(xr, d) / d, var = 0, sdev = 0, s1, s2, t, rstd;
        ptrdiff_t i, j, k;
        for (j = 0; j < d; j += k) {
            k = j + FW_CHUNK <= d ? FW_CHUNK : d - j;
            for (i = 0; i < k; i++) {
                t = xr[j + i] - mean;
                dev[i] = t;
                sq[i] = t * t;
            }
            fw_sum2_d(dev, sq, k, &s1, &s2);
            sdev = sdev + s1;
            var = var + s2;
        }
        mean = mean + sdev / d;
        var = var - sdev * sdev / d;
        if (var < 0) var = 0;
        rstd = 1 / sqrt(var / d + eps);
        FW_NORM_APPLY(double, xr, yr, d, mean, rstd, w, b);
    }
}

FW_HIDDEN const fw_kernels FW_CAT(fw_kernels_, FW_VARIANT) = {
    FW_STR(FW_VARIANT), unary_f, unary_d, softmax_f, softmax_d, layer_norm_f, layer_norm_d,
};
