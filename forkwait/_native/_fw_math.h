/* Vectorisable float32/float64 math for forkwait's kernels.
 *
 * Every function here is branch-free (selects, no calls, no early returns), so
 * gcc vectorises a loop that calls it at plain -O3 without -ffast-math. NaN,
 * +-inf, overflow and underflow are handled explicitly and follow IEEE / libm:
 *   exp(NaN) = NaN, exp(+inf) = +inf, exp(-inf) = 0, exp(x > ~88.7f) = inf,
 *   results that underflow go through the subnormals to 0.
 * Accuracy (checked by tests/test_ops_math.py against NumPy/libm): exp within
 * 2 ulp; tanh, sigmoid, gelu within a few ulp (float64: ~1e-15 relative).
 *
 * Sources: the polynomials are Cephes' (S. L. Moshier, expf/tanhf/exp/tanh/erf
 * /erfc), the float32 erf is the rational approximation used by Eigen; the
 * range reduction is the classic Cody-Waite split with a two-step 2^n scaling
 * so that subnormal results and overflow need no branches.
 */
#ifndef FORKWAIT_FW_MATH_H
#define FORKWAIT_FW_MATH_H

#include <stdint.h>
#include <string.h>
#include <math.h>

static inline float fw_f32_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t fw_f32_asuint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline double fw_f64_bits(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }
static inline uint64_t fw_f64_asuint(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }

/* c ? a : b as bit operations. A plain ?: between two computed values makes
   gcc sink the computation into a branch and, since floating point may trap
   (-ftrapping-math, the default), give up vectorising the loop. */
static inline float fw_self(int c, float a, float b) {
    uint32_t m = -(uint32_t)(c != 0);
    return fw_f32_bits((fw_f32_asuint(a) & m) | (fw_f32_asuint(b) & ~m));
}
static inline double fw_seld(int c, double a, double b) {
    uint64_t m = -(uint64_t)(c != 0);
    return fw_f64_bits((fw_f64_asuint(a) & m) | (fw_f64_asuint(b) & ~m));
}

/* ------------------------------------------------------------------ exp */

static inline float fw_expf(float x) {
    /* clamp so that 2^n stays representable as two normal factors; a NaN
       passes the clamps and makes r, hence the result, NaN */
    float xc = fw_self(x > 89.0f, 89.0f, x);
    xc = fw_self(xc < -104.0f, -104.0f, xc);
    const float magic = 12582912.0f;              /* 0x1.8p23: round to int */
    float t = xc * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    /* n in [-150, 129] from t's low mantissa bits (no float->int conversion,
       which is undefined for NaN); 2^n = 2^n1 * 2^n2, both normal */
    int32_t ni = (int32_t)(fw_f32_asuint(t) - fw_f32_asuint(magic));
    int32_t n1 = ni >> 1;
    int32_t n2 = ni - n1;
    float s1 = fw_f32_bits((uint32_t)(n1 + 127) << 23);
    float s2 = fw_f32_bits((uint32_t)(n2 + 127) << 23);
    return (p * s1) * s2;
}

static inline double fw_exp(double x) {
    double xc = fw_seld(x > 710.0, 710.0, x);
    xc = fw_seld(xc < -746.0, -746.0, xc);
    const double magic = 6755399441055744.0;      /* 0x1.8p52 */
    double t = xc * 1.4426950408889634074 + magic;
    double n = t - magic;
    double r = xc - n * 6.93145751953125e-1;
    r = r - n * 1.42860682030941723212e-6;
    /* Taylor series of exp on |r| <= 0.35, degree 13 (truncation < 1e-17) */
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    /* 2^n as 2^n1 * 2^n2, both normal: n in [-1077, 1025] */
    /* n1 = floor(n / 2) by rounding n/2 - 1/4 to nearest (no ties for an
       integer n; floor() itself is not inlined at plain -O3) */
    double n1 = (n * 0.5 - 0.25 + magic) - magic;
    double n2 = n - n1;
    double t1 = n1 + (1023.0 + 4503599627370496.0);  /* low bits: n1 + 1023 */
    double t2 = n2 + (1023.0 + 4503599627370496.0);
    double s1 = fw_f64_bits(fw_f64_asuint(t1) << 52);
    double s2 = fw_f64_bits(fw_f64_asuint(t2) << 52);
    return (p * s1) * s2;
}

/* ------------------------------------------------------------------ tanh */

static inline float fw_tanhf(float x) {
    float ax = fabsf(x);
    float z = x * x;
    float small = -5.70498872745e-3f;
    small = small * z + 2.06390887954e-2f;
    small = small * z - 5.37397155531e-2f;
    small = small * z + 1.33314422036e-1f;
    small = small * z - 3.33332819422e-1f;
    small = small * z * x + x;
    float e = fw_expf(2.0f * ax);
    float big = copysignf(1.0f - 2.0f / (e + 1.0f), x);
    return fw_self(ax < 0.625f, small, big);
}

static inline double fw_tanh(double x) {
    double ax = fabs(x);
    double z = x * x;
    double p = -9.64399179425052238628e-1;
    p = p * z - 9.92877231001918586564e1;
    p = p * z - 1.61468768441708447952e3;
    double q = z + 1.12811678491632931402e2;
    q = q * z + 2.23548839060100448583e3;
    q = q * z + 4.84406305325125486048e3;
    double small = x + x * z * (p / q);
    double e = fw_exp(2.0 * ax);
    double big = copysign(1.0 - 2.0 / (e + 1.0), x);
    return fw_seld(ax < 0.625, small, big);
}

/* --------------------------------------------------------------- sigmoid */

static inline float fw_sigmoidf(float x) { return 1.0f / (1.0f + fw_expf(-x)); }
static inline double fw_sigmoid(double x) { return 1.0 / (1.0 + fw_exp(-x)); }

/* ------------------------------------------------------------------ gelu */

/* erf for float32 (Eigen's rational approximation on [-4, 4]; +-1 beyond) */
static inline float fw_erff(float x) {
    float xc = fw_self(x > 4.0f, 4.0f, x);
    xc = fw_self(xc < -4.0f, -4.0f, xc);
    float x2 = xc * xc;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    p = p * xc;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return p / q;
}

/* gelu(x) = x/2 (1 + erf(x/sqrt 2)), the exact (erf) form that torch uses by
   default. gelu(-inf) = -0 (the limit), gelu(+inf) = +inf, NaN -> NaN. */
static inline float fw_geluf(float x) {
    float y = 0.5f * x * (1.0f + fw_erff(x * 0.70710678118654752f));
    return fw_self(x < -15.0f, -0.0f, y);
}

/* For float64 the tail uses erfc (Cephes), so that gelu is accurate to a few
   ulp also for negative x, where 1 + erf(x) would cancel. */
static inline double fw_gelu(double x) {
    double u = x * 0.70710678118654752440;
    double a = fabs(u);
    /* |u| < 1: erf(u) = u T(u^2) / U(u^2) */
    double z = u * u;
    double t = 9.60497373987051638749e0;
    t = t * z + 9.00260197203842689217e1;
    t = t * z + 2.23200534594684319226e3;
    t = t * z + 7.00332514112805075473e3;
    t = t * z + 5.55923013010394962768e4;
    double w = z + 3.35617141647503099647e1;
    w = w * z + 5.21357949780152679795e2;
    w = w * z + 4.59432382970980127987e3;
    w = w * z + 2.26290000613890934246e4;
    w = w * z + 4.92673942608635921086e4;
    double one_plus_erf_small = 1.0 + u * t / w;
    /* |u| >= 1: erfc(a) = exp(-a^2) P(a)/Q(a) (a < 8) or R(a)/S(a) */
    double ac = fw_seld(a > 27.0, 27.0, a);
    ac = fw_seld(ac < 1.0, 1.0, ac);
    ac = fw_seld(a == a, ac, 1.0);
    double p = 2.46196981473530512524e-10;
    p = p * ac + 5.64189564831068821977e-1;
    p = p * ac + 7.46321056442269912687e0;
    p = p * ac + 4.86371970985681366614e1;
    p = p * ac + 1.96520832956077098242e2;
    p = p * ac + 5.26445194995477358631e2;
    p = p * ac + 9.34528527171957607540e2;
    p = p * ac + 1.02755188689515710272e3;
    p = p * ac + 5.57535335369399327526e2;
    double q = ac + 1.32281951154744992508e1;
    q = q * ac + 8.67072140885989742329e1;
    q = q * ac + 3.54937778887819891062e2;
    q = q * ac + 9.75708501743205489753e2;
    q = q * ac + 1.82390916687909736289e3;
    q = q * ac + 2.24633760818710981792e3;
    q = q * ac + 1.65666309194161350182e3;
    q = q * ac + 5.57535340817727675546e2;
    double r = 5.64189583547755073984e-1;
    r = r * ac + 1.27536670759978104416e0;
    r = r * ac + 5.01905042251180477414e0;
    r = r * ac + 6.16021097993053585195e0;
    r = r * ac + 7.40974269950448939160e0;
    r = r * ac + 2.97886665372100240670e0;
    double s = ac + 2.26052863220117276590e0;
    s = s * ac + 9.39603524938001434673e0;
    s = s * ac + 1.20489539808096656605e1;
    s = s * ac + 1.70814450747565897222e1;
    s = s * ac + 9.60896809063285878198e0;
    s = s * ac + 3.36907645100081516050e0;
    double ratio = fw_seld(ac < 8.0, p / q, r / s);
    /* exp(-a^2) with a^2 = hi + lo split exactly, else the rounding of a^2
       (up to ~700 ulp of it) would show in the tail */
    double hi = ac * ac;
    /* (the same bits as fma(ac, ac, -hi), in every variant) */
    double big_c = 134217729.0 * ac;                 /* Dekker split */
    double ah = big_c - (big_c - ac);
    double al = ac - ah;
    double lo = ((ah * ah - hi) + 2.0 * ah * al) + al * al;
    double erfc_a = fw_exp(-hi) * (1.0 - lo) * ratio;
    double one_plus_erf_big = fw_seld(u > 0.0, 2.0 - erfc_a, erfc_a);
    double ope = fw_seld(a < 1.0, one_plus_erf_small, one_plus_erf_big);
    double y = 0.5 * x * ope;
    return fw_seld(x < -40.0, -0.0, y);
}

#endif
