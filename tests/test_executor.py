"""fw.Executor: a concurrent.futures.Executor over the one pool (code written
for ThreadPoolExecutor runs unchanged), shutdown of one executor waits only
for its own futures, map's timeout and buffersize, submit from inside a task,
and asyncio's run_in_executor.
"""

import asyncio
import concurrent.futures as cf
import threading
import time

import pytest
from _pool_helpers import TIMEOUT, blocked

import forkwait as fw


def test_executor_is_a_concurrent_futures_executor_and_ports_thread_pool_code():
    def program(executor_cls):
        with executor_cls(max_workers=2) as ex:
            futs = [ex.submit(pow, 2, i) for i in range(6)]
            done = sorted(f.result() for f in cf.as_completed(futs))
            mapped = list(ex.map(lambda a, b: a * b, range(4), range(4)))
        return done, mapped

    assert issubclass(fw.Executor, cf.Executor)
    assert program(fw.Executor) == program(cf.ThreadPoolExecutor)


def test_executor_submit_after_shutdown_and_bad_arguments():
    ex = fw.Executor()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)
    with pytest.raises(ValueError, match="max_workers"):
        fw.Executor(max_workers=0)
    with pytest.raises(TypeError, match="initializer"):
        fw.Executor(initializer=print)
    with pytest.raises(TypeError, match="callable"):
        fw.Executor().submit(42)
    with pytest.raises(ValueError, match="buffersize"):
        fw.Executor().map(abs, [1], buffersize=0)


def test_executors_share_the_pool_and_shutdown_waits_only_for_its_own(gate, interop):
    interop(2)
    a, b = fw.Executor(), fw.Executor()
    slow = b.submit(gate.wait, TIMEOUT)
    quick = a.submit(time.sleep, 0.05)
    a.shutdown(wait=True)
    assert quick.done() and not slow.done()
    gate.set()
    b.shutdown(wait=True)
    assert slow.result() is True


def test_executor_shutdown_cancel_futures_cancels_only_unstarted(gate, interop):
    blocked(gate, interop)
    ex = fw.Executor()
    queued = [ex.submit(abs, -i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)


def test_executor_map_timeout_and_buffersize(gate, interop):
    blocked(gate, interop)
    ex = fw.Executor()
    it = ex.map(abs, [-1, -2], timeout=0.05)
    # The calls are queued behind the blocker; the waiting thread would run
    # them, so block that too: take the result in another thread.
    out = {}

    def consume():
        try:
            out["v"] = list(it)
        except BaseException as e:
            out["e"] = e

    t = threading.Thread(target=consume)
    t.start()
    t.join(TIMEOUT)
    assert out.get("v") == [1, 2] or isinstance(out.get("e"), TimeoutError)
    gate.set()
    submitted = []
    real_submit = ex.submit

    def counting(fn, *args):
        submitted.append(args)
        return real_submit(fn, *args)

    ex.submit = counting
    results = ex.map(abs, range(-10, 0), buffersize=3)
    assert len(submitted) == 3
    assert list(results) == list(range(10, 0, -1))
    ex.shutdown()


def test_executor_submit_from_inside_a_task_with_one_thread(interop):
    interop(1)
    ex = fw.Executor()

    def outer():
        inner = [ex.submit(pow, 3, i) for i in range(4)]
        return [f.result(timeout=TIMEOUT) for f in inner]  # helps: no deadlock

    assert ex.submit(outer).result(timeout=TIMEOUT) == [1, 3, 9, 27]
    ex.shutdown()


def test_run_in_executor_with_fw_executor_keeps_the_loop_running(gate):
    ex = fw.Executor()

    async def main():
        ticks = 0
        fut = asyncio.get_running_loop().run_in_executor(ex, gate.wait, TIMEOUT)
        while not fut.done():
            ticks += 1
            if ticks == 5:
                gate.set()  # only reachable while the loop keeps running
            await asyncio.sleep(0.001)
        return await fut, ticks

    released, ticks = asyncio.run(main())
    assert released is True and ticks >= 5
    ex.shutdown()
