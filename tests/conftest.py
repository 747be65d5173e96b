"""Fixtures of every test file: the thread settings (put back after each
test) and a gate for tasks to block on. Helpers to import: _child.py
(child processes), _pool_helpers.py (fork trees, polling), _ops_helpers.py
(the kernels' references).
"""

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
