# Intra-op settings shared by the pool and the kernels. cimport these; the
# state itself lives in _fw_team_state.h, compiled into _team only.

cdef int get_local_threads() noexcept nogil
cdef void set_local_threads(int n) noexcept nogil
cdef int requested_threads() noexcept nogil
cdef int team_begin(Py_ssize_t n_items, Py_ssize_t grain) noexcept nogil
cdef void team_end(int team) noexcept nogil
cdef int omp_team_ok() noexcept nogil
cdef void team_atfork_child() noexcept nogil
cdef int team_held() noexcept nogil
cdef void team_release() noexcept nogil
cdef int team_split_dynamic() noexcept nogil
cdef void team_tasks(int delta) noexcept nogil
