/* Vectorised float32/float64 math for forkwait's kernels.
 *
 * Every function here takes and returns the variant's own vectors (fw_nf:
 * float32 lanes, fw_nd: float64 lanes; _fw_simd.h) and computes lane for lane:
 * branch-free (selects, no calls but fma), without -ffast-math. NaN, +-inf,
 * overflow and underflow are handled explicitly and follow IEEE / libm:
 * exp(NaN) = NaN, exp(+inf) = +inf, exp(-inf) = 0, exp(x > ~88.7f) = inf,
 * results that underflow go through the subnormals to 0; tanh(-0) = -0.
 *
 * Same bits in every build: fused multiply-adds are written as fw_vfmaf /
 * fw_vfmad (the source's choice, part of the algorithm), and the build
 * forbids the compiler's own (-ffp-contract=off). A CPU variant with FMA
 * instructions (avx2, avx512, aarch64) runs them as instructions; the
 * x86-64-v2 baseline calls libm's fma, which is correctly rounded too: the
 * same bits, slower. Where a variant has a cheaper instruction for the very
 * same result (AVX-512's vscalefps for a power-of-two scaling that rounds
 * once, vpermps for a table lookup) it uses it; the value is the same.
 *
 * Fast and full versions. fw_expf_fast_v(x) is exact-range only (|x| <
 * FW_EXPF_FAST, where 2^n scales by an integer add to the exponent bits);
 * fw_expf_v(x) handles every x (clamps; 2^n p rounded once: two normal
 * factors, or one vscalefps under AVX-512). Both compute the same reduction
 * and polynomial, and a power-of-two scaling of a normal result is exact, so
 * they agree bit for bit where both apply: a loop may use the fast one on a
 * run whose inputs are all in range and the full one elsewhere
 * (_fw_kernels.c), and an element's result never depends on its neighbours.
 * Under AVX-512 the full one costs no more than the fast one and its range
 * check, so the loops use it everywhere (FW_FULL_IS_CHEAP).
 *
 * Accuracy (tests/test_ops_accuracy.py measures it over each op's whole
 * range; docs/ops.md lists the worst ulp next to torch's): exp within 1 ulp;
 * tanh, sigmoid, gelu within a few ulp.
 *
 * Sources: the float32 exp polynomial is Cephes' (S. L. Moshier), the
 * float64 exp polynomial is a Chebyshev fit (mpmath.chebyfit, relative error
 * 1.7e-17 on [-ln2/2, ln2/2]), the float64 tanh/erfc rationals are Cephes';
 * the float32 tanh tables and erf/erfc are fits of our own (see tanh and gelu
 * below); the range reduction is Cody-Waite's.
 */
#ifndef FORKWAIT_FW_MATH_H
#define FORKWAIT_FW_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_fw_simd.h"

/* Under AVX-512 the full versions cost no more than the fast ones with their
   range check (vscalefps, and the clamps are two min/max): loops call them
   everywhere instead of running fast/full runs. */
#if defined(__AVX512F__)
#define FW_FULL_IS_CHEAP 1
#else
#define FW_FULL_IS_CHEAP 0
#endif

/* The math below is called once per vector in the kernels' loops: inlined
   always (gcc left float64 gelu a call per vector under AVX2, 25% slower). */
#define FW_INLINE static inline __attribute__((always_inline))

/* a constant (or a vector) as a vector, for the fma helpers */
FW_INLINE fw_nf fw_idf(fw_nf v) { return v; }
FW_INLINE fw_nd fw_idd(fw_nd v) { return v; }
#define FW_VF(v) _Generic((v), fw_nf: fw_idf, default: fw_splatf)(v)
#define FW_VD(v) _Generic((v), fw_nd: fw_idd, default: fw_splatd)(v)
#define FW_FMAF(a, b, c) fw_vfmaf(FW_VF(a), FW_VF(b), FW_VF(c))
#define FW_FMAD(a, b, c) fw_vfmad(FW_VD(a), FW_VD(b), FW_VD(c))

/* |a| with the sign of s */
FW_INLINE fw_nf fw_vsignf(fw_nf a, fw_nf s) {
    return (fw_nf)(((fw_nu)a & 0x7fffffffu) | ((fw_nu)s & 0x80000000u));
}
FW_INLINE fw_nd fw_vsignd(fw_nd a, fw_nd s) {
    return (fw_nd)(((fw_nul)a & 0x7fffffffffffffffull) | ((fw_nul)s & 0x8000000000000000ull));
}
FW_INLINE fw_nf fw_vabsf(fw_nf a) { return (fw_nf)((fw_nu)a & 0x7fffffffu); }
FW_INLINE fw_nd fw_vabsd(fw_nd a) { return (fw_nd)((fw_nul)a & 0x7fffffffffffffffull); }

/* ------------------------------------------------------------------ exp */

#define FW_EXPF_FAST 86.5f /* |x| below: fw_expf_fast_v is exact-range */
#define FW_EXP_FAST 707.0  /* the same for fw_exp_fast_v */

/* exp(x) = 2^n p, p = exp(r) in [0.7, 1.42]: p, and n in the low bits of *t */
FW_INLINE fw_nf fw_expf_p(fw_nf x, fw_nf *t) {
    const float magic = 12582912.0f; /* 0x1.8p23: round to int */
    fw_nf tt = FW_FMAF(x, 1.44269504088896341f, magic);
    fw_nf n = tt - magic;
    fw_nf r = FW_FMAF(n, -0.693359375f, x); /* Cody-Waite: n * C1 is exact */
    r = FW_FMAF(n, 2.12194440e-4f, r);
    /* Estrin's scheme (not Horner's): a shorter chain of dependent FMAs, so
       that more loop iterations overlap in the core (measured 1.6x on Zen 1) */
    fw_nf r2 = r * r;
    fw_nf e0 = FW_FMAF(1.6666665459e-1f, r, 5.0000001201e-1f);
    fw_nf e1 = FW_FMAF(8.3334519073e-3f, r, 4.1665795894e-2f);
    fw_nf e2 = FW_FMAF(1.9875691500e-4f, r, 1.3981999507e-3f);
    fw_nf p = FW_FMAF(FW_FMAF(e2, r2, e1), r2, e0);
    *t = tt;
    return FW_FMAF(p, r2, r) + 1.0f;
}

FW_INLINE fw_nf fw_expf_fast_v(fw_nf x) {
    fw_nf t;
    fw_nf p = fw_expf_p(x, &t);
    /* n from t's low mantissa bits (no float->int conversion): the bits of
       the magic number shift out, so t << 23 is n << 23 */
    return (fw_nf)((fw_nu)p + ((fw_nu)t << 23));
}

FW_INLINE fw_nf fw_expf_v(fw_nf x) {
    /* clamp so that 2^n stays representable as two normal factors; a NaN
       passes the clamps and makes the result NaN */
    fw_nf xc = fw_vminf(fw_splatf(89.0f), x);
    xc = fw_vmaxf(fw_splatf(-104.0f), xc);
    fw_nf t;
    fw_nf p = fw_expf_p(xc, &t);
    /* n in [-150, 129]: p 2^n, rounded once */
    return fw_vscalef(p, t - 12582912.0f);
}

FW_INLINE fw_nd fw_exp_p(fw_nd x, fw_nd *t) {
    const double magic = 6755399441055744.0; /* 0x1.8p52 */
    fw_nd tt = FW_FMAD(x, 1.4426950408889634074, magic);
    fw_nd n = tt - magic;
    fw_nd r = FW_FMAD(n, -6.93145751953125e-1, x); /* n * C1 exact for |n| < 2^11 */
    r = FW_FMAD(n, -1.42860682030941723212e-6, r);
    fw_nd r2 = r * r, r4 = r2 * r2; /* Estrin's scheme, see fw_expf_p */
    fw_nd e0 = FW_FMAD(0.16666666666666669, r, 0.5000000000000001);
    fw_nd e1 = FW_FMAD(0.008333333333330062, r, 0.04166666666662413);
    fw_nd e2 = FW_FMAD(0.00019841269863053618, r, 0.0013888888917213717);
    fw_nd e3 = FW_FMAD(2.7557268459997064e-06, r, 2.4801521295954376e-05);
    fw_nd e4 = FW_FMAD(2.510038549551032e-08, r, 2.7620088445409746e-07);
    fw_nd f0 = FW_FMAD(e1, r2, e0);
    fw_nd f1 = FW_FMAD(e3, r2, e2);
    fw_nd q = FW_FMAD(FW_FMAD(e4, r4, f1), r4, f0);
    *t = tt;
    return FW_FMAD(q, r2, r) + 1.0;
}

FW_INLINE fw_nd fw_exp_fast_v(fw_nd x) {
    fw_nd t;
    fw_nd p = fw_exp_p(x, &t);
    return (fw_nd)((fw_nul)p + ((fw_nul)t << 52)); /* see fw_expf_fast_v */
}

FW_INLINE fw_nd fw_exp_v(fw_nd x) {
    fw_nd xc = fw_vmind(fw_splatd(710.0), x);
    xc = fw_vmaxd(fw_splatd(-746.0), xc);
    fw_nd t;
    fw_nd p = fw_exp_p(xc, &t);
    /* n in [-1077, 1025]: p 2^n, rounded once */
    return fw_vscaled(p, t - 6755399441055744.0);
}

/* ------------------------------------------------------------------ tanh */

/* float32: a polynomial per interval of |x|, looked up in 16-entry tables
 * (bench/fit_tanhf.py fits them and says how). a = |x| clamped at 9.1 (tanh
 * rounds to 1 from 9.01; a NaN stays NaN); the interval is [0, 0.09375) or
 * one of the 15 half binades from 0.09375 to 12, numbered by the bits of
 * max(a, 2^-4) shifted right by 22 (exponent and top mantissa bit), whose low
 * 4 bits index the tables: a 16-entry table is one vector permute under
 * AVX-512 (the way MKL's tanh, which torch calls on x86, works: no division,
 * which the exp-based 1 - 2/(e^{2a} + 1) needed, and which alone took a third
 * of that kernel's time on an AVX-512 Xeon). With t = a - b (b the interval's
 * lower end, exactly: Sterbenz), y = c0 + (t c1 + t^2 R(t)), R of degree 5
 * by Horner's rule; on [0, 0.09375) c0 = 0 and c1 = 1, so y = t + t^2 R(t)
 * there (relative accuracy down to the subnormals). The sign of x (and of
 * -0) is put back last. Worst error 0.99 ulp (every positive float32). */
/* generated by bench/fit_tanhf.py; entry j: interval (j - 6) & 15, clamp 9.100000381469727 */
static const float FW_TANHF_B[16] = {2.0f, 3.0f, 4.0f, 6.0f, 8.0f, 8.0f, 0.0f, 0.09375f, 0.125f, 0.1875f, 0.25f, 0.375f, 0.5f, 0.75f, 1.0f, 1.5f};
static const float FW_TANHF_C0[16] = {0.9640275835990906f, 0.9950547814369202f, 0.9993293285369873f, 0.9999877214431763f, 0.9999997615814209f, 0.9999997615814209f, 0.0f, 0.093476302921772f, 0.12435299903154373f, 0.18533320724964142f, 0.24491865932941437f, 0.35835739970207214f, 0.46211716532707214f, 0.6351489424705505f, 0.7615941762924194f, 0.9051482677459717f};
static const float FW_TANHF_C1[16] = {0.0706508606672287f, 0.00986497476696968f, 0.0013401506002992392f, 2.4388884412474e-05f, 9.030949286170653e-07f, 9.030949286170653e-07f, 1.0f, 0.9912634491920471f, 0.9845380187034607f, 0.9656471014022827f, 0.9400157928466797f, 0.8715795874595642f, 0.7864464521408081f, 0.5965873003005981f, 0.4199727475643158f, 0.18070559203624725f};
static const float FW_TANHF_C2[16] = {-0.06811238825321198f, -0.009805386886000633f, -0.0013337048003450036f, -2.3525144570157863e-05f, -4.896558039035881e-06f, -4.896558039035881e-06f, -4.2829538526856226e-11f, -0.09310536086559296f, -0.12273017317056656f, -0.17817166447639465f, -0.23031094670295715f, -0.31230396032333374f, -0.36337345838546753f, -0.3789859116077423f, -0.319813996553421f, -0.16354407370090485f};
static const float FW_TANHF_C3[16] = {0.04214368388056755f, 0.006420907098799944f, 0.0008696726872585714f, 1.3743145245825872e-05f, 1.9545239410945214e-05f, 1.9545239410945214e-05f, -0.3333333134651184f, -0.2527860105037689f, -0.28952890634536743f, -0.3504362404346466f, -0.25368717312812805f, -0.1798611730337143f, -0.09532906115055084f, 0.043058011680841446f, 0.10324305295944214f, 0.08761099725961685f};
static const float FW_TANHF_C4[16] = {-0.018063202500343323f, -0.00302109494805336f, -0.00040213920874521136f, -4.677838660427369e-06f, -4.290911601856351e-05f, -4.290911601856351e-05f, -1.3529941043088911e-06f, -5.405079364776611f, -0.8550870418548584f, 2.5630745887756348f, 0.07461904734373093f, 0.19286613166332245f, 0.17594754695892334f, 0.08747833222150803f, 0.029614876955747604f, -0.02401425875723362f};
static const float FW_TANHF_C5[16] = {0.005243067163974047f, 0.0009942150209099054f, 0.00012940035958308727f, 6.061021622372209e-07f, 5.093654544907622e-05f, 5.093654544907622e-05f, 0.13336946070194244f, 231.66763305664062f, 20.02979850769043f, -51.852664947509766f, 0.7646498680114746f, -0.24138705432415009f, -0.08730824291706085f, 0.00034554649027995765f, -0.05195225775241852f, -0.004900237079709768f};
static const float FW_TANHF_C6[16] = {-0.0008901573019102216f, -0.00019084989617113024f, -2.5890780307236128e-05f, 1.1458178761358795e-07f, -3.084651325480081e-05f, -3.084651325480081e-05f, -0.0004401506739668548f, -4987.0986328125f, -215.51605224609375f, 559.8428344726562f, -3.8130509853363037f, 1.3215584754943848f, 0.11209195852279663f, -0.17186623811721802f, 0.028629040345549583f, 0.009385391138494015f};
static const float FW_TANHF_C7[16] = {5.53049030713737e-05f, 1.1751601050491445e-05f, 2.3902207431092393e-06f, -3.4785184510610634e-08f, 7.4751596912392415e-06f, 7.4751596912392415e-06f, -0.05180121213197708f, 42909.05859375f, 930.6416625976562f, -2410.175537109375f, 8.072617530822754f, -2.960106372833252f, -0.14529892802238464f, 0.19885341823101044f, -0.007543155457824469f, -0.004027413669973612f};

FW_INLINE fw_nf fw_tanhf_v(fw_nf x) {
    const fw_ni mag = (fw_ni){0} + 0x7fffffff;
    fw_ni sign = (fw_ni)x & ~mag;
    fw_nf ax = (fw_nf)((fw_ni)x & mag);
    fw_nf a = fw_vminf((fw_nf){0} + 9.1f, ax); /* (a NaN stays NaN) */
    fw_nf am = fw_vmaxf(a, (fw_nf){0} + 0.0625f);
    fw_ni k = (fw_ni)((fw_nu)am >> 22);
#if defined(__AVX512F__)
    fw_nf b = fw_lut16f(FW_TANHF_B, k); /* one permute */
#else
    /* the same value from the bits (cheaper than a lookup without AVX-512) */
    fw_nf b = (fw_nf)((fw_ni)a & ((a >= 0.09375f) & (fw_ni)((fw_nu){0} + 0xffc00000u)));
#endif
    fw_nf t = a - b;
    fw_nf r = fw_vfmaf(fw_lut16f(FW_TANHF_C7, k), t, fw_lut16f(FW_TANHF_C6, k));
    r = fw_vfmaf(r, t, fw_lut16f(FW_TANHF_C5, k));
    r = fw_vfmaf(r, t, fw_lut16f(FW_TANHF_C4, k));
    r = fw_vfmaf(r, t, fw_lut16f(FW_TANHF_C3, k));
    r = fw_vfmaf(r, t, fw_lut16f(FW_TANHF_C2, k));
    fw_nf w = fw_vfmaf(t * t, r, t * fw_lut16f(FW_TANHF_C1, k));
    fw_nf y = fw_lut16f(FW_TANHF_C0, k) + w; /* >= +0 */
    return (fw_nf)((fw_ni)y | sign);
}


/* float64: Cephes' rational for |x| < 0.625, else 1 - 2 / (e^{2|x|} + 1)
   (clamped at 20: tanh rounds to 1 in float64 from 19.06); one division for
   both. */
FW_INLINE fw_nd fw_tanh_v(fw_nd x) {
    fw_nd ax = fw_vabsd(x);
    fw_nd z = x * x;
    fw_nd p = FW_FMAD(-9.64399179425052238628e-1, z, -9.92877231001918586564e1);
    p = FW_FMAD(p, z, -1.61468768441708447952e3);
    fw_nd q = z + 1.12811678491632931402e2;
    q = FW_FMAD(q, z, 2.23548839060100448583e3);
    q = FW_FMAD(q, z, 4.84406305325125486048e3);
    fw_nd ac = fw_vmind(fw_splatd(20.0), ax); /* (a NaN stays NaN) */
    fw_nd e = fw_exp_fast_v(2.0 * ac);
    fw_nl sm = ax < 0.625;
    fw_nd d = fw_vseld(sm, ax * z * p, fw_splatd(2.0)) / fw_vseld(sm, q, e + 1.0);
    return fw_vsignd(fw_vseld(sm, ax + d, 1.0 - d), x);
}

/* --------------------------------------------------------------- sigmoid */

/* e = exp(-|x|) <= 1 (never overflows): 1 / (1 + e) for x >= 0, and
   e / (1 + e) for x < 0, so that the negative tail stays accurate down to the
   subnormals (1 / (1 + exp(-x)) gives 0 from x = -88.7 in float32). */
#define FW_SIGMOID(V, EXP, ABS, SEL)                                           \
    V e = EXP(-ABS(x));                                                        \
    V s = 1 / (1 + e);                                                         \
    return SEL(x < 0, e * s, s);
FW_INLINE fw_nf fw_sigmoidf_fast_v(fw_nf x) { FW_SIGMOID(fw_nf, fw_expf_fast_v, fw_vabsf, fw_vself) }
FW_INLINE fw_nf fw_sigmoidf_v(fw_nf x) { FW_SIGMOID(fw_nf, fw_expf_v, fw_vabsf, fw_vself) }
FW_INLINE fw_nd fw_sigmoid_fast_v(fw_nd x) { FW_SIGMOID(fw_nd, fw_exp_fast_v, fw_vabsd, fw_vseld) }
FW_INLINE fw_nd fw_sigmoid_v(fw_nd x) { FW_SIGMOID(fw_nd, fw_exp_v, fw_vabsd, fw_vseld) }

/* ------------------------------------------------------------------ gelu */

/* gelu(x) = x Phi(x) = x/2 (1 + erf(x/sqrt 2)), the exact (erf) form that
 * torch uses by default; gelu(-inf) = -0 (the limit), gelu(+inf) = +inf.
 *
 * float32: one formula for every x. With a = |x|/sqrt 2 and
 *   q = x erfc(a) / 2 = x (t R(t)) exp(-x^2/2),  t = 1/(1 + a/2),
 * gelu(x) = q for x < 0 and x - q for x >= 0 (Phi = erfc/2 or 1 - erfc/2): no
 * cancellation anywhere (1 + erf(x) cancels in the negative tail: the 0.1
 * kernel returned +6.7e-7 for gelu(-5.6564), true -4.4e-8). t R(t) is
 * erfcx(a)/2 (R: a degree-8 fit of erfcx(a)/(2t) on a in [0, 10.5], relative
 * error 4e-8, Horner's rule: better rounded here than Estrin's, and as fast).
 * x^2 is split exactly (hi + lo, lo = fma(x, x, -hi)) and lo goes into the
 * exp's reduced argument, so that the rounding of x^2 does not show in
 * exp(-x^2/2) (up to ~100 ulp in the tails otherwise). Every FMA-unit
 * operation counts here (the loop is bound by them: 24 per vector): exp(-x^2/2)
 * is reduced in r2 = 2r (the polynomial's coefficients scaled by powers of
 * two, which is exact), its 2^n scaling is an integer add to (r2 p + r2) + 2
 * with n - 1 in the low bits of tt, and the factor 1/2 of Phi is in R.
 * FW_GELUF_FAST: |x| below it, exp(-x^2/2) is a normal number (the fast
 * scaling applies); fw_geluf_v computes the same operations where it applies
 * (the same bits) and handles every x. */
#define FW_GELUF_FAST 13.0f

/* erfcx(a)/2 = t R(t), t = 1/(1 + a/2); R's coefficients halved (exact) */
FW_INLINE fw_nf fw_gelu_rt(fw_nf ax) {
    fw_nf t = 1.0f / FW_FMAF(ax, 0.35355339059327376f, 1.0f); /* a/2 = |x| / (2 sqrt 2) */
    fw_nf r = FW_FMAF(-0.029597478805596195f, t, 0.14259481441158245f);
    r = FW_FMAF(r, t, -0.2442363297150431f);
    r = FW_FMAF(r, t, 0.13976175271091474f);
    r = FW_FMAF(r, t, -0.013814622856923462f);
    r = FW_FMAF(r, t, 0.10155584803073414f);
    r = FW_FMAF(r, t, 0.12149816391500279f);
    r = FW_FMAF(r, t, 0.14119504319262005f);
    r = FW_FMAF(r, t, 0.1410427873464686f);
    return r * t;
}

/* exp(-(hi + lo)/2) = ((r2 p(r2) + r2) + 2) 2^(n-1), with r2 = -(hi + lo) -
   2n ln 2 (Cody-Waite, in two steps; the first is exact), p a degree-4 fit
   (1e-8 relative) scaled for r2: returns (r2 p + r2) + 2, and tt, whose low
   bits hold n - 1 */
FW_INLINE fw_nf fw_gelu_exp_p(fw_nf hi, fw_nf lo, fw_nf *tt) {
    const float magic = 12582911.0f; /* 0x1.8p23 - 1 */
    fw_nf t = FW_FMAF(hi, -0.72134752044448170f, magic); /* -log2(e)/2 */
    fw_nf n = t - magic;
    fw_nf r = FW_FMAF(n, -1.38671875f, -hi); /* 2 C1, C1 = 0.693359375 */
    r = r - lo;
    r = FW_FMAF(n, 4.2438888e-4f, r); /* -2 C2 */
    fw_nf p = FW_FMAF(4.3566143698232975e-05f, r, 5.227003222124842e-04f);
    p = FW_FMAF(p, r, 5.208296833160536e-03f);
    p = FW_FMAF(p, r, 4.166644206575954e-02f);
    p = FW_FMAF(p, r, 0.2500000013507623f);
    *tt = t;
    return FW_FMAF(p * r, r, r) + 2.0f;
}

FW_INLINE fw_nf fw_geluf_fast_v(fw_nf x) {
    fw_nf hi = x * x, tt;
    fw_nf v = fw_gelu_exp_p(hi, FW_FMAF(x, x, -hi), &tt);
    /* the low bits of tt are n - 1; shifted, they are (n - 1) << 23 */
    fw_nf ex = (fw_nf)((fw_nu)v + ((fw_nu)tt << 23));
    fw_nf q = (x * fw_gelu_rt(fw_vabsf(x))) * ex;
    return fw_vself(x <= 0.0f, q, x - q); /* (x = -0: q = -0) */
}

FW_INLINE fw_nf fw_geluf_v(fw_nf x) {
    /* clamped to [-15, 13]: gelu rounds to -0 below -14.3 and to x above 13 */
    fw_nf xc = fw_vmaxf(fw_splatf(-15.0f), x); /* (a NaN stays NaN) */
    xc = fw_vminf(fw_splatf(13.0f), xc);
    fw_nf hi = xc * xc, tt;
    fw_nf v = fw_gelu_exp_p(hi, FW_FMAF(xc, xc, -hi), &tt);
    /* 2^(n-1), n - 1 in [-163, 0], rounded once with v */
    fw_nf ex = fw_vscalef(v, tt - 12582912.0f);
    /* x rt < 1 here, so only the last product can round into the subnormals */
    fw_nf q = (xc * fw_gelu_rt(fw_vabsf(xc))) * ex;
    fw_nf y = fw_vself(xc <= 0.0f, q, xc - q);
    y = fw_vself(x >= 13.0f, x, y);
    return fw_vself(x < -15.0f, fw_splatf(-0.0f), y);
}

/* float64: the tail uses erfc (Cephes), so that gelu is accurate to a few
   ulp also for negative x, where 1 + erf(x) would cancel. */
FW_INLINE fw_nd fw_gelu_v(fw_nd x) {
    fw_nd u = x * 0.70710678118654752440;
    fw_nd a = fw_vabsd(u);
    /* |u| < 1: erf(u) = u T(u^2) / U(u^2) */
    fw_nd z = u * u;
    fw_nd t = FW_FMAD(9.60497373987051638749e0, z, 9.00260197203842689217e1);
    t = FW_FMAD(t, z, 2.23200534594684319226e3);
    t = FW_FMAD(t, z, 7.00332514112805075473e3);
    t = FW_FMAD(t, z, 5.55923013010394962768e4);
    fw_nd w = z + 3.35617141647503099647e1;
    w = FW_FMAD(w, z, 5.21357949780152679795e2);
    w = FW_FMAD(w, z, 4.59432382970980127987e3);
    w = FW_FMAD(w, z, 2.26290000613890934246e4);
    w = FW_FMAD(w, z, 4.92673942608635921086e4);
    /* |u| >= 1: erfc(a) = exp(-a^2) P(a)/Q(a) (a < 8) or R(a)/S(a) */
    /* |x| clamped to [sqrt 2, 40] (a in [1, 28.3]; exp(-a^2) is 0 beyond) */
    fw_nd xa = fw_vseld(fw_vabsd(x) > 40.0, fw_splatd(40.0), fw_vabsd(x));
    xa = fw_vseld(xa < 1.4142135623730951, fw_splatd(1.4142135623730951), xa);
    xa = fw_vseld(x == x, xa, fw_splatd(1.4142135623730951));
    fw_nd ac = xa * 0.70710678118654752440;
    /* P/Q for a < 8, R/S beyond, each on its own (selecting every
       coefficient instead cost a blend per step: 18 of them, 3 uops each
       under AVX2) */
    fw_nd p = FW_FMAD(2.46196981473530512524e-10, ac, 5.64189564831068821977e-1);
    p = FW_FMAD(p, ac, 7.46321056442269912687e0);
    p = FW_FMAD(p, ac, 4.86371970985681366614e1);
    p = FW_FMAD(p, ac, 1.96520832956077098242e2);
    p = FW_FMAD(p, ac, 5.26445194995477358631e2);
    p = FW_FMAD(p, ac, 9.34528527171957607540e2);
    p = FW_FMAD(p, ac, 1.02755188689515710272e3);
    p = FW_FMAD(p, ac, 5.57535335369399327526e2);
    fw_nd q = ac + 1.32281951154744992508e1;
    q = FW_FMAD(q, ac, 8.67072140885989742329e1);
    q = FW_FMAD(q, ac, 3.54937778887819891062e2);
    q = FW_FMAD(q, ac, 9.75708501743205489753e2);
    q = FW_FMAD(q, ac, 1.82390916687909736289e3);
    q = FW_FMAD(q, ac, 2.24633760818710981792e3);
    q = FW_FMAD(q, ac, 1.65666309194161350182e3);
    q = FW_FMAD(q, ac, 5.57535340817727675546e2);
    fw_nd r = FW_FMAD(5.64189583547755073984e-1, ac, 1.27536670759978104416e0);
    r = FW_FMAD(r, ac, 5.01905042251180477414e0);
    r = FW_FMAD(r, ac, 6.16021097993053585195e0);
    r = FW_FMAD(r, ac, 7.40974269950448939160e0);
    r = FW_FMAD(r, ac, 2.97886665372100240670e0);
    fw_nd s = ac + 2.26052863220117276590e0;
    s = FW_FMAD(s, ac, 9.39603524938001434673e0);
    s = FW_FMAD(s, ac, 1.20489539808096656605e1);
    s = FW_FMAD(s, ac, 1.70814450747565897222e1);
    s = FW_FMAD(s, ac, 9.60896809063285878198e0);
    s = FW_FMAD(s, ac, 3.36907645100081516050e0);
    fw_nl mid = ac < 8.0;
    /* one division for the three rationals: erf (|u| < 1) or erfc's */
    fw_nl sm = a < 1.0;
    fw_nd ratio = fw_vseld(sm, u * t, fw_vseld(mid, p, r)) / fw_vseld(sm, w, fw_vseld(mid, q, s));
    /* exp(-a^2) from x^2 = hi + lo split exactly (a^2 = x^2 / 2), else the
       rounding of a^2 (up to ~700 ulp of the result) would show in the tail */
    fw_nd hi = xa * xa;
    fw_nd lo = FW_FMAD(xa, xa, -hi);
    /* erfc(a) = k exp(-a^2); for x < 0 the product is ordered so that only
       the last multiplication can round into the subnormals */
    fw_nd k = (1.0 - 0.5 * lo) * ratio;
    fw_nd ex = fw_exp_v(-0.5 * hi);
    fw_nd y_big = fw_vseld(u > 0.0, 0.5 * x * (2.0 - k * ex), (0.5 * x * k) * ex);
    fw_nd y = fw_vseld(sm, 0.5 * x * (1.0 + ratio), y_big);
    return fw_vseld(x < -40.0, fw_splatd(-0.0), y);
}

#endif
