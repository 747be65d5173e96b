"""Process state in the child of os.fork(): each piece is reset or kept as
the one list in forkwait/_native/_pool/atfork.pxi says, and state that the
Python layer keeps needs no at-fork handler of its own (the child's Dask
keys get a base of their own; fw.tune's record of NumPy's BLAS threads is
taken again where its threads are gone: OpenBLAS stops them before every
fork, and the child has none)."""

import concurrent.futures as cf
import json
import os
import threading
import time

import pytest
from _child import in_fork_child as _fork_child
from _child import needs_fork

import forkwait as fw
from forkwait import _tune
from forkwait._dask import _submit
from forkwait._measure.timing import blas_thread_count, thread_ids
from forkwait._native import pool


def in_fork_child(fn):
    """fn() in an os.fork() child (killed if it hangs); what it returned."""
    child = _fork_child(fn, timeout=60)
    assert child.ok, child.error or f"child exit code {child.exitcode}"
    return child.value


# -- the pool's Python state ------------------------------------------------------------


@needs_fork
def test_cf_lock_held_by_another_thread_at_the_fork_is_free_in_the_child():
    # concurrent.futures.wait takes this lock as every future's _condition;
    # a parent thread holding it at the fork must not leave it held.
    held = threading.Event()
    release = threading.Event()

    def holder():
        with fw.Future()._condition:
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    try:
        def body():
            f = fw.fork(pow, 2, 5)
            done, _ = cf.wait([f], timeout=10)
            return f"{len(done)} {f.result()}"

        assert in_fork_child(body) == "1 32"
    finally:
        release.set()
        t.join(30)


@needs_fork
def test_the_fork_hook_is_cleared_in_the_child_and_kept_in_the_parent():
    calls = []

    def hook(fn, args, kwargs):
        calls.append(fn)
        return None  # leave the fork to the local pool

    old = pool._set_fork_hook(hook)
    try:
        def body():
            return repr(pool._set_fork_hook(None))

        assert in_fork_child(body) == "None"
        fw.wait(fw.fork(abs, -1))
        assert calls == [abs]
    finally:
        pool._set_fork_hook(old)


@needs_fork
def test_unretrieved_failures_of_the_parent_are_not_reported_by_the_child():
    # a failure collected, its report not yet made at the fork
    pool._defer_report_for_tests(ValueError("parent's"))
    try:
        assert in_fork_child(lambda: str(len(pool._unretrieved_pending()))) == "0"
        assert len(pool._unretrieved_pending()) == 1
    finally:
        pool._flush_unretrieved()


# -- the Python layer's own state ------------------------------------------------------


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
    for _ in range(1000):  # join returns before the OS thread has quite gone
        if dead.native_id not in thread_ids():
            break
        time.sleep(0.005)
    monkeypatch.setattr(_tune, "_BLAS_POOL_TIDS", {dead.native_id})
    tids = blas_pool_tids()
    assert tids and dead.native_id not in tids and tids <= thread_ids()
    assert _tune._blas_pool_tids() is tids  # alive: not taken again
