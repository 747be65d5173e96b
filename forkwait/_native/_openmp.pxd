# The only module that declares OpenMP functions; everything else cimports
# these names from here. Serial fallbacks live in _openmp_helpers.h.

cdef extern from "_openmp_helpers.h" nogil:
    int FW_HAVE_OPENMP
    int FW_OPENMP_VERSION
    int omp_get_max_threads()
    int omp_get_num_threads()
    int omp_get_thread_num()
    int omp_in_parallel()
    int omp_get_level()
    void omp_set_num_threads(int n)
    int omp_get_dynamic()
    int fw_omp_release_threads()
