# The BLAS limiter shared by the pool (the budget) and ops.matmul (pins).
# The state lives in _fw_blas.h, compiled into _blas only; cimport these.

cdef void blas_tasks(int delta) noexcept nogil
cdef void blas_pin(int lib, int delta) noexcept nogil
cdef int blas_pin_wide(int lib, int n) noexcept nogil
cdef int blas_pin_least(const int* libs, int n) noexcept nogil
cdef void blas_unpin_wide(int lib) noexcept nogil
cdef int blas_tasks_running() noexcept nogil
cdef int blas_register(void* set_fn, void* get_fn, const char* path) noexcept nogil
cdef void blas_atfork_child() noexcept nogil
