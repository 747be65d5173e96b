# The CPU variant of the hot loops in use (see _fw_kernels.h). cimport
# kernels() and call through the table it returns.

cdef extern from "_fw_kernels.h" nogil:
    enum:
        FW_NEG
        FW_ABS
        FW_EXP
        FW_LOG
        FW_SQRT
        FW_TANH
        FW_SIGMOID
        FW_RELU
        FW_GELU
        FW_SOFTMAX
        FW_LOG_SOFTMAX
    ctypedef struct fw_kernels:
        const char* name
        const char* isa
        void (*unary_f)(int op, const float* x, float* y, Py_ssize_t n) noexcept nogil
        void (*unary_d)(int op, const double* x, double* y, Py_ssize_t n) noexcept nogil
        void (*softmax_f)(int op, const float* x, float* y, Py_ssize_t r0,
                          Py_ssize_t r1, Py_ssize_t d) noexcept nogil
        void (*softmax_d)(int op, const double* x, double* y, Py_ssize_t r0,
                          Py_ssize_t r1, Py_ssize_t d) noexcept nogil
        void (*layer_norm_f)(const float* x, float* y, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t d, const float* w, const float* b, double eps) noexcept nogil
        void (*layer_norm_d)(const double* x, double* y, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t d, const double* w, const double* b, double eps) noexcept nogil
        float (*sum_f)(const float* x, Py_ssize_t n) noexcept nogil
        double (*sum_d)(const double* x, Py_ssize_t n) noexcept nogil
        void (*sum2_f)(const float* x, const float* y, Py_ssize_t n, float* sx,
                       float* sy) noexcept nogil
        void (*sum2_d)(const double* x, const double* y, Py_ssize_t n, double* sx,
                       double* sy) noexcept nogil
        float (*max_f)(const float* x, Py_ssize_t n, int is_max) noexcept nogil
        double (*max_d)(const double* x, Py_ssize_t n, int is_max) noexcept nogil
        void (*max2_f)(const float* x, const float* y, Py_ssize_t n, int is_max,
                       float* rx, float* ry) noexcept nogil
        void (*max2_d)(const double* x, const double* y, Py_ssize_t n, int is_max,
                       double* rx, double* ry) noexcept nogil

cdef const fw_kernels* kernels() noexcept nogil
