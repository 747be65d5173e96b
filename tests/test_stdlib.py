"""forkwait futures where the standard library's go (DESIGN.md rule 8):
concurrent.futures.wait and as_completed (the same scenario with
concurrent.futures' own futures and with forkwait's gives the same outcome),
the concurrent.futures types, and asyncio (await, wrap_future, gather,
cancellation, an event loop that keeps running).

fw.Executor: test_executor.py. fw.as_completed/fw.wait_any: test_wait_many.py.
"""

import asyncio
import concurrent.futures as cf
import threading
import time

import pytest
from _pool_helpers import TIMEOUT, blocked

import forkwait as fw

# -- concurrent.futures ----------------------------------------------------------------


def _failed(kind):
    f = kind()
    if kind is fw.Future:
        f.set_exception(ValueError("x"))
    else:
        f.set_running_or_notify_cancel()
        f.set_exception(ValueError("x"))
    return f


def _finished(kind, value=1):
    f = kind()
    if kind is not fw.Future:
        f.set_running_or_notify_cancel()
    f.set_result(value)
    return f


@pytest.mark.parametrize("kind", [cf.Future, fw.Future], ids=["stdlib", "forkwait"])
@pytest.mark.parametrize("return_when", [cf.FIRST_COMPLETED, cf.FIRST_EXCEPTION, cf.ALL_COMPLETED])
def test_concurrent_futures_wait_same_outcome_as_for_stdlib_futures(kind, return_when):
    done_one = _finished(kind)
    failed = _failed(kind)
    pending = kind()
    later = kind()
    if kind is not fw.Future:
        later.set_running_or_notify_cancel()
    threading.Timer(0.05, lambda: later.set_result(2)).start()
    d, nd = cf.wait([done_one, pending, later], timeout=0.5, return_when=return_when)
    if return_when == cf.FIRST_COMPLETED:
        assert done_one in d and pending in nd
    else:
        assert d == {done_one, later} and nd == {pending}
    d, nd = cf.wait([failed, pending], timeout=0.05, return_when=return_when)
    assert failed in d and pending in nd
    d, nd = cf.wait([done_one, failed], return_when=return_when)
    assert d == {done_one, failed} and not nd


def test_concurrent_futures_wait_and_as_completed_mix_forkwait_and_stdlib(gate, interop):
    blocked(gate, interop)
    mine = fw.fork(sum, [1, 2])  # queued behind the blocker
    theirs = cf.Future()
    threading.Timer(0.05, lambda: (theirs.set_running_or_notify_cancel(),
                                   theirs.set_result(9))).start()
    d, nd = cf.wait([mine, theirs], timeout=0.5, return_when=cf.FIRST_COMPLETED)
    assert theirs in d and mine in nd
    threading.Timer(0.05, gate.set).start()
    got = [f.result() for f in cf.as_completed([mine, theirs], timeout=TIMEOUT)]
    assert sorted(got) == [3, 9]


def test_concurrent_futures_as_completed_timeout(gate, interop):
    blocked(gate, interop)
    mine = fw.fork(abs, -1)
    with pytest.raises(cf.TimeoutError):
        list(cf.as_completed([mine], timeout=0.05))
    gate.set()
    assert [f.result() for f in cf.as_completed([mine], timeout=TIMEOUT)] == [1]


@pytest.mark.parametrize("kind", ["task", "gil_free", "manual"])
def test_state_under_the_condition_changes_only_with_the_notification(kind, interop):
    """concurrent.futures.wait reads `_state` twice under `_condition` and
    counts on every change of it to come with a notification of its waiter:
    a future that completes while a reader holds the condition shows its
    final state only once the reader lets go, with the notification (as the
    standard Future does). Before, the state showed at once and the
    notification came later: cf.wait then hung or returned early."""
    import numpy as np

    interop(1)
    gate = threading.Event()
    x = np.ones(1 << 22)
    if kind == "task":
        f = fw.fork(gate.wait, TIMEOUT)
    elif kind == "gil_free":
        blocker = fw.fork(gate.wait, TIMEOUT)  # the one worker is busy until the gate
        f = fw.fork(fw.ops.exp, x)               # queued: runs when the gate opens
    else:
        f = fw.Future()

    class Waiter:  # what cf.wait installs: counts its notifications
        def __init__(self):
            self.calls = []

        def add_result(self, fut):
            self.calls.append("result")

        add_exception = add_cancelled = add_result

    w = Waiter()
    with f._condition:
        first = f._state
        f._waiters.append(w)
        if kind == "manual":
            threading.Thread(target=f.set_result, args=(1,)).start()
        else:
            gate.set()
        deadline = time.monotonic() + TIMEOUT
        while not f.done():  # the future's own state is final...
            assert time.monotonic() < deadline
            time.sleep(0.001)
        second = f._state    # ...but not as the holder of the condition sees it
        assert w.calls == []
    # (pending or running: the standard library tells only done from not done)
    assert first in ("PENDING", "RUNNING") and second in ("PENDING", "RUNNING")
    deadline = time.monotonic() + TIMEOUT
    while f._state != "FINISHED" or not w.calls:
        assert time.monotonic() < deadline, (f._state, w.calls)
        time.sleep(0.001)
    assert w.calls == ["result"]
    if kind == "gil_free":
        blocker.result(TIMEOUT)


def test_future_is_a_concurrent_futures_future_and_invalid_state_is_both():
    import concurrent.futures as cf

    f = fw.fork(abs, -1)
    assert isinstance(f, cf.Future)
    assert fw.wait(f) == 1
    assert issubclass(fw.InvalidStateError, cf.InvalidStateError)
    assert issubclass(fw.InvalidStateError, RuntimeError)
    with pytest.raises(RuntimeError):
        g = fw.Future()
        g.set_result(1)
        g.set_result(2)


# -- asyncio ---------------------------------------------------------------------------


def test_asyncio_wrap_future_await_and_gather():
    async def main():
        a = await asyncio.wrap_future(fw.fork(sum, [1, 2]))
        b = await fw.fork(max, 4, 5)
        c = await asyncio.gather(fw.fork(abs, -6), asyncio.wrap_future(fw.fork(abs, -7)))
        return a, b, c

    assert asyncio.run(main()) == (3, 5, [6, 7])


def test_asyncio_await_and_wrap_future():
    async def main():
        a = await fw.fork(sum, [1, 2])
        b = await asyncio.wrap_future(fw.fork(sum, [3, 4]))
        return a, b

    assert asyncio.run(main()) == (3, 7)


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


def test_await_of_a_cancelled_future_raises_asyncio_cancelled_error():
    f = fw.Future()
    f.cancel()

    async def main():
        await f

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_await_raises_the_tasks_exception():
    async def main():
        await fw.fork(int, "x")

    with pytest.raises(ValueError):
        asyncio.run(main())


def test_cancelling_the_awaiter_cancels_a_queued_future(gate, interop):
    blocked(gate, interop)
    queued = fw.fork(abs, -1)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(queued), 0.05)
        task = asyncio.ensure_future(_await(queued2))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def _await(f):
        return await f

    queued2 = fw.fork(abs, -2)
    asyncio.run(main())
    assert queued.cancelled() and queued2.cancelled()
