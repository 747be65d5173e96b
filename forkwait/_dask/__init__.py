"""forkwait on a Dask distributed cluster: ``with fw.backend(client):``.

Inside the block, the forks that the thread which entered it makes outside
any forkwait task go to the cluster (``client.submit(..., pure=False)``);
forks made inside a task, on the cluster or here, run on the local pool of
the machine that runs the task. What a cluster fork returns is a plain
:class:`forkwait.Future` made with ``Future()`` and completed from the
client's event loop, so every forkwait call that takes a future takes it.

The parts:

- ``_backend``: the ``with`` blocks (a stack per thread) and fork()'s hook;
- ``_submit``: on the client, ``fork`` turns forkwait futures among the
  arguments into Dask dependencies and submits (``pure=False``);
- ``_complete``: on the client's event loop, each task's Dask future state
  tells forkwait when the task settles (an event forkwait puts there, no
  coroutine per task), and the results that finish together are fetched with
  one gather; forkwait's own completion threads then finish the forkwait futures,
  so callbacks (``then``, ``add_done_callback``) never run in, or block, the
  event loop;
- ``_worker``: on a worker, the dependencies become finished forkwait futures
  again before the function runs; a worker plugin sets the worker process's
  forkwait settings (pool size, team size, CPU budget) to its share of the
  machine;
- ``_record``: what ``fw.profile()`` shows of cluster forks.

``distributed`` is imported only when a backend is made.
"""

from forkwait._dask._backend import ClusterBackend, backend
from forkwait._dask._record import (
    ClusterRecord,
    Recording,
    chrome_trace_events,
    recording,
    start_recording,
    stop_recording,
)

# for the tests: a cluster fork's Dask future; a worker's share of the CPUs
from forkwait._dask._shared import _dask_of as _dask_of
from forkwait._dask._worker import _share as _share
from forkwait._dask._worker import worker_settings

__all__ = [
    "ClusterBackend",
    "ClusterRecord",
    "Recording",
    "backend",
    "chrome_trace_events",
    "recording",
    "start_recording",
    "stop_recording",
    "worker_settings",
]
