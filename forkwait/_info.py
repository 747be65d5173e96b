"""parallel_info(): what forkwait will run with, in the spirit of
``torch.__config__.parallel_info()``."""

from __future__ import annotations

import os
import platform
import sys

from forkwait._native import _blas, _dispatch, _team, pool
from forkwait._threads import (
    SOURCES,
    available_cpus,
    get_blas_budget,
    get_intra_op_mode,
    get_torch_budget,
)
from forkwait._version import __version__

_ENV_VARS = (
    "FORKWAIT_NUM_THREADS",
    "FORKWAIT_NUM_INTEROP_THREADS",
    "FORKWAIT_INTRA_OP_MODE",
    "FORKWAIT_BLAS_BUDGET",
    "FORKWAIT_TORCH_BUDGET",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "OMP_PROC_BIND",
    "OMP_DYNAMIC",
    "GOMP_SPINCOUNT",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)

_OPENMP_VERSIONS = {
    200505: "2.5", 200805: "3.0", 201107: "3.1", 201307: "4.0",
    201511: "4.5", 201811: "5.0", 202011: "5.1", 202111: "5.2",
}


def _threadpools() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["(install threadpoolctl to list the BLAS and OpenMP pools)"]
    rows = []
    for p in threadpool_info():
        rows.append(
            f"{p.get('user_api', '?')}: {p.get('internal_api', '?')} "
            f"{p.get('version') or ''} num_threads={p.get('num_threads')} "
            f"({os.path.basename(p.get('filepath', ''))})"
        )
    return rows or ["(none loaded)"]


def _kernels_here() -> str:
    if _team._fork_serial():
        return (
            "serial (this is the child of os.fork() and this thread had run an OpenMP "
            "team before the fork: GCC bug 60035; other threads run kernels in parallel)"
        )
    return "parallel when asked for"


def _torch_line() -> str:
    state = _blas.torch_state()
    where = ("torch not imported" if "torch" not in sys.modules
             else f"torch's libgomp: {state['libgomp']}" if state["found"]
             else "torch imported, its OpenMP not found (nothing to budget)")
    return (f"torch budget in forked tasks: {'on' if get_torch_budget() else 'off'}"
            f" [{SOURCES['torch_budget']}]; {where}")


def _blas_line() -> str:
    backend, path, threads = _blas.blas_info()
    if path is None:
        return f"BLAS behind ops.matmul: {backend} (forkwait's own kernel: no OpenBLAS found)"
    line = (
        f"BLAS behind ops.matmul: {backend} ({os.path.basename(path)}), {threads} thread(s) "
        "now (1 inside ops.matmul)"
    )
    second = _blas.blas_libraries()[1:]
    if second:
        name, spath, _ = second[0]
        line += f"; second copy, for concurrent GEMMs: {name} ({os.path.basename(spath)})"
    return line


def _pool_size(stats: dict) -> str:
    """The pool's size: its target, and the live workers while they differ
    (a shrinking pool's busy workers leave when their task ends)."""
    target, live = stats["target"], stats["workers"]
    size = f"{target} worker{'' if target == 1 else 's'}"
    if live > target:
        size += f" ({live} live while it shrinks: a busy worker leaves when its task ends)"
    elif live == 0:
        size += " (none started yet: they start at the first fork)"
    elif live < target:
        size += f" ({live} live so far)"
    return size


def parallel_info() -> str:
    """A report of forkwait's parallel settings, for humans and bug reports.

    Like ``torch.__config__.parallel_info()``: forkwait's version, both thread
    counts and where each came from (``[set in code: ...]``, ``[environment:
    NAME=value]`` or ``[default: ...]``), whether OpenMP is compiled in (and its
    version), the CPUs this process may use, the environment variables that
    matter and their values, and the thread pools that threadpoolctl sees.

    Returns
    -------
    str
        Several lines of ``name: value``.

    Examples
    --------
    >>> import forkwait as fw
    >>> report = fw.parallel_info()
    >>> "inter-op threads" in report and "OpenMP" in report
    True
    """
    have_omp, omp_version, omp_max = _team.openmp_info()
    stats = pool._stats()
    if have_omp:
        omp = f"yes, OpenMP {_OPENMP_VERSIONS.get(omp_version, '?')} (_OPENMP={omp_version})"
    else:
        omp = "no: kernels run on one thread (rebuild with an OpenMP compiler)"
    lines = [
        f"forkwait {__version__} (Python {platform.python_version()}, {platform.machine()})",
        f"intra-op threads (set_num_threads): {_team._get_global_threads()}"
        f" [{SOURCES['num_threads']}]",
        f"intra-op threads in this thread: {_team._get_requested_threads()}",
        f"intra-op mode: {get_intra_op_mode()} [{SOURCES['intra_op_mode']}]",
        f"inter-op threads (set_num_interop_threads): {pool._get_interop_threads()}"
        f" [{SOURCES['num_interop_threads']}]",
        f"inter-op pool: {stats['state']}, {_pool_size(stats)}, "
        f"{stats['running']} running, {stats['queued']} queued, "
        f"{stats['spares']} spare (compensating) threads",
        f"inter-op scheduler: work-stealing deques; {stats['completed']} tasks done, "
        f"{stats['steals']} stolen, {stats['helped']} run by waits for their own subtree, "
        f"{stats['gil_free']} GIL-free (forked kernels run without the GIL)",
        f"OpenMP compiled in: {omp}",
        f"omp_get_max_threads() in this thread: {omp_max}",
        f"kernels in this thread: {_kernels_here()}",
        f"CPU variant of the kernels: {_dispatch.variant()} (built: "
        + ", ".join(n + ("" if ok else " [not on this CPU]") for n, ok in _dispatch.variants())
        + ")",
        _blas_line(),
        f"BLAS budget in forked tasks: {'on' if get_blas_budget() else 'off'}"
        f" [{SOURCES['blas_budget']}]; libraries: "
        + (", ".join(f"{os.path.basename(lib['path'])} ({lib['num_threads']})"
                     for lib in _blas.libraries()) or "none loaded"),
        _torch_line(),
        f"CPUs available to this process: {available_cpus()} (os.cpu_count(): {os.cpu_count()})",
        "environment:",
    ]
    for name in _ENV_VARS:
        lines.append(f"  {name}={os.environ[name]}" if name in os.environ else f"  {name} (unset)")
    lines.append("thread pools seen by threadpoolctl:")
    lines.extend("  " + row for row in _threadpools())
    return "\n".join(lines)
