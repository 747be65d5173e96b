# The atomics of _fw_atomic.h for Cython code (the one vocabulary; see there
# for the memory orders). The macros are type-generic; Cython needs a type
# for their result, so each is declared once per type it is used with.

cdef extern from "_fw_atomic.h" nogil:
    int FW_LOAD(...)
    long long FW_LOADLL "FW_LOAD"(...)
    long long FW_LOADLL_RLX "FW_LOAD_RLX"(...)
    int FW_LOAD_ACQ(...)
    int FW_LOAD_RLX(...)
    void FW_STORE(...)
    void FW_STORE_REL(...)
    void FW_STORE_RLX(...)
    int FW_ADD(...)
    long long FW_ADDLL "FW_ADD"(...)
    int FW_ADD_ACQREL(...)
    bint FW_CAS_ACQREL(...)
    void FW_FENCE()
    int fw_cas_int(int *p, int expected, int desired)
