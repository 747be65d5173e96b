# The BLAS libraries, for the pool (the budget of forked tasks) and ops.matmul
# (its GEMMs and their pins). The state lives in _blas only (the record and
# limiter: _fw_blas.h; the OpenBLAS team driver: _fw_blas_team.h; the GEMM
# table: _blas_load.pxi); cimport these.

cdef extern from "_fw_blas_gemm.h" nogil:
    enum: FW_BLAS_SLOTS
    ctypedef long long fw_i64
    ctypedef void (*fw_sgemm_t)(char* ta, char* tb, int* m, int* n, int* k,
                                float* alpha, float* a, int* lda, float* b, int* ldb,
                                float* beta, float* c, int* ldc) noexcept nogil
    ctypedef void (*fw_dgemm_t)(char* ta, char* tb, int* m, int* n, int* k,
                                double* alpha, double* a, int* lda, double* b, int* ldb,
                                double* beta, double* c, int* ldc) noexcept nogil
    ctypedef void (*fw_sgemm64_t)(char* ta, char* tb, fw_i64* m, fw_i64* n, fw_i64* k,
                                  float* alpha, float* a, fw_i64* lda, float* b, fw_i64* ldb,
                                  float* beta, float* c, fw_i64* ldc) noexcept nogil
    ctypedef void (*fw_dgemm64_t)(char* ta, char* tb, fw_i64* m, fw_i64* n, fw_i64* k,
                                  double* alpha, double* a, fw_i64* lda, double* b,
                                  fw_i64* ldb, double* beta, double* c,
                                  fw_i64* ldc) noexcept nogil
    ctypedef void (*fw_blas_set_t)(int) noexcept nogil
    ctypedef int (*fw_blas_get_t)() noexcept nogil
    ctypedef struct fw_blas_gemms:
        int n
        int use
        int team
        int forked
        int ilp[FW_BLAS_SLOTS]
        int lib[FW_BLAS_SLOTS]
        int kind[FW_BLAS_SLOTS]
        fw_sgemm_t s32[FW_BLAS_SLOTS]
        fw_dgemm_t d32[FW_BLAS_SLOTS]
        fw_sgemm64_t s64[FW_BLAS_SLOTS]
        fw_dgemm64_t d64[FW_BLAS_SLOTS]
        fw_blas_set_t set[FW_BLAS_SLOTS]
        fw_blas_get_t get[FW_BLAS_SLOTS]

# the GEMM table ops.matmul calls (_fw_blas_gemm.h)
cdef fw_blas_gemms *blas_gemms() noexcept nogil
# the limiter (_fw_blas.h): the pool's running tasks, ops.matmul's pins
cdef void blas_tasks(int delta) noexcept nogil
cdef void blas_pin(int lib, int delta) noexcept nogil
cdef int blas_pin_wide(int lib, int n) noexcept nogil
cdef int blas_pin_least(const int* libs, int n) noexcept nogil
cdef void blas_unpin_wide(int lib) noexcept nogil
cdef int blas_tasks_running() noexcept nogil
# the torch budget (_fw_torch.h): torch's count where a task is forked (its
# cap), and a thread's outermost task's begin (GIL held; `soon`: the tasks
# queued that other threads may begin soon, asked only when torch is there) and end
cdef int torch_cap_here() noexcept nogil
ctypedef int (*fw_soon_fn)() noexcept nogil
cdef void torch_begin(int cap, fw_soon_fn soon) noexcept
cdef void torch_end() noexcept nogil
# os.fork(): the child's reset of all of it (called by the pool's one
# pthread_atfork child handler; calls nothing of any library's), and the
# child's first BLAS step, which ops.matmul takes while blas_gemms().forked
cdef void blas_atfork_child() noexcept nogil
cdef void blas_after_fork() noexcept nogil
# (not called yet: the pool's prepare and parent handlers are to call these,
# see docs/reliability.md, "BLAS in the child")
cdef void blas_atfork_prepare() noexcept nogil
cdef void blas_atfork_parent() noexcept nogil
