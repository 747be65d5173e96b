"""Fixtures of every test file: the thread settings (put back after each
test), a gate for tasks to block on, and one real Dask LocalCluster for the
session (started by the first test that asks for it). Helpers to import: _child.py
(child processes), _pool_helpers.py (fork trees, polling), _ops_helpers.py
(the kernels' references).
"""

import sys
import threading

import pytest

import forkwait as fw


@pytest.fixture
def interop():
    """Set the inter-op pool size for one test; restore it afterwards."""
    saved = fw.get_num_interop_threads()
    yield fw.set_num_interop_threads
    fw.set_num_interop_threads(saved)


@pytest.fixture
def intra():
    """Set the intra-op team size for one test; restore it afterwards."""
    saved = fw.get_num_threads()
    yield fw.set_num_threads
    fw.set_num_threads(saved)


@pytest.fixture
def gate():
    """A threading.Event for tasks to block on; set at the end of the test,
    so that nothing stays blocked after it."""
    ev = threading.Event()
    yield ev
    ev.set()


WORKER_START_S = 180  # under pytest-timeout's 300 s for a test and its fixtures


@pytest.fixture(scope="session")
def cluster():
    """A LocalCluster of 2 worker processes of 1 thread each, on loopback."""
    distributed = pytest.importorskip("distributed")
    import dask

    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        # Dask's statistical profiler walks other threads' frames (as it does
        # not on 3.11, where distributed turns it off); on 3.13t that crashed
        # the test process (a segfault in distributed/profile.py), whatever
        # the threads ran: off for the session (docs/freethreading.md)
        dask.config.set({"distributed.worker.profile.enabled": False})
    # A task that keeps killing workers fails after 2 tries, not 4.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cl)
    yield cl, client
    client.close()
    cl.close()


@pytest.fixture
def client(cluster):
    """The session cluster's client, with both workers up before and after."""
    cl, client = cluster
    # (a nanny restarts a killed worker: a new Python process importing
    # distributed, numpy and forkwait, which took over 60 s on 2 busy cores)
    client.wait_for_workers(2, timeout=WORKER_START_S)
    yield client
    client.wait_for_workers(2, timeout=WORKER_START_S)
