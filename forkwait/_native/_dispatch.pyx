"""Runtime CPU dispatch: which compiled variant of the hot loops runs.

setup.py compiles the hot loops (``_fw_kernels.c``) once per CPU variant:
``baseline`` (x86-64-v2 on x86-64; the compiler's default elsewhere), ``avx2``
(AVX2 + FMA) and ``avx512`` (AVX-512 F/DQ/BW/VL) where the compiler can. At
import the best variant this CPU runs is chosen, once;
``FORKWAIT_CPU_VARIANT=<name>`` chooses another one (that this CPU runs).
Every variant computes the same bits (see ``_fw_kernels.h``).
"""

import os

cdef extern from "_fw_kernels.h" nogil:
    const fw_kernels* fw_variant_table(int i)
    int fw_variant_runs(const fw_kernels* k)

cdef const fw_kernels* _current = NULL


cdef const fw_kernels* kernels() noexcept nogil:
    return _current


def variants():
    """The variants built into forkwait, best first: ``[(name, runs_here), ...]``."""
    cdef int i = 0
    cdef const fw_kernels* k = fw_variant_table(0)
    res = []
    while k != NULL:
        res.append((k.name.decode(), bool(fw_variant_runs(k))))
        i += 1
        k = fw_variant_table(i)
    return res


def variant():
    """The name of the variant in use."""
    return _current.name.decode()


def variant_isa():
    """The instruction-set extensions the variant in use was compiled for,
    space-separated (for example ``"x86-64 sse4.2 popcnt avx avx2 fma"``)."""
    return _current.isa.decode()


def _set_variant(str name):
    """Use the variant ``name`` from now on (tests; ValueError if it cannot run)."""
    global _current
    cdef int i = 0
    cdef const fw_kernels* k = fw_variant_table(0)
    while k != NULL:
        if k.name.decode() == name:
            if not fw_variant_runs(k):
                raise ValueError(f"forkwait: CPU variant {name!r} does not run on this CPU")
            _current = k
            return
        i += 1
        k = fw_variant_table(i)
    raise ValueError(
        f"forkwait: no CPU variant {name!r}; built: {', '.join(n for n, _ in variants())}"
    )


def _pick():
    global _current
    cdef int i = 0
    cdef const fw_kernels* k = fw_variant_table(0)
    while k != NULL and not fw_variant_runs(k):
        i += 1
        k = fw_variant_table(i)
    _current = k            # the baseline always runs
    wanted = os.environ.get("FORKWAIT_CPU_VARIANT", "").strip()
    if wanted:
        try:
            _set_variant(wanted)
        except ValueError as exc:
            import warnings
            warnings.warn(f"{exc}; FORKWAIT_CPU_VARIANT ignored", RuntimeWarning, stacklevel=2)


_pick()
