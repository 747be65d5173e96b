"""forkwait on a Dask distributed cluster: ``with fw.backend(client):``.

Inside the block, the forks that the thread which entered it makes outside
any forkwait task go to the cluster (``client.submit(..., pure=False)``);
forks made inside a task, on the cluster or here, run on the local pool of
the machine that runs the task. What a cluster fork returns is a plain
:class:`forkwait.Future` made with ``Future()`` and completed from the
client's event loop, so every forkwait call that takes a future takes it.

What runs where:

- the client (this process): ``fork`` submits; one coroutine per task on the
  client's event loop awaits the Dask future (concurrent gathers are batched
  by Dask); completion threads of forkwait's own finish the forkwait futures,
  so callbacks (``then``, ``add_done_callback``) never run in, and never
  block, the event loop;
- a worker: :func:`_run_on_worker` turns the Dask dependencies back into
  finished forkwait futures, then calls the function. The worker's forkwait
  settings (pool size, team size, CPU budget) are its share of the machine,
  set once per worker process by :class:`_SettingsPlugin`.

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
