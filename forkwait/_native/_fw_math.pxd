# Vectorisable math (see _fw_math.h): branch-free, NaN/inf-exact, no -ffast-math.

cdef extern from "_fw_math.h" nogil:
    float fw_expf(float x)
    double fw_exp(double x)
    double fw_tanh(double x)
    float fw_sigmoidf(float x)
    double fw_sigmoid(double x)
    float fw_geluf(float x)
    double fw_gelu(double x)
    float logf(float x)
    double log(double x)
    float sqrtf(float x)
    double sqrt(double x)
    float fabsf(float x)
    double fabs(double x)
