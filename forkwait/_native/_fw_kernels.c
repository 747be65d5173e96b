/* One CPU variant of the hot loops (see _fw_kernels.h): setup.py compiles this
 * file once per variant with -DFW_VARIANT=<name> and that variant's flags. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

#define FW_RUN 1024 /* elements per range check of the fast/full loops */

/* y[i] = F(x[i]) with F = FAST on every run of FW_RUN elements whose |x| are
   all below LIM (NaN is not), FULL on the others; FAST and FULL agree where
   both apply (_fw_math.h), so the result does not depend on the runs. */
#define FW_FAST_FULL(T, U, x, y, n, ABS, LIM, FAST, FULL)                           \
    do {                                                                           \
        ptrdiff_t b_, i_, m_;                                                      \
        T buf_[FW_RUN];                                                            \
        for (b_ = 0; b_ < n; b_ += FW_RUN) {                                       \
            const T *xb_ = x + b_;                                                 \
            T *yb_ = y + b_;                                                       \
            /* U: an integer as wide as T, so the flag vectorises lane for lane */ \
            U ok_ = 1;                                                             \
            m_ = n - b_ < FW_RUN ? n - b_ : FW_RUN;                                \
            if (xb_ != yb_) { /* one pass, redone with FULL if needed */           \
                for (i_ = 0; i_ < m_; i_++) {                                      \
                    yb_[i_] = FAST(xb_[i_]);                                       \
                    ok_ &= (U)(ABS(xb_[i_]) < LIM);                                \
                }                                                                  \
                if (ok_) continue;                                                 \
            } else { /* in place: into a buffer first */                           \
                for (i_ = 0; i_ < m_; i_++) {                                      \
                    buf_[i_] = FAST(xb_[i_]);                                      \
                    ok_ &= (U)(ABS(xb_[i_]) < LIM);                                \
                }                                                                  \
                if (ok_) {                                                         \
                    memcpy(yb_, buf_, m_ * sizeof(T));                             \
                    continue;                                                      \
                }                                                                  \
            }                                                                      \
            for (i_ = 0; i_ < m_; i_++) yb_[i_] = FULL(xb_[i_]);                   \
        }                                                                          \
    } while (0)

/* y[i] = F(x[i]) for F a function of the variant's vectors (_fw_math.h):
   whole vectors, then the last partial one through a zero-padded buffer; y
   may be x. */
#define FW_VMAP(T, W, LD, ST, F, x, y, n)                                         \
    do {                                                                       \
        ptrdiff_t i_ = 0;                                                      \
        for (; i_ + W <= n; i_ += W) ST(y + i_, F(LD(x + i_)));                \
        if (i_ < n) {                                                          \
            T b_[W];                                                           \
            memset(b_, 0, sizeof b_);                                          \
            memcpy(b_, x + i_, (size_t)(n - i_) * sizeof(T));                  \
            ST(b_, F(LD(b_)));                                                 \
            memcpy(y + i_, b_, (size_t)(n - i_) * sizeof(T));                  \
        }                                                                      \
    } while (0)

/* One loop per op (the switch is outside the loops), so each vectorises. */
static void unary_f_run(int op, const float *x, float *y, ptrdiff_t n) {
    ptrdiff_t i;
    switch (op) {
    case FW_NEG: for (i = 0; i < n; i++) y[i] = -x[i]; break;
    case FW_ABS: for (i = 0; i < n; i++) y[i] = fabsf(x[i]); break;
    case FW_EXP: FW_FAST_FULL(float, uint32_t, x, y, n, fabsf, FW_EXPF_FAST, fw_expf_fast, fw_expf); break;
    case FW_LOG: for (i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case FW_SQRT: fw_sqrt_f(x, y, n); break;
    case FW_TANH: FW_VMAP(float, FW_NF, fw_ldf, fw_stf, fw_tanhf_v, x, y, n); break;
    case FW_SIGMOID:
        FW_FAST_FULL(float, uint32_t, x, y, n, fabsf, FW_EXPF_FAST, fw_sigmoidf_fast, fw_sigmoidf);
        break;
    /* NaN stays NaN (as torch.relu and np.maximum(x, 0)) */
    case FW_RELU: for (i = 0; i < n; i++) y[i] = x[i] < 0 ? 0.0f : x[i]; break;
    case FW_GELU: FW_FAST_FULL(float, uint32_t, x, y, n, fabsf, FW_GELUF_FAST, fw_geluf_fast, fw_geluf); break;
    default: break;
    }
}

static void unary_d_run(int op, const double *x, double *y, ptrdiff_t n) {
    ptrdiff_t i;
    switch (op) {
    case FW_NEG: for (i = 0; i < n; i++) y[i] = -x[i]; break;
    case FW_ABS: for (i = 0; i < n; i++) y[i] = fabs(x[i]); break;
    case FW_EXP: FW_FAST_FULL(double, uint64_t, x, y, n, fabs, FW_EXP_FAST, fw_exp_fast, fw_exp); break;
    case FW_LOG: for (i = 0; i < n; i++) y[i] = log(x[i]); break;
    case FW_SQRT: fw_sqrt_d(x, y, n); break;
    case FW_TANH: for (i = 0; i < n; i++) y[i] = fw_tanh(x[i]); break;
    case FW_SIGMOID:
        FW_FAST_FULL(double, uint64_t, x, y, n, fabs, FW_EXP_FAST, fw_sigmoid_fast, fw_sigmoid);
        break;
    case FW_RELU: for (i = 0; i < n; i++) y[i] = x[i] < 0 ? 0.0 : x[i]; break;
    case FW_GELU: for (i = 0; i < n; i++) y[i] = fw_gelu(x[i]); break;
    default: break;
    }
}

/* Elements before y + h is 64-byte aligned (none where y is not aligned to
   its element): the loops above then store whole cache lines. NumPy's large
   arrays start 16 bytes past a page, so every 64-byte store of a float32
   loop spanned two lines (exp of 10^6 float32, out of cache: 10% slower). The
   results do not depend on where a loop starts (element-wise, and the
   fast/full runs agree bit for bit). */
static ptrdiff_t fw_head(const void *y, ptrdiff_t n, size_t size) {
    size_t a = (size_t)((uintptr_t)y & 63);
    ptrdiff_t h = a == 0 || a % size ? 0 : (ptrdiff_t)((64 - a) / size);
    return h < n ? h : n;
}

static void unary_f(int op, const float *x, float *y, ptrdiff_t n) {
    ptrdiff_t h = fw_head(y, n, sizeof(float));
    if (h > 0) unary_f_run(op, x, y, h);
    unary_f_run(op, x + h, y + h, n - h);
}

static void unary_d(int op, const double *x, double *y, ptrdiff_t n) {
    ptrdiff_t h = fw_head(y, n, sizeof(double));
    if (h > 0) unary_d_run(op, x, y, h);
    unary_d_run(op, x + h, y + h, n - h);
}

/* ------------------------------------------------------------- row ops */

/* softmax / log_softmax of one row; y may be x (in place). Three passes over
   the row (in cache): the max; exp(x - max) a run of FW_RUN at a time (the
   fast exp where every x - max of the run is in its range, which the same
   loop checks, else the run again with the full one), summed into vector
   lanes as it goes; the scale by 1 / sum (log_softmax: (x - max) - log(sum)).
   A NaN anywhere makes the sum, and so the whole row, NaN. */
#define FW_SOFTMAX_ROW(name, T, U, V, FAST, FULL, LIM, LOG, ROWMAX, ACC, END)    \
    static void name(int op, const T *x, T *y, ptrdiff_t d) {                  \
        T m = ROWMAX(x, d), s, t;                                              \
        T buf[FW_RUN];                                                         \
        V a[4];                                                                \
        ptrdiff_t i, j, k;                                                     \
        memset(a, 0, sizeof a);                                                \
        for (j = 0; j < d; j += k) {                                           \
            const T *xj = x + j;                                               \
            /* softmax out of place: straight into y (log_softmax needs x) */  \
            T *e = op == FW_SOFTMAX && x != y ? y + j : buf;                   \
            U ok = 1;                                                          \
            k = d - j < FW_RUN ? d - j : FW_RUN;                               \
            for (i = 0; i < k; i++) {                                          \
                t = xj[i] - m;                                                 \
                e[i] = FAST(t);                                                \
                ok &= (U)(t > -(LIM)); /* false for NaN */                     \
            }                                                                  \
            if (!ok)                                                           \
                for (i = 0; i < k; i++) e[i] = FULL(xj[i] - m);                \
            ACC(a, e, k);                                                      \
            if (op == FW_SOFTMAX && e == buf) memcpy(y + j, buf, (size_t)k * sizeof(T)); \
        }                                                                      \
        s = END(a);                                                            \
        if (op == FW_SOFTMAX) {                                                \
            s = 1 / s;                                                         \
            for (i = 0; i < d; i++) y[i] = y[i] * s;                           \
        } else {                                                               \
            s = LOG(s);                                                        \
            for (i = 0; i < d; i++) y[i] = (x[i] - m) - s;                     \
        }                                                                      \
    }
FW_SOFTMAX_ROW(softmax_row_f, float, uint32_t, fw_rowf, fw_expf_fast, fw_expf, FW_EXPF_FAST,
               logf, fw_rowmax_f, fw_rowacc_f, fw_rowsum_end_f)
FW_SOFTMAX_ROW(softmax_row_d, double, uint64_t, fw_rowd, fw_exp_fast, fw_exp, FW_EXP_FAST, log,
               fw_rowmax_d, fw_rowacc_d, fw_rowsum_end_d)

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

/* layer_norm of float32 rows: one pass for the statistics, in float64 and
   shifted by the row's first element c (var = E[t^2] - E[t]^2 with t = x - c:
   no cancellation unless c is far out in the tails, and then only in float64's
   precision, far below float32's), so a constant row has mean exactly c and
   variance exactly 0 (its result is exactly bias); then one pass
   y = (x - mean) * rstd * w + b in float32, with the mean split into two
   floats (mh + ml): x - mh is exact where x is near the mean (Sterbenz), so
   (x - mh) - ml keeps the float64 mean's precision at float32 speed. */
static void layer_norm_f(const float *x, float *y, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t d,
                         const float *w, const float *b, double eps) {
    for (ptrdiff_t r = r0; r < r1; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        double c = xr[0], s1, s2, mean, var;
        ptrdiff_t i;
        float rs, mh, ml;
        fw_rowdev_fd(xr, d, c, &s1, &s2);
        mean = s1 / d;
        var = s2 / d - mean * mean;
        if (var < 0) var = 0;
        mean = c + mean;
        mh = (float)mean;
        ml = (float)(mean - mh);
        rs = (float)(1 / sqrt(var + eps));
        if (w != NULL && b != NULL)
            for (i = 0; i < d; i++) yr[i] = fmaf(((xr[i] - mh) - ml) * rs, w[i], b[i]);
        else if (w != NULL)
            for (i = 0; i < d; i++) yr[i] = ((xr[i] - mh) - ml) * rs * w[i];
        else if (b != NULL)
            for (i = 0; i < d; i++) yr[i] = fmaf((xr[i] - mh) - ml, rs, b[i]);
        else
            for (i = 0; i < d; i++) yr[i] = ((xr[i] - mh) - ml) * rs;
    }
}

/* float64 rows: the corrected two-pass algorithm (Chan, Golub & LeVeque): the
   second pass also sums the deviations, which corrects the rounding of the
   mean; a constant row then gives mean == c exactly, as in float32. */
static void layer_norm_d(const double *x, double *y, ptrdiff_t r0, ptrdiff_t r1,
                         ptrdiff_t d, const double *w, const double *b, double eps) {
    for (ptrdiff_t r = r0; r < r1; r++) {
        const double *xr = x + r * d;
        double *yr = y + r * d;
        fw_rowd a[4];
        double mean, var, sdev, rstd;
        memset(a, 0, sizeof a);
        fw_rowacc_d(a, xr, d);
        mean = fw_rowsum_end_d(a) / d;
        fw_rowdev_d(xr, d, mean, &sdev, &var);
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
