"""The inter-op pool: no deadlock, real parallelism, thread safety, resizing,
and its life in the process (lazy start, exit, Ctrl-C, os.fork)."""

import asyncio
import os
import threading
import time

import numpy as np
import pytest
from conftest import run_python

import forkwait as fw

TIMEOUT = 30


def fib(n):
    if n < 2:
        return n
    a = fw.fork(fib, n - 1)
    b = fw.fork(fib, n - 2)
    return fw.wait(a) + fw.wait(b)


def tree(depth):
    """A binary fork tree; returns the number of leaves."""
    if depth == 0:
        return 1
    left = fw.fork(tree, depth - 1)
    right = fw.fork(tree, depth - 1)
    return fw.wait(right) + fw.wait(left)


@pytest.mark.parametrize("n_interop", [1, 2, 3])
def test_nested_fork_wait_never_deadlocks(interop, n_interop):
    interop(n_interop)
    assert fib(20) == 6765
    assert tree(12) == 4096
    # waiting from inside a task on a future forked by another task
    assert fw.wait(fw.fork(lambda: fw.wait_all([fw.fork(fib, k) for k in range(12)]))) == [
        0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89,
    ]


def test_deep_chain_of_waits(interop):
    interop(1)

    def chain(k):
        return 0 if k == 0 else 1 + fw.wait(fw.fork(chain, k - 1))

    assert chain(150) == 150


def test_two_forked_gil_releasing_calls_overlap(interop):
    """Timestamps recorded inside the tasks show they ran at the same time.

    The barrier also proves it: each task blocks (GIL released) until the
    other has arrived, which is only possible when both run at once.
    """
    interop(2)
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    a = np.random.default_rng(0).random((300, 300))

    def branch():
        start = time.perf_counter()
        barrier.wait()
        for _ in range(5):
            np.tanh(a)  # releases the GIL
        return start, time.perf_counter(), threading.get_ident()

    f1, f2 = fw.fork(branch), fw.fork(branch)
    (s1, e1, t1), (s2, e2, t2) = fw.wait(f1), fw.wait(f2)
    assert t1 != t2
    assert max(s1, s2) < min(e1, e2)  # the intervals overlap


def test_main_thread_runs_python_while_forked_numpy_runs():
    started = threading.Event()
    release = threading.Event()

    def long_call():
        started.set()
        release.wait(TIMEOUT)  # blocks without the GIL, like a long kernel
        return "ok"

    fut = fw.fork(long_call)
    assert started.wait(TIMEOUT)
    ticks = sum(1 for _ in range(10000))  # Python keeps running meanwhile
    assert ticks == 10000 and not fut.done()
    release.set()
    assert fw.wait(fut) == "ok"


def test_many_threads_fork_and_wait_at_once(interop):
    interop(2)
    errors = []
    results = {}

    def client(k):
        try:
            futs = [fw.fork(pow, k, i) for i in range(400)]
            got = fw.wait_all(futs)
            nested = fw.wait(fw.fork(fib, 10))
            results[k] = (got == [k**i for i in range(400)], nested == 55)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 4)
    assert not errors
    assert results == {k: (True, True) for k in range(8)}


def test_callbacks_run_exactly_once_under_concurrency(interop):
    interop(2)
    counts = [0] * 2000
    lock = threading.Lock()

    def bump(i):
        def cb(_):
            with lock:
                counts[i] += 1

        return cb

    futs = []
    for i in range(2000):
        f = fw.fork(abs, -i)
        f.add_done_callback(bump(i))
        futs.append(f)
    assert fw.wait_all(futs) == list(range(2000))
    for _ in range(TIMEOUT * 100):
        if sum(counts) == 2000:
            break
        time.sleep(0.01)
    assert counts == [1] * 2000


def _interop_threads():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("forkwait-interop-"))


def _until(pred):
    for _ in range(TIMEOUT * 100):
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_resize_after_work_started(interop):
    interop(2)
    fw.wait(fw.fork(abs, 1))
    interop(4)  # grows at once
    assert _until(lambda: len(_interop_threads()) == 4)
    assert _interop_threads() == [f"forkwait-interop-{i}" for i in range(4)]
    # shrinking lets a busy worker finish its task first
    gate = threading.Event()
    busy = [fw.fork(gate.wait, TIMEOUT) for _ in range(4)]
    assert _until(lambda: all(f.running() for f in busy))
    interop(1)
    assert fw.get_num_interop_threads() == 1
    assert not any(f.done() for f in busy)
    gate.set()
    assert fw.wait_all(busy) == [True] * 4
    assert _until(lambda: _interop_threads() == ["forkwait-interop-0"])
    assert fw.wait(fw.fork(fib, 12)) == 144


def test_shrink_then_grow_at_once_keeps_every_worker(interop):
    """A worker that is leaving after a shrink, when the pool grows back
    before it is gone, stays (the resize saw it alive and started none): the
    pool keeps its target's workers, not one short for good."""
    interop(2)
    fw.wait_all([fw.fork(abs, 1) for _ in range(4)])  # the pool runs
    assert _until(lambda: fw._native.pool._stats()["workers"] == 2)
    for i in range(200):
        interop(1)
        # hold the GIL a moment: worker 1 sees the shrink and, leaving, waits
        # for the GIL while this thread grows the pool back
        t_end = time.perf_counter() + 0.0005 * (1 + i % 4)
        while time.perf_counter() < t_end:
            pass
        interop(2)
        time.sleep(0.003)  # the GIL: a leaving worker would be gone now
        assert fw._native.pool._stats()["workers"] == 2, f"a worker lost in round {i}"
    assert _interop_threads() == ["forkwait-interop-0", "forkwait-interop-1"]


def test_concurrent_resizes_and_forks(interop):
    stop = threading.Event()

    def resizer():
        k = 0
        while not stop.is_set():
            fw.set_num_interop_threads(1 + k % 4)
            fw.set_num_threads(1 + k % 3)
            k += 1
            time.sleep(0.001)

    t = threading.Thread(target=resizer)
    t.start()
    try:
        for _ in range(20):
            assert fw.wait_all([fw.fork(fib, 8) for _ in range(20)]) == [21] * 20
    finally:
        stop.set()
        t.join()
        fw.set_num_threads(fw._threads.available_cpus())


def test_asyncio_await_does_not_block_event_loop():
    gate = threading.Event()

    async def main():
        fut = fw.fork(lambda: gate.wait(TIMEOUT) and "value")
        ticks = 0

        async def ticker():
            nonlocal ticks
            while not fut.done():
                ticks += 1
                if ticks == 5:
                    gate.set()  # only reachable while the loop keeps running
                await asyncio.sleep(0.001)

        tick_task = asyncio.ensure_future(ticker())
        value = await fut
        await tick_task
        return value, ticks

    value, ticks = asyncio.run(main())
    assert value == "value"
    assert ticks >= 5


def test_asyncio_await_raises_task_exception():
    async def main():
        return await fw.fork(int, "nope")

    with pytest.raises(ValueError):
        asyncio.run(main())


def test_asyncio_await_done_future():
    f = fw.Future()
    f.set_result(9)

    async def main():
        return await f

    assert asyncio.run(main()) == 9


# ---------------------------------------------------------------- process life


def test_pool_starts_lazily_with_named_threads():
    out = run_python(
        """
        import threading
        import forkwait as fw
        def names():
            return sorted(t.name for t in threading.enumerate() if t.name.startswith("forkwait"))
        print(names())
        fw.set_num_interop_threads(3)
        print(names())
        fw.wait(fw.fork(abs, 1))
        print(names())
        """
    ).stdout.splitlines()
    assert out[0] == "[]" and out[1] == "[]"
    assert out[2] == str([f"forkwait-interop-{i}" for i in range(3)])


def test_exit_with_queued_and_running_tasks_runs_them():
    """Documented: at interpreter exit the queued tasks still run (as with
    concurrent.futures); nothing hangs and no output is lost."""
    proc = run_python(
        """
        import time
        import forkwait as fw
        fw.set_num_interop_threads(1)
        def slow(i):
            time.sleep(0.05)
            print("task", i, flush=True)
        for i in range(6):
            fw.fork(slow, i)
        print("main done", flush=True)
        """,
        timeout=TIMEOUT,
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "main done"
    assert sorted(lines[1:]) == [f"task {i}" for i in range(6)]
    assert proc.stderr == ""


# fork after shutdown and Ctrl-C: tests/test_reliability.py


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_child_of_os_fork_has_a_working_pool():
    proc = run_python(
        """
        import os
        import forkwait as fw
        def fib(n):
            if n < 2:
                return n
            a, b = fw.fork(fib, n - 1), fw.fork(fib, n - 2)
            return fw.wait(a) + fw.wait(b)
        print("parent", fib(12), flush=True)
        pid = os.fork()
        if pid == 0:
            values = fw.wait_all([fw.fork(abs, -i) for i in range(50)])
            ok = fib(12) == 144 and values == list(range(50))
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        """,
        timeout=TIMEOUT,
    )
    assert proc.stdout.split() == ["parent", "144", "child", "exit", "0"]
