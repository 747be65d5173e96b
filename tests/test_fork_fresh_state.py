"""State a process makes for itself, with no at-fork handler of its own: after
os.fork(), the child's Dask keys have a base of their own, and fw.tune's
record of NumPy's BLAS threads is taken again where its threads are gone
(OpenBLAS stops them before every fork, in the parent; the child has none)."""

import json
import os
import threading

import pytest

from forkwait import _tune
from forkwait._dask import _submit
from forkwait._measure.timing import blas_thread_count, thread_ids

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")


def in_fork_child(fn):
    """fn() in a child made by os.fork(); what it returned (a str), sent
    back through a pipe. The child leaves with os._exit: 0, or 1 if fn raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(r)
            os.write(w, fn().encode())
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
    return out


@needs_fork
def test_a_fork_child_makes_dask_keys_of_its_own():
    parent = _submit._key_base()
    assert _submit._key_base() is parent  # kept for the life of the process
    first = _submit._key_suffix()
    assert first.startswith(parent.base) and len(first) == 32

    def child():
        keys = _submit._key_base()
        return json.dumps([keys.pid, keys.base, _submit._key_suffix()])

    pid, base, suffix = json.loads(in_fork_child(child))
    assert pid != os.getpid()
    assert base != parent.base and suffix.startswith(base) and len(suffix) == 32
    # the parent keeps its own base and count
    assert _submit._key_base() is parent
    assert _submit._key_suffix() == f"{parent.base}{int(first[24:], 16) + 1:08x}"


def blas_pool_tids():
    """_tune._blas_pool_tids(), called again while the ids it returns are not
    all alive: taking them needs BLAS's threads to be seen working (CPU time
    counted in clock ticks) during its 50 ms of products, which a busy
    machine can deny; it then keeps the old ids and tries again next time."""
    for _ in range(40):
        tids = _tune._blas_pool_tids()
        if tids <= thread_ids():
            return tids
    return tids


@pytest.fixture
def blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if blas_thread_count() < 2:
            pytest.skip("BLAS runs one thread on this machine")
        if not blas_pool_tids():
            pytest.skip("NumPy's BLAS started no threads of its own")
        yield


@needs_fork
def test_blas_thread_ids_are_taken_again_after_a_fork(blas_threads):
    before = blas_pool_tids()
    assert before and before <= thread_ids()
    in_fork_child(lambda: "")
    gone = before - thread_ids()  # OpenBLAS stopped its threads for the fork
    after = blas_pool_tids()
    assert after and after <= thread_ids()
    assert after.isdisjoint(gone)

    def child():
        tids = blas_pool_tids()  # the parent's ids: none is the child's
        return json.dumps([sorted(tids), sorted(thread_ids())])

    tids, alive = json.loads(in_fork_child(child))
    assert tids and set(tids) <= set(alive) and set(tids).isdisjoint(after)


def test_blas_thread_ids_are_kept_while_their_threads_live(blas_threads, monkeypatch):
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    monkeypatch.setattr(_tune, "_BLAS_POOL_TIDS", {dead.native_id})
    tids = blas_pool_tids()
    assert tids and dead.native_id not in tids and tids <= thread_ids()
    assert _tune._blas_pool_tids() is tids  # alive: not taken again
