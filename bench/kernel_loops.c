/* The hot loops of forkwait's kernels alone, in C, one thread: what a change
 * to _fw_kernels.c / _fw_math.h / _fw_simd.h does to the loops themselves,
 * without the Python layer, the team or the allocation of the output.
 *
 *   gcc -O3 -march=x86-64-v2 -ffp-contract=off -fno-strict-aliasing -Wno-psabi \
 *       -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma -DFW_VARIANT=avx512 \
 *       -Iforkwait/_native bench/kernel_loops.c -o /tmp/kernel_loops -lm
 *   /tmp/kernel_loops [rounds]
 *
 * (for the avx2 variant: -mavx2 -mfma -DFW_VARIANT=avx2; the baseline: neither).
 * It includes _fw_kernels.c itself, so the same file built from another
 * checkout times that checkout's loops: an A/B of a kernel change. Inputs:
 * uniform(-5, 5), 10^6 float32 elements (row ops: 1000 rows of 1000), out of
 * place; the median over rounds of microseconds per call is printed. */
#include "_fw_kernels.c"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 1000000
#define D 1000

static float X[N], Y[N], W[D], B[D];

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
static const struct { const char *name; int kind, op; } CASES[] = {
    {"exp", UNARY, FW_EXP},         {"tanh", UNARY, FW_TANH},
    {"sigmoid", UNARY, FW_SIGMOID}, {"gelu", UNARY, FW_GELU},
    {"softmax", SOFTMAX, FW_SOFTMAX}, {"log_softmax", SOFTMAX, FW_LOG_SOFTMAX},
    {"layer_norm", LAYER_NORM, 0},
};

static void run(int c) {
    switch (CASES[c].kind) {
    case UNARY: unary_f(CASES[c].op, X, Y, N); break;
    case SOFTMAX: softmax_f(CASES[c].op, X, Y, 0, N / D, D); break;
    default: layer_norm_f(X, Y, 0, N / D, D, W, B, 1e-5); break;
    }
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 9, ncases = sizeof(CASES) / sizeof(CASES[0]);
    double *t = malloc(sizeof(double) * (size_t)rounds * (size_t)ncases);
    srand(1);
    for (int i = 0; i < N; i++) X[i] = (float)(rand() / (double)RAND_MAX * 10 - 5);
    for (int i = 0; i < D; i++) W[i] = 1.0f + (float)i / D, B[i] = (float)i / D;
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < ncases; c++) {
            run(c); /* warm */
            double t0 = now();
            for (int k = 0; k < 10; k++) run(c);
            t[c * rounds + r] = (now() - t0) / 10 * 1e6;
        }
    printf("# %s variant, 1 thread, median of %d rounds, us per call\n", FW_STR(FW_VARIANT),
           rounds);
    for (int c = 0; c < ncases; c++) {
        qsort(t + c * rounds, (size_t)rounds, sizeof(double), cmp);
        printf("%-12s %8.1f\n", CASES[c].name, t[c * rounds + rounds / 2]);
    }
    free(t);
    return 0;
}
