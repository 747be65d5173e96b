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

/* y[i] = F(x[i]) for F a function of the variant's vectors (_fw_math.h):
   whole vectors, then the last partial one through a zero-padded buffer; y
   may be x. */
#define FW_VMAP(T, W, LD, ST, F, x, y, n)                                         \
    do {                                                                       \
        ptrdiff_t i_ = 0;                                                      \
        const ptrdiff_t e2_ = (n) - (n) % (2 * W), e1_ = (n) - (n) % W;        \
        for (; i_ < e2_; i_ += 2 * W) {                                        \
            ST(y + i_, F(LD(x + i_)));                                         \
            ST(y + i_ + W, F(LD(x + i_ + W)));                                 \
        }                                                                      \
        for (; i_ < e1_; i_ += W) ST(y + i_, F(LD(x + i_)));                   \
        if (i_ < n) {                                                          \
            T b_[W];                                                           \
            memset(b_, 0, sizeof b_);                                          \
            memcpy(b_, x + i_, (size_t)(n - i_) * sizeof(T));                  \
            ST(b_, F(LD(b_)));                                                 \
            memcpy(y + i_, b_, (size_t)(n - i_) * sizeof(T));                  \
        }                                                                      \
    } while (0)

/* every lane of the mask m set */
static inline int fw_all_i(fw_ni m) {
    int r = 1;
    for (int j = 0; j < FW_NF; j++) r &= m[j] != 0;
    return r;
}
static inline int fw_all_l(fw_nl m) {
    int r = 1;
    for (int j = 0; j < FW_ND; j++) r &= m[j] != 0;
    return r;
}

/* y[i] = FAST(x[i]) on every run of FW_RUN elements whose IN(x[i]) holds for
   all (a mask: |x| below the fast version's limit, false for NaN), FULL on the
   other runs; FAST and FULL agree where both apply (_fw_math.h), so the
   result does not depend on the runs. In place, a run goes through a buffer
   first. (V, M, W: the vector, its mask and its lanes; ALL: every lane of a
   mask set.) */
#define FW_VFAST_FULL(T, V, M, W, LD, ST, ALL, x, y, n, IN, FAST, FULL)          \
    do {                                                                       \
        ptrdiff_t b_, i_, m_;                                                  \
        T buf_[FW_RUN];                                                        \
        for (b_ = 0; b_ < n; b_ += FW_RUN) {                                   \
            const T *xb_ = x + b_;                                             \
            T *yb_ = y + b_;                                                   \
            T *o_ = xb_ != yb_ ? yb_ : buf_;                                   \
            M ok_ = (M){0} - 1;                                                \
            V v_;                                                              \
            m_ = n - b_ < FW_RUN ? n - b_ : FW_RUN;                            \
            for (i_ = 0; i_ < m_ - m_ % W; i_ += W) {                          \
                v_ = LD(xb_ + i_);                                             \
                ST(o_ + i_, FAST(v_));                                         \
                ok_ &= IN(v_);                                                 \
            }                                                                  \
            if (i_ < m_) {                                                     \
                T p_[W];                                                       \
                memset(p_, 0, sizeof p_);                                      \
                memcpy(p_, xb_ + i_, (size_t)(m_ - i_) * sizeof(T));           \
                v_ = LD(p_);                                                   \
                ok_ &= IN(v_);                                                 \
                ST(p_, FAST(v_));                                              \
                memcpy(o_ + i_, p_, (size_t)(m_ - i_) * sizeof(T));            \
            }                                                                  \
            if (!ALL(ok_)) FW_VMAP(T, W, LD, ST, FULL, xb_, o_, m_);            \
            if (o_ == buf_) memcpy(yb_, buf_, (size_t)m_ * sizeof(T));          \
        }                                                                      \
    } while (0)

/* the fast versions' ranges (a mask; false for NaN) */
static inline fw_ni fw_in_expf(fw_nf v) { return fw_vabsf(v) < FW_EXPF_FAST; }
static inline fw_nl fw_in_exp(fw_nd v) { return fw_vabsd(v) < FW_EXP_FAST; }
static inline fw_ni fw_in_geluf(fw_nf v) { return fw_vabsf(v) < FW_GELUF_FAST; }

/* exp and sigmoid: fast/full runs, or (AVX-512) the full version everywhere */
#if FW_FULL_IS_CHEAP
#define FW_EXP_LOOP_F(x, y, n, FAST, FULL) FW_VMAP(float, FW_NF, fw_ldf, fw_stf, FULL, x, y, n)
#define FW_EXP_LOOP_D(x, y, n, FAST, FULL) FW_VMAP(double, FW_ND, fw_ldd, fw_std, FULL, x, y, n)
#else
#define FW_EXP_LOOP_F(x, y, n, FAST, FULL)                                        \
    FW_VFAST_FULL(float, fw_nf, fw_ni, FW_NF, fw_ldf, fw_stf, fw_all_i, x, y, n, fw_in_expf, \
                  FAST, FULL)
#define FW_EXP_LOOP_D(x, y, n, FAST, FULL)                                        \
    FW_VFAST_FULL(double, fw_nd, fw_nl, FW_ND, fw_ldd, fw_std, fw_all_l, x, y, n, fw_in_exp, \
                  FAST, FULL)
#endif

/* One loop per op (the switch is outside the loops). */
static void unary_f_run(int op, const float *x, float *y, ptrdiff_t n) {
    ptrdiff_t i;
    switch (op) {
    case FW_NEG: for (i = 0; i < n; i++) y[i] = -x[i]; break;
    case FW_ABS: for (i = 0; i < n; i++) y[i] = fabsf(x[i]); break;
    case FW_EXP: FW_EXP_LOOP_F(x, y, n, fw_expf_fast_v, fw_expf_v); break;
    case FW_LOG: for (i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case FW_SQRT: fw_sqrt_f(x, y, n); break;
    case FW_TANH: FW_VMAP(float, FW_NF, fw_ldf, fw_stf, fw_tanhf_v, x, y, n); break;
    case FW_SIGMOID: FW_EXP_LOOP_F(x, y, n, fw_sigmoidf_fast_v, fw_sigmoidf_v); break;
    /* NaN stays NaN (as torch.relu and np.maximum(x, 0)) */
    case FW_RELU: for (i = 0; i < n; i++) y[i] = x[i] < 0 ? 0.0f : x[i]; break;
    case FW_GELU:
        FW_VFAST_FULL(float, fw_nf, fw_ni, FW_NF, fw_ldf, fw_stf, fw_all_i, x, y, n, fw_in_geluf,
                      fw_geluf_fast_v, fw_geluf_v);
        break;
    default: break;
    }
}

static void unary_d_run(int op, const double *x, double *y, ptrdiff_t n) {
    ptrdiff_t i;
    switch (op) {
    case FW_NEG: for (i = 0; i < n; i++) y[i] = -x[i]; break;
    case FW_ABS: for (i = 0; i < n; i++) y[i] = fabs(x[i]); break;
    case FW_EXP: FW_EXP_LOOP_D(x, y, n, fw_exp_fast_v, fw_exp_v); break;
    case FW_LOG: for (i = 0; i < n; i++) y[i] = log(x[i]); break;
    case FW_SQRT: fw_sqrt_d(x, y, n); break;
    case FW_TANH: FW_VMAP(double, FW_ND, fw_ldd, fw_std, fw_tanh_v, x, y, n); break;
    case FW_SIGMOID: FW_EXP_LOOP_D(x, y, n, fw_sigmoid_fast_v, fw_sigmoid_v); break;
    case FW_RELU: for (i = 0; i < n; i++) y[i] = x[i] < 0 ? 0.0 : x[i]; break;
    case FW_GELU: FW_VMAP(double, FW_ND, fw_ldd, fw_std, fw_gelu_v, x, y, n); break;
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

/* y[i] = F(x[i] - c) (as FW_VMAP); the padded lanes of the last partial
   vector hold c, so that they compute F(0) */
#define FW_VMAP_SHIFT(T, W, LD, ST, F, x, c, y, n)                                \
    do {                                                                       \
        ptrdiff_t i_ = 0, j_;                                                  \
        const ptrdiff_t e1_ = (n) - (n) % W;                                   \
        for (; i_ < e1_; i_ += W) ST(y + i_, F(LD(x + i_) - (c)));             \
        if (i_ < n) {                                                          \
            T b_[W];                                                           \
            for (j_ = 0; j_ < W; j_++) b_[j_] = i_ + j_ < n ? x[i_ + j_] : (c); \
            ST(b_, F(LD(b_) - (c)));                                           \
            memcpy(y + i_, b_, (size_t)(n - i_) * sizeof(T));                  \
        }                                                                      \
    } while (0)

/* softmax / log_softmax of one row; y may be x (in place). Three passes over
   the row (in cache): the max; exp(x - max) a run of FW_RUN at a time (the
   fast exp where every x - max of the run is in its range, which the same
   loop checks, else the run again with the full one; under AVX-512 the full
   one everywhere, FW_FULL_IS_CHEAP), summed into row lanes as it goes; the
   scale by 1 / sum (log_softmax: (x - max) - log(sum)). A NaN anywhere makes
   the sum, and so the whole row, NaN. */
#define FW_SOFTMAX_ROW(name, T, V, M, W, LD, ST, ALL, R, FAST, FULL, LIM, LOG, ROWMAX, ACC, \
                       END)                                                    \
    static void name(int op, const T *x, T *y, ptrdiff_t d) {                  \
        T m = ROWMAX(x, d), s;                                                 \
        T buf[FW_RUN];                                                         \
        R a[4];                                                                \
        ptrdiff_t i, j, k;                                                     \
        memset(a, 0, sizeof a);                                                \
        for (j = 0; j < d; j += k) {                                           \
            const T *xj = x + j;                                               \
            /* softmax out of place: straight into y (log_softmax needs x) */  \
            T *e = op == FW_SOFTMAX && x != y ? y + j : buf;                   \
            k = d - j < FW_RUN ? d - j : FW_RUN;                               \
            if (FW_FULL_IS_CHEAP) {                                            \
                FW_VMAP_SHIFT(T, W, LD, ST, FULL, xj, m, e, k);                \
            } else {                                                           \
                M ok = (M){0} - 1;                                             \
                V t;                                                           \
                T p[W];                                                        \
                for (i = 0; i < k - k % W; i += W) {                           \
                    t = LD(xj + i) - m;                                        \
                    ST(e + i, FAST(t));                                        \
                    ok &= t > -(LIM); /* false for NaN */                      \
                }                                                              \
                if (i < k) {                                                   \
                    for (ptrdiff_t q = 0; q < W; q++) p[q] = i + q < k ? xj[i + q] : m; \
                    t = LD(p) - m;                                             \
                    ok &= t > -(LIM);                                          \
                    ST(p, FAST(t));                                            \
                    memcpy(e + i, p, (size_t)(k - i) * sizeof(T));             \
                }                                                              \
                if (!ALL(ok)) FW_VMAP_SHIFT(T, W, LD, ST, FULL, xj, m, e, k);  \
            }                                                                  \
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
FW_SOFTMAX_ROW(softmax_row_f, float, fw_nf, fw_ni, FW_NF, fw_ldf, fw_stf, fw_all_i, fw_rowf,
               fw_expf_fast_v, fw_expf_v, FW_EXPF_FAST, logf, fw_rowmax_f, fw_rowacc_f,
               fw_rowsum_end_f)
FW_SOFTMAX_ROW(softmax_row_d, double, fw_nd, fw_nl, FW_ND, fw_ldd, fw_std, fw_all_l, fw_rowd,
               fw_exp_fast_v, fw_exp_v, FW_EXP_FAST, log, fw_rowmax_d, fw_rowacc_d,
               fw_rowsum_end_d)

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

/* ---------------------------------------------------------- reductions */

/* _fw_simd.h's block reductions, in this variant's vectors (the x86-64-v2
   build alone kept their lanes in memory: a sum read at a third of the
   memory's speed, a max at a sixth) */
static float sum_f(const float *x, ptrdiff_t n) { return fw_sum_f(x, n); }
static double sum_d(const double *x, ptrdiff_t n) { return fw_sum_d(x, n); }
static float max_f(const float *x, ptrdiff_t n, int is_max) { return fw_max_f(x, n, is_max); }
static double max_d(const double *x, ptrdiff_t n, int is_max) { return fw_max_d(x, n, is_max); }

/* what the compiler was told this copy may use (x86-64; the architecture's
   name elsewhere) */
#if defined(__x86_64__)
#define FW_ISA_X86 "x86-64"
#if defined(__SSE4_2__) && defined(__POPCNT__)
#define FW_ISA_V2 " sse4.2 popcnt"
#else
#define FW_ISA_V2 ""
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define FW_ISA_V3 " avx avx2 fma"
#else
#define FW_ISA_V3 ""
#endif
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define FW_ISA_V4 " avx512f avx512dq avx512bw avx512vl"
#else
#define FW_ISA_V4 ""
#endif
#define FW_ISA FW_ISA_X86 FW_ISA_V2 FW_ISA_V3 FW_ISA_V4
#elif defined(__aarch64__)
#define FW_ISA "aarch64"
#else
#define FW_ISA "the compiler's default"
#endif

FW_HIDDEN const fw_kernels FW_CAT(fw_kernels_, FW_VARIANT) = {
    FW_STR(FW_VARIANT), FW_ISA, unary_f, unary_d, softmax_f, softmax_d, layer_norm_f,
    layer_norm_d, sum_f, sum_d, fw_sum2_f, fw_sum2_d, max_f, max_d, fw_max2_f, fw_max2_d,
};
