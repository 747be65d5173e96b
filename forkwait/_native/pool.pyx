"""The inter-op pool: a work-stealing scheduler and the Future core.

Scheduling (``_pool/state.h`` holds the C state and its locking rules):

- Every pool thread (worker or compensating spare) owns a deque. A fork made
  by a task on a pool thread goes on that thread's deque; the owner takes
  its newest task first, idle threads steal the oldest. Forks from any other
  thread go to a shared injection queue.
- Idle pool threads look for work for a few microseconds, then sleep. A fork
  wakes one only when none is awake and none is already being woken, so a
  fork into a busy pool costs no system call (Rayon's sleep rule).
- A pool thread claims a task only while it holds the GIL (it needs it to
  run the task anyway), so a thread that forks and then waits finds its
  task still queued and runs it itself, with no hand-off.

Waiting (the isolation rule of docs/guide.md): a wait on future X runs X in
the waiting thread if X has not started; while X runs elsewhere, the waiter
runs only queued tasks of X's own subtree (forked by X or its descendants),
never unrelated work: "leapfrogging" (Wagner and Calder). Timed waits help
the same way. A wait that would close a cycle (a task waiting on itself, or
A on B while B waits on A) raises RuntimeError.

Deep nesting: a waiting thread near Python's recursion limit or the end of
its C stack runs nothing more inline. It blocks, and the pool starts a
compensating thread for as long as it is blocked (Java's ForkJoinPool's
managed blocking), so progress never depends on a blocked thread.

Completion is iterative: a future's callbacks, and the ``then`` chains they
complete, run in a loop in the completing thread, never by recursion.

Life in the process: at interpreter exit the queued tasks still run, after
which ``fork`` raises RuntimeError. ``os.fork()``: pthread_atfork handlers
hold the pool's locks only inside fork() itself; the child resets the pool
around its one thread, starts workers for the tasks queued at the fork, and
fails the tasks that other threads of the parent were running.
"""

# One extension module, one translation unit: the concepts live in files of
# their own under _pool/ (C in the .h headers, Cython in the .pxi files) and
# are included here in layering order, each using only what comes before it
# (Cython resolves cdef functions across the whole module, so a file may
# call a later one's, e.g. a completion wakes a wait).

cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.pythread cimport PyThread_get_thread_ident

from forkwait._native._atomic cimport (
    FW_ADD, FW_ADDLL, FW_LOAD, FW_LOADLL, FW_STORE, FW_STORE_REL, fw_cas_int,
)
from forkwait._native._blas cimport (
    blas_atfork_child, blas_atfork_parent, blas_atfork_prepare, blas_tasks, torch_begin,
    torch_cap_here, torch_end,
)
from forkwait._native._team cimport (
    get_local_threads, set_local_threads, team_atfork_child, team_held, team_release, team_tasks,
)

import _thread
import atexit
import collections
import concurrent.futures as _cf
import logging
import os
import sys
import threading
import traceback
import types
import weakref
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FuturesTimeoutError

include "_pool/decl.pxi"       # the C side (_pool/*.h) as Cython sees it
include "_pool/future.pxi"     # the Future: states, FutureCore, Future
include "_pool/report.pxi"     # failures nobody retrieved
include "_pool/complete.pxi"   # completing a future: state, waiters, callbacks
include "_pool/profile.pxi"    # the profiler's hook
include "_pool/run.pxi"        # running a claimed task
include "_pool/gil_free.pxi"   # GIL-free tasks
include "_pool/wait.pxi"       # the wait loop and the isolation rule
include "_pool/workers.pxi"    # workers and spares
include "_pool/api.pxi"        # fork, wait, wait_all, collect_all
include "_pool/control.pxi"    # start, resize, exit, statistics
include "_pool/atfork.pxi"     # os.fork(): the child's reset

_logger = logging.getLogger("forkwait")

# ---------------------------------------------------------------- set-up

# The one pthread_atfork of forkwait's native modules (C state) and the one
# os.register_at_fork (Python state): see _pool/atfork.pxi for what each
# resets and in which order. (logging is imported above: its atexit handler
# is registered before ours.)
if fw_sched_init() != 0 or pthread_atfork(_atfork_prepare, _atfork_parent,
                                          _atfork_child) != 0:
    raise ImportError("forkwait: could not set up the pool (pthread_atfork failed)")
os.register_at_fork(after_in_child=_after_fork_child)
# At exit: threading's hook (_shutdown_at_exit: queued tasks run, workers
# stop; see _pool/control.pxi) and atexit's (_exit_reports: after logging's
# own handler was registered, so run before it: see _pool/report.pxi).
atexit.register(_exit_reports)

MAX_INTEROP_THREADS = FW_MAX_INTEROP

_set_node_offset()
fw_object_init()
fw_P.team_held = team_held      # an idle pool thread gives back its OpenMP team
fw_P.team_release = team_release
fw_future_install(Future)

# The two builtins: vectorcall functions over _fork_impl and _wait_impl
# (see _fw_fastcall.h), with the docs of api.pxi.
fork = fw_make_fork(<fw_fork_impl_t>_fork_impl, __name__, _FORK_DOC)
wait = fw_make_wait(<fw_wait_impl_t>_wait_impl, __name__, _WAIT_DOC)
