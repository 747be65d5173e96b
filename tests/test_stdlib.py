"""forkwait and the standard library (issue 10): concurrent.futures.wait and
as_completed, asyncio, fw.Executor, fw.scope, fw.as_completed/wait_any.

The stdlib-semantics tests run the same scenario with concurrent.futures'
own futures and with forkwait's, and expect the same outcome.
"""

import asyncio
import concurrent.futures as cf
import sys
import threading
import time

import pytest

import forkwait as fw

TIMEOUT = 30

if sys.version_info >= (3, 11):
    EG = ExceptionGroup  # noqa: F821
else:  # pragma: no cover
    from exceptiongroup import ExceptionGroup as EG


def _wait_running(fut):
    deadline = time.monotonic() + TIMEOUT
    while not (fut.running() or fut.done()):
        assert time.monotonic() < deadline, "task did not start"
        time.sleep(0.001)


@pytest.fixture
def gate():
    ev = threading.Event()
    yield ev
    ev.set()


def _blocked(gate, interop, n=1):
    """n pool threads blocked on `gate` (so new forks stay queued)."""
    interop(n)
    blockers = [fw.fork(gate.wait, TIMEOUT) for _ in range(n)]
    for b in blockers:
        _wait_running(b)
    return blockers


# ------------------------------------------------------------ concurrent.futures.wait


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
    _blocked(gate, interop)
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
    _blocked(gate, interop)
    mine = fw.fork(abs, -1)
    with pytest.raises(cf.TimeoutError):
        list(cf.as_completed([mine], timeout=0.05))
    gate.set()
    assert [f.result() for f in cf.as_completed([mine], timeout=TIMEOUT)] == [1]


def test_future_state_repr_and_invalid_state_follow_the_stdlib():
    f = fw.Future()
    assert "state=pending" in repr(f)
    assert f.set_running_or_notify_cancel() is True
    assert f.running() and "state=running" in repr(f)
    with pytest.raises(fw.InvalidStateError):
        f.set_running_or_notify_cancel()
    f.set_result(3)
    assert "state=finished returned int" in repr(f)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(4)
    with pytest.raises(RuntimeError):
        f.set_exception(ValueError())
    g = fw.Future()
    assert g.cancel() and g.set_running_or_notify_cancel() is False
    assert "state=cancelled" in repr(g)
    h = fw.Future()
    h.set_exception(KeyError("k"))
    assert "state=finished raised KeyError" in repr(h)
    h.exception()
    task = fw.fork(abs, -1)
    with pytest.raises(fw.InvalidStateError, match="forked task"):
        task.set_running_or_notify_cancel()
    task.result()


# ------------------------------------------------------------ asyncio


def test_asyncio_wrap_future_await_and_gather():
    async def main():
        a = await asyncio.wrap_future(fw.fork(sum, [1, 2]))
        b = await fw.fork(max, 4, 5)
        c = await asyncio.gather(fw.fork(abs, -6), asyncio.wrap_future(fw.fork(abs, -7)))
        return a, b, c

    assert asyncio.run(main()) == (3, 5, [6, 7])


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
    _blocked(gate, interop)
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


def test_run_in_executor_with_fw_executor_keeps_the_loop_running():
    ex = fw.Executor()

    async def main():
        ticks = 0
        fut = asyncio.get_running_loop().run_in_executor(ex, time.sleep, 0.1)
        while not fut.done():
            ticks += 1
            await asyncio.sleep(0.005)
        await fut
        return ticks

    assert asyncio.run(main()) > 1
    ex.shutdown()


# ------------------------------------------------------------ Executor


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
    _blocked(gate, interop)
    ex = fw.Executor()
    queued = [ex.submit(abs, -i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)


def test_executor_map_timeout_and_buffersize(gate, interop):
    _blocked(gate, interop)
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


# ------------------------------------------------------------ scope


def test_scope_waits_for_all_on_exit_including_forks_from_its_tasks():
    with fw.scope() as s:
        def parent(k):
            for _ in range(k):
                s.fork(time.sleep, 0.001)
            return k

        f = s.fork(parent, 5)
    assert f.result() == 5
    assert all(g.done() for g in s._futures) and len(s._futures) == 6
    with pytest.raises(RuntimeError, match="left"):
        s.fork(abs, 1)


def test_scope_failure_cancels_unstarted_and_raises_it(gate, interop):
    interop(1)

    def boom():
        raise KeyError("first")

    with pytest.raises(KeyError, match="first"):
        with fw.scope() as s:
            blocker = s.fork(gate.wait, TIMEOUT)
            _wait_running(blocker)
            bad = s.fork(boom)
            queued = [s.fork(abs, -i) for i in range(3)]
            bad.exception()  # runs it here (unstarted): the scope now cancels the rest
            gate.set()
    assert all(q.cancelled() for q in queued)
    assert blocker.result() is True  # a running task finishes


def test_scope_several_failures_raise_an_exception_group(interop):
    interop(3)
    together = threading.Barrier(3, timeout=TIMEOUT)

    def fail(i):
        together.wait()  # all three run before any fails
        raise ValueError(i)

    with pytest.raises(EG) as info:
        with fw.scope() as s:
            for i in range(3):
                s.fork(fail, i)
    assert sorted(e.args[0] for e in info.value.exceptions) == [0, 1, 2]


def test_scope_keyboard_interrupt_cancels_unstarted_and_reraises(gate, interop):
    _blocked(gate, interop)
    with pytest.raises(KeyboardInterrupt):
        with fw.scope() as s:
            queued = [s.fork(abs, -i) for i in range(3)]
            raise KeyboardInterrupt
    assert all(q.cancelled() for q in queued)


def test_scopes_nest_and_fork_from_inside_a_scope_task(interop):
    interop(1)

    def inner_sum(n):
        with fw.scope() as inner:
            parts = [inner.fork(abs, -i) for i in range(n)]
        return sum(p.result() for p in parts)

    with fw.scope() as outer:
        totals = [outer.fork(inner_sum, n) for n in range(5)]
    assert [t.result() for t in totals] == [0, 0, 1, 3, 6]


# ------------------------------------------------------------ fw.as_completed / wait_any


def test_fw_as_completed_matches_the_stdlib_order_and_duplicates():
    a, b, c = fw.Future(), fw.Future(), fw.Future()
    c.set_result("c")

    def later():
        time.sleep(0.02)
        b.set_result("b")
        time.sleep(0.02)
        a.set_result("a")

    threading.Thread(target=later).start()
    assert [f.result() for f in fw.as_completed([a, b, c, c])] == ["c", "b", "a"]


def test_fw_as_completed_timeout_raises_from_the_iteration():
    never = fw.Future()
    done = fw.Future()
    done.set_result(1)
    it = fw.as_completed([never, done], timeout=0.05)
    assert next(it) is done
    with pytest.raises(TimeoutError):
        next(it)


def test_fw_as_completed_inside_a_task_runs_its_queued_children(interop):
    interop(1)

    def parent():
        kids = [fw.fork(pow, 2, i) for i in range(8)]
        return sorted(f.result() for f in fw.as_completed(kids))

    assert fw.fork(parent).result(timeout=TIMEOUT) == [2**i for i in range(8)]


def test_fw_wait_any_returns_the_first_done_and_times_out():
    never = fw.Future()
    first = fw.Future()
    threading.Timer(0.02, lambda: first.set_exception(KeyError("k"))).start()
    got = fw.wait_any([never, first], timeout=TIMEOUT)
    assert got is first and isinstance(got.exception(), KeyError)
    with pytest.raises(TimeoutError):
        fw.wait_any([never], timeout=0.02)
    with pytest.raises(ValueError):
        fw.wait_any([])
    with pytest.raises(TypeError):
        fw.wait_any([cf.Future()])


def test_wait_and_wait_all_timeouts_leave_futures_running(gate, interop):
    blocker = _blocked(gate, interop)[0]
    with pytest.raises(TimeoutError):
        fw.wait(blocker, timeout=0.01)
    with pytest.raises(TimeoutError):
        fw.wait_all([blocker], timeout=0.01)
    assert blocker.running()
