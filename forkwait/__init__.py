"""forkwait: inter-op and intra-op CPU parallelism for plain Python.

``fork(fn, *args)`` runs a call on a process-wide pool and returns a
:class:`Future` at once; ``wait(fut)`` returns its value. ``forkwait.ops``
holds OpenMP kernels that split one operation across a team of threads.
"""

# The modules' floors, bottom to top; a module imports its own floor and the
# ones below, never one above (a lower module offers a hook that an upper one
# installs, as pool._set_profiler does). tests/test_layers.py checks it.
#   _native/, _version  <  _measure/  <  ops/, _threads, _futures, _dask/
#   <  _profile, _tune, _info  <  this __init__ (the public names)  <  cli/, __main__

from forkwait import ops
from forkwait._dask import backend
from forkwait._futures import Executor, as_completed, scope, wait_any
from forkwait._info import parallel_info
from forkwait._native.pool import Future, InvalidStateError, collect_all, fork, wait, wait_all
from forkwait._profile import profile
from forkwait._threads import (
    get_blas_budget,
    get_intra_op_mode,
    get_num_interop_threads,
    get_num_threads,
    get_torch_budget,
    num_threads,
    set_blas_budget,
    set_intra_op_mode,
    set_num_interop_threads,
    set_num_threads,
    set_torch_budget,
)
from forkwait._tune import tune, tune_region
from forkwait._version import __version__

__all__ = [
    "Executor",
    "Future",
    "InvalidStateError",
    "__version__",
    "as_completed",
    "backend",
    "collect_all",
    "fork",
    "get_blas_budget",
    "get_intra_op_mode",
    "get_num_interop_threads",
    "get_num_threads",
    "get_torch_budget",
    "num_threads",
    "ops",
    "parallel_info",
    "profile",
    "scope",
    "set_blas_budget",
    "set_intra_op_mode",
    "set_num_interop_threads",
    "set_num_threads",
    "set_torch_budget",
    "tune",
    "tune_region",
    "wait",
    "wait_all",
    "wait_any",
]
