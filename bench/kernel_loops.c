/* The hot loops of forkwait's kernels alone, in C, one thread: what a change
 * to _fw_kernels.c / _fw_math.h / _fw_simd.h does to the loops themselves,
 * without the Python layer, the team or the allocation of the output; every
 * CPU variant (and, optionally, another checkout's loops and MKL's vector
 * math, which torch calls for exp and tanh on x86) interleaved in one process.
 *
 * Build (bench/kernel_loops.sh does all of this: `sh bench/kernel_loops.sh
 * [other-checkout]`): each variant's _fw_kernels.c into an object, as setup.py
 * compiles it, then this file with the baseline flags, linked with them:
 *
 *   B="-O3 -march=x86-64-v2 -ffp-contract=off -fno-strict-aliasing -Wno-psabi"
 *   gcc $B -c -DFW_VARIANT=baseline forkwait/_native/_fw_kernels.c -o /tmp/kl_baseline.o
 *   gcc $B -mavx2 -mfma -c -DFW_VARIANT=avx2 forkwait/_native/_fw_kernels.c -o /tmp/kl_avx2.o
 *   gcc $B -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma -c \
 *       -DFW_VARIANT=avx512 forkwait/_native/_fw_kernels.c -o /tmp/kl_avx512.o
 *   gcc $B -DFW_BUILT_AVX2 -DFW_BUILT_AVX512 -Iforkwait/_native bench/kernel_loops.c \
 *       /tmp/kl_*.o -o /tmp/kernel_loops -ldl -lm
 *
 * A variant of another checkout is the same compile of its _fw_kernels.c with
 * -DFW_VARIANT=old_avx512 (or old_avx2): its table is fw_kernels_old_avx512,
 * found here through a weak reference.
 *
 *   /tmp/kernel_loops [-n N] [-r rounds] [-v avx512,avx2,...] [-c exp,tanh,...] [-a bytes]
 *                     [-k calls per round]
 *
 * Inputs: uniform(-5, 5); N elements (default 10^6; row ops: rows of 1000),
 * float32 and float64, out of place; x and y start `-a` bytes past a 64-byte
 * boundary (default 0; NumPy's large arrays start 16 bytes past a page). Printed: the median over rounds of
 * nanoseconds per element, every candidate of a case run in turn in each round.
 * Peers: `memcpy` (the same bytes in and out: the memory floor at this size)
 * and, when FW_MKL_LIB names a library that exports MKL's vector math (torch's
 * libtorch_cpu.so does: run with LD_LIBRARY_PATH set to its directory and
 * MKL_NUM_THREADS=1), vmsExp/vmsTanh/vmdExp/vmdTanh in the mode torch uses
 * (VML_HA, no FTZ/DAZ, errors ignored).
 *
 * Instructions per element of one variant, exact whatever the load (valgrind
 * runs neither AVX-512 nor MKL's code; callgrind the avx2 and baseline ones):
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
 *       /tmp/fw_kernel_loops_$UID/kernel_loops -n 100000 -r 1 -k 1 -v avx2 -c exp
 *   callgrind_annotate /tmp/cg.out | grep unary   (Ir / (2 calls x 2 dtypes x N)) */
#include "_fw_kernels.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define D 1000 /* row length of the row ops */

extern const fw_kernels fw_kernels_old_avx512 __attribute__((weak));
extern const fw_kernels fw_kernels_old_avx2 __attribute__((weak));
extern const fw_kernels fw_kernels_old_baseline __attribute__((weak));

typedef void (*vml_f)(int, const float *, float *, long long);
typedef void (*vml_d)(int, const double *, double *, long long);
#define VML_MODE (0x2 | 0x140000 | 0x100) /* VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { UNARY, SOFTMAX, LAYER_NORM };
static const struct {
    const char *name;
    int kind, op;
    const char *vml;
} CASES[] = {
    {"exp", UNARY, FW_EXP, "Exp"},   {"tanh", UNARY, FW_TANH, "Tanh"},
    {"sigmoid", UNARY, FW_SIGMOID, NULL}, {"gelu", UNARY, FW_GELU, NULL},
    {"neg", UNARY, FW_NEG, NULL},   {"softmax", SOFTMAX, FW_SOFTMAX, NULL},
    {"log_softmax", SOFTMAX, FW_LOG_SOFTMAX, NULL}, {"layer_norm", LAYER_NORM, 0, NULL},
};
#define NCASES ((int)(sizeof(CASES) / sizeof(CASES[0])))

static long N = 1000000;
static long OFS = 0; /* bytes past a 64-byte boundary of x and y (NumPy's large arrays: 16) */
static float *XF, *YF, *WF, *BF;
static double *XD, *YD, *WD, *BD;

/* one call of case c in double (dbl) or float on the table k; k NULL: the
   peer `peer` (0 memcpy, 1 MKL) */
static void call(const fw_kernels *k, int c, int dbl, int peer, void *vml) {
    long rows = N / D;
    if (k == NULL) {
        if (peer == 0)
            memcpy(dbl ? (void *)YD : (void *)YF, dbl ? (void *)XD : (void *)XF,
                   (size_t)N * (dbl ? 8 : 4));
        else if (dbl)
            ((vml_d)vml)((int)N, XD, YD, VML_MODE);
        else
            ((vml_f)vml)((int)N, XF, YF, VML_MODE);
        return;
    }
    switch (CASES[c].kind) {
    case UNARY:
        if (dbl) k->unary_d(CASES[c].op, XD, YD, N);
        else k->unary_f(CASES[c].op, XF, YF, N);
        break;
    case SOFTMAX:
        if (dbl) k->softmax_d(CASES[c].op, XD, YD, 0, rows, D);
        else k->softmax_f(CASES[c].op, XF, YF, 0, rows, D);
        break;
    default:
        if (dbl) k->layer_norm_d(XD, YD, 0, rows, D, WD, BD, 1e-5);
        else k->layer_norm_f(XF, YF, 0, rows, D, WF, BF, 1e-5);
        break;
    }
}

static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t m = e ? (size_t)(e - p) : strlen(p);
        if (m == n && strncmp(p, name, n) == 0) return 1;
        p = e ? e + 1 : NULL;
    }
    return list == NULL;
}

int main(int argc, char **argv) {
    int rounds = 9;
    long reps = 0;
    const char *vlist = NULL, *clist = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n")) N = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-v")) vlist = argv[i + 1];
        else if (!strcmp(argv[i], "-c")) clist = argv[i + 1];
        else if (!strcmp(argv[i], "-a")) OFS = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-k")) reps = atol(argv[i + 1]);
    }
    if (N < D) N = D;
    const fw_kernels *ks[8];
    int nk = 0;
    const fw_kernels *all[] = {&fw_kernels_avx512, &fw_kernels_avx2, &fw_kernels_baseline,
                               &fw_kernels_old_avx512, &fw_kernels_old_avx2,
                               &fw_kernels_old_baseline};
    for (int i = 0; i < 6; i++)
        if (all[i] != NULL && (i >= 3 || fw_variant_runs(all[i])) && listed(vlist, all[i]->name))
            ks[nk++] = all[i];
    void *lib = getenv("FW_MKL_LIB") ? dlopen(getenv("FW_MKL_LIB"), RTLD_NOW) : NULL;
    if (getenv("FW_MKL_LIB") && !lib) fprintf(stderr, "FW_MKL_LIB: %s\n", dlerror());

    XF = (float *)((char *)aligned_alloc(64, (size_t)N * 4 + 128) + OFS);
    YF = (float *)((char *)aligned_alloc(64, (size_t)N * 4 + 128) + OFS);
    XD = (double *)((char *)aligned_alloc(64, (size_t)N * 8 + 128) + OFS);
    YD = (double *)((char *)aligned_alloc(64, (size_t)N * 8 + 128) + OFS);
    WF = malloc(D * 4), BF = malloc(D * 4), WD = malloc(D * 8), BD = malloc(D * 8);
    srand(1);
    for (long i = 0; i < N; i++) {
        XD[i] = rand() / (double)RAND_MAX * 10 - 5;
        XF[i] = (float)XD[i];
    }
    for (int i = 0; i < D; i++) {
        WD[i] = WF[i] = 1.0f + (float)i / D;
        BD[i] = BF[i] = (float)i / D;
    }
    if (reps <= 0) reps = 20000000 / N > 2 ? 20000000 / N : 2;
    FILE *f = fopen("/proc/loadavg", "r");
    char load[64] = "?";
    if (f) {
        if (!fgets(load, sizeof load, f)) strcpy(load, "?");
        fclose(f);
        load[strcspn(load, "\n")] = 0;
    }
    printf("# kernel loops, 1 thread, %ld elements (x, y at %ld bytes past 64), median of %d "
           "rounds, ns per element; load %s\n", N, OFS, rounds, load);
    printf("%-18s", "case");
    for (int j = 0; j < nk; j++) printf(" %12s", ks[j]->name);
    printf(" %12s %12s\n", "memcpy", lib ? "mkl" : "");
    for (int c = 0; c < NCASES; c++) {
        if (!listed(clist, CASES[c].name)) continue;
        for (int dbl = 0; dbl < 2; dbl++) {
            /* candidates: the tables, memcpy, MKL's function for this case */
            void *vml = NULL;
            char sym[32];
            if (lib && CASES[c].vml) {
                snprintf(sym, sizeof sym, "vm%c%s", dbl ? 'd' : 's', CASES[c].vml);
                vml = dlsym(lib, sym);
            }
            int ncand = nk + 1 + (vml != NULL);
            double *t = malloc(sizeof(double) * (size_t)rounds * (size_t)ncand);
            for (int r = 0; r < rounds; r++)
                for (int j = 0; j < ncand; j++) {
                    const fw_kernels *k = j < nk ? ks[j] : NULL;
                    int peer = j - nk;
                    call(k, c, dbl, peer, vml); /* warm */
                    double t0 = now();
                    for (long q = 0; q < reps; q++) call(k, c, dbl, peer, vml);
                    t[j * rounds + r] = (now() - t0) / (double)reps / (double)N * 1e9;
                }
            printf("%-11s %-6s", CASES[c].name, dbl ? "f64" : "f32");
            for (int j = 0; j < ncand; j++) {
                qsort(t + j * rounds, (size_t)rounds, sizeof(double), cmp);
                printf(" %12.3f", t[j * rounds + rounds / 2]);
            }
            printf("\n");
            fflush(stdout);
            free(t);
        }
    }
    return 0;
}
