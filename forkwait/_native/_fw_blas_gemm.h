/* The GEMMs ops.matmul calls: one table for the process, of up to
 * FW_BLAS_SLOTS libraries ("slots"), each with its Fortran sgemm/dgemm (in
 * the integer width it was built with) and its thread-count functions.
 *
 * Slot 0 is the first library found in load_blas's order (NumPy's OpenBLAS
 * by default), slot 1 the second (scipy-openblas64's, else SciPy's) when it
 * is another file. A 1-thread GEMM takes the slot least used by matmuls now
 * (fw_blas_pin_least, _fw_blas.h), so two matmuls at once call two
 * different libraries.
 *
 * Types only: the table itself is _blas's (filled by load_blas,
 * _blas_load.pxi); _matmul reads it through blas_gemms() (_blas.pxd). It
 * changes in load_blas (not while matmuls run) and in an os.fork() child
 * at its first BLAS step (blas_after_fork, which every matmul passes
 * before it reads a slot while `forked` is set). */
#ifndef FW_BLAS_GEMM_H
#define FW_BLAS_GEMM_H

#define FW_BLAS_SLOTS 2

typedef long long fw_i64;

/* the Fortran GEMMs: 32-bit integers (LP64) ... */
typedef void (*fw_sgemm_t)(char *ta, char *tb, int *m, int *n, int *k, float *alpha,
                           float *a, int *lda, float *b, int *ldb, float *beta, float *c,
                           int *ldc);
typedef void (*fw_dgemm_t)(char *ta, char *tb, int *m, int *n, int *k, double *alpha,
                           double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                           int *ldc);
/* ... and 64-bit (ILP64: NumPy's wheels, scipy_sgemm_64_) */
typedef void (*fw_sgemm64_t)(char *ta, char *tb, fw_i64 *m, fw_i64 *n, fw_i64 *k,
                             float *alpha, float *a, fw_i64 *lda, float *b, fw_i64 *ldb,
                             float *beta, float *c, fw_i64 *ldc);
typedef void (*fw_dgemm64_t)(char *ta, char *tb, fw_i64 *m, fw_i64 *n, fw_i64 *k,
                             double *alpha, double *a, fw_i64 *lda, double *b, fw_i64 *ldb,
                             double *beta, double *c, fw_i64 *ldc);

/* a BLAS library's thread count: set, get */
typedef void (*fw_blas_set_t)(int);
typedef int (*fw_blas_get_t)(void);

typedef struct {
    int n;                          /* slots filled */
    int use;                        /* ops.matmul calls them (0: none, or forkwait's
                                       own kernel forced: use_own_kernel) */
    int team;                       /* the slot whose copy runs its threaded calls on
                                       forkwait's team (_fw_blas_team.h), or -1 */
    int forked;                     /* an os.fork() child before its first BLAS step */
    int ilp[FW_BLAS_SLOTS];         /* the slot takes 64-bit integers */
    int lib[FW_BLAS_SLOTS];         /* the library's index in the record (_fw_blas.h) */
    int kind[FW_BLAS_SLOTS];        /* where it was found: an index into BLAS_ORDER */
    fw_sgemm_t s32[FW_BLAS_SLOTS];  /* (LP64 slots) */
    fw_dgemm_t d32[FW_BLAS_SLOTS];
    fw_sgemm64_t s64[FW_BLAS_SLOTS]; /* (ILP64 slots) */
    fw_dgemm64_t d64[FW_BLAS_SLOTS];
    fw_blas_set_t set[FW_BLAS_SLOTS];
    fw_blas_get_t get[FW_BLAS_SLOTS];
} fw_blas_gemms;

#endif
