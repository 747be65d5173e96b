"""Forks of forkwait's kernels that run without the GIL: ``fork(ops.matmul,
...)`` and the unary ops, in the common case, are checked at fork and run
(by a worker: completed too) without the GIL, with the direct call's bits.
Everything a future promises still holds: values, errors through the
future, callbacks, concurrent.futures waiters, cancel, profiles, and a
dropped future is freed. The calls outside the common case stay ordinary
tasks.

Such tasks queued at an os.fork(): test_fork_child.py.
"""

import concurrent.futures
import gc
import threading
import time
import weakref

import numpy as np
import pytest
from _child import run_python
from _pool_helpers import until

import forkwait as fw
from forkwait import ops
from forkwait._native import pool


def gil_free_count():
    return pool._stats()["gil_free"]


def pair(n=96, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, n)).astype(dtype),
            rng.standard_normal((n, n)).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forked_matmul_runs_gil_free_with_the_direct_calls_bits(dtype):
    a, b = pair(dtype=dtype)
    want = ops.matmul(a, b)
    before = gil_free_count()
    got = fw.wait(fw.fork(ops.matmul, a, b))
    assert gil_free_count() == before + 1
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_out_given_by_keyword_or_position_is_the_value():
    a, b = pair()
    out1, out2 = np.empty_like(a), np.empty_like(a)
    before = gil_free_count()
    f1 = fw.fork(ops.matmul, a, b, out=out1)
    f2 = fw.fork(ops.matmul, a, b, out2)
    assert fw.wait(f1) is out1 and fw.wait(f2) is out2
    assert gil_free_count() == before + 2
    np.testing.assert_array_equal(out1, ops.matmul(a, b))
    np.testing.assert_array_equal(out2, out1)


def test_many_from_several_threads_on_workers_all_right(interop):
    interop(2)
    a, b = pair(64)
    want = ops.matmul(a, b)
    before = gil_free_count()
    results = {}

    def producer(k):
        futs = [fw.fork(ops.matmul, a, b) for _ in range(40)]
        time.sleep(0.01)  # let the workers take some
        results[k] = fw.wait_all(futs)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gil_free_count() == before + 120
    for k in range(3):
        assert len(results[k]) == 40
        for r in results[k]:
            np.testing.assert_array_equal(r, want)


def test_other_calls_stay_ordinary_tasks_and_are_right():
    a, b = pair(32)
    cases = [
        (a.astype(np.float32), b),            # mixed dtypes
        (a[:, ::2], b[::2, :]),               # not contiguous
        (a.tolist(), b),                      # not arrays
        (np.stack([a, a]), b),                # a batch
        (a.astype(">f8"), b),                 # byte order
    ]
    before = gil_free_count()
    for x, y in cases:
        np.testing.assert_allclose(fw.wait(fw.fork(ops.matmul, x, y)), np.matmul(x, y),
                                   rtol=1e-5, atol=1e-5)
    assert gil_free_count() == before


def test_bad_arguments_fail_through_the_future_not_at_fork():
    a, b = pair(16)
    f = fw.fork(ops.matmul, a, np.ones((3, 3)))
    with pytest.raises(ValueError, match="do not align"):
        fw.wait(f)
    f = fw.fork(ops.matmul, a, b, out=np.empty((4, 4)))
    with pytest.raises(ValueError):
        fw.wait(f)
    f = fw.fork(ops.matmul, a, b, a, a)  # too many arguments
    with pytest.raises(TypeError):
        fw.wait(f)
    for f in (fw.fork(ops.matmul, a, b, out=False), fw.fork(ops.exp, a, out=False)):
        with pytest.raises(TypeError, match="out must be"):
            fw.wait(f)
    f = fw.fork(ops.matmul, a, b, out=np.empty((16, 16), np.float32))  # out's dtype
    with pytest.raises((TypeError, ValueError)):
        fw.wait(f)
    ro = np.empty((16, 16))
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        fw.wait(fw.fork(ops.matmul, a, b, out=ro))
    np.testing.assert_array_equal(fw.wait(fw.fork(ops.matmul, a, b)), ops.matmul(a, b))


def test_out_overlapping_an_input_is_not_written_early():
    a, b = pair(48)
    want = ops.matmul(a, b)
    x = a.copy()
    got = fw.wait(fw.fork(ops.matmul, x, b, out=x))  # the general path copies first
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_callbacks_then_and_concurrent_futures_waiters_see_it(interop):
    interop(2)
    a, b = pair(128)
    want = ops.matmul(a, b)
    for _ in range(20):
        seen = []
        done = threading.Event()
        f = fw.fork(ops.matmul, a, b)
        f.add_done_callback(lambda fut, seen=seen, done=done: (seen.append(fut), done.set()))
        g = f.then(lambda fut: float(fut.value().sum()))
        h = fw.fork(ops.matmul, a, b)
        finished, _ = concurrent.futures.wait([h], timeout=30)
        assert finished == {h}
        # (two at once may get different team sizes, and the bits of a product
        # may differ with the team size: docs/ops.md)
        np.testing.assert_allclose(h.result(), want, rtol=1e-12, atol=1e-12)
        assert done.wait(30)
        assert seen == [f]
        assert g.wait() == pytest.approx(float(want.sum()), rel=1e-9)
        assert list(concurrent.futures.as_completed([f], timeout=30)) == [f]


def test_a_queued_one_can_be_cancelled(interop):
    interop(1)
    gate = threading.Event()
    started = threading.Event()

    def block():
        started.set()
        gate.wait(30)

    blocker = fw.fork(block)
    assert started.wait(30)
    a, b = pair(16)
    f = fw.fork(ops.matmul, a, b)
    assert f.cancel() and f.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        f.result()
    gate.set()
    blocker.wait()


def test_a_dropped_future_is_freed_with_later_forkwait_calls():
    a, b = pair(64)
    f = fw.fork(ops.matmul, a, b)
    ref = weakref.ref(f)
    del f

    def freed():
        fw.wait(fw.fork(abs, -1))
        gc.collect()
        return ref() is None

    assert until(freed)


def test_a_loop_that_only_forks_keeps_no_finished_task_alive(interop):
    # Workers complete GIL-free tasks without the GIL; their release (the
    # queue's reference, the result array) waits for a thread with the GIL.
    # fork() itself releases them: a loop that forks kernels and never
    # waits holds only the tasks in flight, not every finished one.
    interop(2)
    x = np.ones(10_000)
    n = 2000
    refs = []
    for _ in range(n):
        refs.append(weakref.ref(fw.fork(ops.exp, x)))
    alive_done = sum(1 for r in refs if (f := r()) is not None and f.done())
    assert alive_done < n // 4, f"{alive_done} of {n} finished tasks still alive"
    # none left running for the next test (it may count GIL-free runs)
    assert until(lambda: pool._stats()["queued"] == 0 and pool._stats()["running"] == 0)


def test_a_dropped_future_is_freed_by_the_idle_worker():
    # No forkwait call after the fork: the worker that ran it releases it
    # (with the GIL) before it sleeps.
    code = """
    import time, weakref, gc
    import numpy as np
    import forkwait as fw
    from forkwait import ops
    fw.set_num_interop_threads(1)
    a = np.ones((64, 64)); b = np.ones((64, 64))
    refs = []
    for _ in range(20):
        f = fw.fork(ops.matmul, a, b)
        refs.append(weakref.ref(f))
        del f
    end = time.monotonic() + 30
    while time.monotonic() < end and any(r() is not None for r in refs):
        time.sleep(0.01)
    print("alive", sum(r() is not None for r in refs))
    """
    proc = run_python(code, timeout=60)
    # a future the main thread ran itself is freed at once; the rest by the worker
    assert "alive 0" in proc.stdout, proc.stdout + proc.stderr


def test_the_forking_threads_intra_op_setting_travels(intra):
    intra(2)
    a, b = pair(256, np.float32, seed=3)
    with fw.num_threads(1):
        one = ops.matmul(a, b)
    two = ops.matmul(a, b)
    if np.array_equal(one, two):
        pytest.skip("1 and 2 threads give the same bits on this input and machine")
    with fw.num_threads(1):
        f = fw.fork(ops.matmul, a, b)
    # a worker runs it (a wait would run it here, at this thread's setting)
    assert until(f.done)
    np.testing.assert_array_equal(f.result(), one)


def test_a_profile_records_it_as_an_ordinary_task():
    a, b = pair(32)
    before = gil_free_count()
    with fw.profile() as prof:
        fw.wait(fw.fork(ops.matmul, a, b))
    assert gil_free_count() == before
    assert [t.name for t in prof.tasks] == ["matmul"]


def test_parallel_info_reports_them():
    fw.wait(fw.fork(ops.matmul, *pair(8)))
    assert "GIL-free" in fw.parallel_info()


UNARY = ["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu"]


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forked_unary_ops_run_gil_free_with_the_direct_calls_bits(name, dtype):
    fn = getattr(ops, name)
    x = np.random.default_rng(1).standard_normal((300, 70)).astype(dtype)
    if name in ("log", "sqrt"):
        x = np.abs(x) + dtype(0.5)
    want = fn(x)
    before = gil_free_count()
    got = fw.wait(fw.fork(fn, x))
    out = np.empty_like(x)
    assert fw.wait(fw.fork(fn, x, out=out)) is out
    inplace = x.copy()
    assert fw.wait(fw.fork(fn, inplace, inplace)) is inplace  # in place: allowed
    assert gil_free_count() == before + 3
    for r in (got, out, inplace):
        assert r.dtype == dtype
        np.testing.assert_array_equal(r, want)


def test_forked_unary_ops_outside_the_fast_case_stay_ordinary_and_right():
    x = np.linspace(-3, 3, 50)
    before = gil_free_count()
    np.testing.assert_allclose(fw.wait(fw.fork(ops.exp, x.tolist())), np.exp(x))
    np.testing.assert_allclose(fw.wait(fw.fork(ops.tanh, x[::2])), np.tanh(x[::2]))
    np.testing.assert_array_equal(fw.wait(fw.fork(ops.neg, np.arange(4))), -np.arange(4))
    np.testing.assert_allclose(fw.wait(fw.fork(ops.exp, x.astype(">f8"))), np.exp(x))
    overlapping = x.copy()
    np.testing.assert_allclose(
        fw.wait(fw.fork(ops.exp, overlapping[1:], out=overlapping[:-1])), np.exp(x[1:]))
    assert gil_free_count() == before
    with pytest.raises(ValueError):
        fw.wait(fw.fork(ops.exp, x, out=np.empty(3)))
    with pytest.raises(TypeError):
        fw.wait(fw.fork(ops.exp, np.array(["a"])))


def test_a_worker_runs_one_gil_free_task_after_another_without_the_gil():
    # The forking thread keeps the GIL (a 30 s switch interval, a busy loop
    # that never blocks) and forks the next kernel when the last is done: a
    # worker that took the GIL between two GIL-free tasks (as the 0.2 pool
    # did) would wait for it for good after the first.
    code = """
    import sys, time
    import numpy as np
    import forkwait as fw
    from forkwait import ops
    fw.set_num_interop_threads(1)
    fw.set_num_threads(1)
    x = np.ones((32, 32))
    fw.wait(fw.fork(ops.matmul, x, x))
    sys.setswitchinterval(30.0)
    done = 0
    end = time.monotonic() + 10
    for _ in range(20):
        f = fw.fork(ops.matmul, x, x)
        while not f.done() and time.monotonic() < end:
            pass
        if not f.done():
            break
        done += 1
    sys.setswitchinterval(0.005)
    print("done", done)
    """
    proc = run_python(code, timeout=120)
    assert "done 20" in proc.stdout, proc.stdout + proc.stderr


def test_a_blocking_wait_hands_its_cpu_to_work_that_no_fork_woke_a_thread_for():
    # While GIL-free kernels on workers fill every CPU but the forking
    # thread's, the fork of another GIL-free task wakes no sleeping worker (it
    # could only take a CPU from a kernel); when the forking thread then
    # blocks in a wait, its CPU is free, and the wait wakes a worker for the
    # queued task: it runs while the kernel waited on still runs.
    code = """
    import os, time
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)
    import numpy as np
    import forkwait as fw
    from forkwait import ops
    n = len(cpus)
    fw.set_num_interop_threads(n + 1)
    fw.set_num_threads(1)
    big = np.ones((1500, 1500))
    busy = [fw.fork(ops.matmul, big, big) for _ in range(max(1, n - 1))]
    end = time.monotonic() + 30
    while time.monotonic() < end and not all(f.running() for f in busy):
        time.sleep(0.0005)
    assert all(f.running() for f in busy)
    seen = []
    t = fw.fork(ops.exp, np.ones(8))
    t.add_done_callback(lambda f: seen.append(busy[0].done()))
    fw.wait(busy[0])
    fw.wait(t)
    print("the kernel was done when the task ran:", seen)
    """
    proc = run_python(code, timeout=120)
    assert "the kernel was done when the task ran: [False]" in proc.stdout, (
        proc.stdout + proc.stderr)
