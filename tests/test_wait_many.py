"""Waiting on many futures: wait_all and collect_all (as torch.futures: the
values in order, the first failure in order, fail-fast), fw.as_completed and
fw.wait_any (the standard library's shapes over forkwait futures).

concurrent.futures.wait/as_completed on forkwait futures: test_stdlib.py.
"""

import concurrent.futures as cf
import gc
import threading
import time
import weakref

import pytest
from _pool_helpers import TIMEOUT, Boom, blocked, raise_it, until, wait_running

import forkwait as fw

# -- wait_all / collect_all ------------------------------------------------------------


def test_collect_all_and_wait_all():
    futs = [fw.fork(pow, 2, i) for i in range(20)]
    collected = fw.collect_all(futs)
    assert isinstance(collected, fw.Future)
    out = collected.wait()
    assert out == futs
    assert [f.value() for f in out] == [2**i for i in range(20)]
    assert fw.wait_all(futs) == [2**i for i in range(20)]
    assert fw.wait_all([]) == []
    assert fw.collect_all([]).wait() == []
    assert fw.wait_all(f for f in [fw.fork(abs, -2)]) == [2]


def test_wait_all_runs_queued_members_in_order_and_stops_at_the_first_failure(interop):
    # every pool thread busy: the waiter runs the members itself, in order,
    # and the first to fail (in time, so in order here) ends the wait
    gate = threading.Event()
    blocked(gate, interop)
    futs = [fw.fork(int, "1"), fw.fork(int, "x"), fw.fork(raise_it, Boom())]
    with pytest.raises(ValueError):
        fw.wait_all(futs)
    assert not futs[2].done()  # never started: the wait ended first
    # (futs[0] ran in the waiter before futs[1], or, when a worker being
    # retired by the resize still counted as idle, was left queued for it:
    # a wait that may end early leaves a queued member to an idle worker)
    gate.set()
    assert futs[0].result(timeout=TIMEOUT) == 1
    # retrieved, so that its report cannot land in a later test's log
    assert isinstance(futs[2].exception(timeout=TIMEOUT), Boom)


def test_wait_all_raises_the_first_failure_in_time(interop):
    # idle pool threads take members too: whichever fails first ends it
    interop(2)
    order = []
    futs = [fw.fork(int, "1"), fw.fork(int, "x"), fw.fork(raise_it, Boom())]
    for f in futs:
        f.add_done_callback(lambda f: order.append(f))
    with pytest.raises((ValueError, Boom)) as info:
        fw.wait_all(futs)
    for f in futs:
        f.exception(timeout=TIMEOUT)  # retrieved (no report in a later test's log)
    first_failed = next(f for f in order if f.exception() is not None)
    assert info.value is first_failed.exception()


def test_wait_all_fails_fast_at_the_first_failure_in_time(interop):
    interop(2)
    gate = threading.Event()
    slow = fw.fork(gate.wait, TIMEOUT)
    wait_running(slow)

    def fail():
        raise KeyError("second")

    bad = fw.fork(fail)
    with pytest.raises(KeyError, match="second"):
        fw.wait_all([slow, bad])
    assert slow.running()  # not waited for
    gate.set()
    assert fw.wait(slow) is True


def test_wait_all_of_done_unstarted_running_and_hand_made_members_keeps_order(interop):
    interop(1)
    gate = threading.Event()
    running = fw.fork(gate.wait, TIMEOUT)  # the only worker runs it
    deadline = time.monotonic() + TIMEOUT
    while not running.running():
        assert time.monotonic() < deadline, "task did not start"
        time.sleep(0.001)
    done = fw.fork(abs, -7)
    fw.wait(done)
    queued = [fw.fork(pow, 3, i) for i in range(5)]  # run by this wait, in order
    manual = fw.Future()
    threading.Timer(0.05, manual.set_result, ("by hand",)).start()
    threading.Timer(0.1, gate.set).start()
    members = (done, queued[0], running, queued[1], manual, *queued[2:])
    assert fw.wait_all(members) == [7, 1, True, 3, "by hand", 9, 27, 81]


def test_wait_all_refuses_a_bad_member_before_running_any(interop):
    interop(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, TIMEOUT)  # the worker is busy: nothing else runs
    try:
        first = fw.fork(abs, -1)
        with pytest.raises(TypeError, match="item 2 is int"):
            fw.wait_all([first, fw.Future(), 5])
        assert not first.done() and not first.running()

        box = {}

        def waits_on_itself():
            box["child"] = fw.fork(abs, -2)
            try:
                return fw.wait_all([box["child"], box["me"]])
            finally:
                box["child_done_then"] = box["child"].done()

        box["me"] = fw.fork(waits_on_itself)
        with pytest.raises(RuntimeError, match="waits on itself"):
            fw.wait(box["me"])  # runs it here, where it waits on itself
        assert box["child_done_then"] is False
    finally:
        gate.set()
    assert fw.wait(blocker) is True and fw.wait(first) == 1 and fw.wait(box["child"]) == 2


def test_collect_all_fails_with_a_members_exception():
    err = Boom("member")
    futs = [fw.fork(abs, -1), fw.fork(raise_it, err)]
    with pytest.raises(Boom) as info:
        fw.collect_all(futs).wait()
    assert info.value is err


@pytest.mark.parametrize("fn", [fw.wait_all, fw.collect_all])
def test_collect_rejects_non_futures(fn):
    with pytest.raises(TypeError, match="item 1"):
        fn([fw.Future(), 3])
    with pytest.raises(TypeError, match="iterable"):
        fn(5)


# -- fw.as_completed / fw.wait_any -----------------------------------------------------


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


# -- waits that may end early leave long work to idle pool threads ----------------------


def _gate_opened_later():
    """An Event that opens by itself after a while: a wait that wrongly runs
    a member blocked on it inline ends then, instead of hanging the test."""
    gate = threading.Event()
    timer = threading.Timer(10, gate.set)
    timer.daemon = True
    timer.start()
    return gate, timer


def test_wait_all_fails_fast_while_a_member_it_could_have_run_still_runs(interop):
    """The waiter leaves the queued members to the idle pool threads: the
    failure ends the wait while the long member still runs (run inline, the
    long member kept the waiter from seeing the failure until it ended)."""
    interop(2)
    gate, timer = _gate_opened_later()

    def fail_soon():
        time.sleep(0.05)
        raise Boom()

    futs = [fw.fork(gate.wait, TIMEOUT), fw.fork(fail_soon)]
    try:
        with pytest.raises(Boom):
            fw.wait_all(futs)
        assert not futs[0].done(), "the wait ended only after the long member"
    finally:
        gate.set()
        timer.cancel()
    assert futs[0].result(timeout=TIMEOUT) is True


@pytest.mark.parametrize("how", ["wait_all", "result", "wait"])
def test_a_timed_wait_returns_at_its_deadline_while_idle_threads_run_the_task(interop, how):
    interop(2)
    gate, timer = _gate_opened_later()
    f = fw.fork(gate.wait, TIMEOUT)
    try:
        with pytest.raises(TimeoutError):
            if how == "wait_all":
                fw.wait_all([f], timeout=0.1)
            elif how == "result":
                f.result(timeout=0.1)
            else:
                fw.wait(f, timeout=0.1)
        assert not f.done(), "the timed wait ran the task itself, past its deadline"
    finally:
        gate.set()
        timer.cancel()
    assert f.result(timeout=TIMEOUT) is True


def test_a_timed_wait_still_runs_the_task_when_no_pool_thread_is_idle(interop):
    """Never a deadlock: with every pool thread busy, the waiter runs it."""
    gate = threading.Event()
    blockers = blocked(gate, interop)
    f = fw.fork(abs, -7)
    try:
        assert f.result(timeout=TIMEOUT) == 7
        assert fw.wait_all([fw.fork(abs, -1), fw.fork(abs, -2)], timeout=TIMEOUT) == [1, 2]
    finally:
        gate.set()
    for b in blockers:
        b.result(timeout=TIMEOUT)


def _callbacks_of(fut):
    """The done-callbacks a future holds (read through the GC: the pool keeps
    them in a C field)."""
    found = []
    for r in gc.get_referents(fut):
        if type(r) is list:
            found.extend(r)
        elif callable(r) and not isinstance(r, type):
            found.append(r)
    return found


def test_fw_wait_any_takes_its_callback_back_from_every_member():
    never = fw.Future()  # a long-lived member, e.g. a stop signal
    refs = []
    for _ in range(20):
        f = fw.fork(bytearray, 1000)
        assert fw.wait_any([never, f], timeout=TIMEOUT) is f
        refs.append(weakref.ref(f))
        del f
    # results are not kept alive (a pool thread may still be finishing the
    # last one's completion when wait_any returns: free within the timeout)
    assert until(lambda: gc.collect() is not None and not [r for r in refs if r() is not None])
    assert _callbacks_of(never) == []
    for _ in range(10_000):  # a polling loop does not grow the member
        with pytest.raises(TimeoutError):
            fw.wait_any([never], timeout=0)
    assert _callbacks_of(never) == []
    mine = print  # a caller's own callback stays
    never.add_done_callback(mine)
    with pytest.raises(TimeoutError):
        fw.wait_any([never], timeout=0)
    assert _callbacks_of(never) == [mine]


def test_fw_as_completed_takes_its_callback_back_when_the_iteration_ends():
    never = fw.Future()
    done = fw.Future()
    done.set_result(1)
    for _ in range(1000):  # timed out
        with pytest.raises(TimeoutError):
            next(fw.as_completed([never], timeout=0))
    assert _callbacks_of(never) == []
    it = fw.as_completed([done, never])  # closed early
    assert next(it) is done
    assert len(_callbacks_of(never)) == 1
    it.close()
    assert _callbacks_of(never) == []
    it = fw.as_completed([never, done])  # dropped without closing
    assert next(it) is done
    del it
    gc.collect()
    assert _callbacks_of(never) == []
    late = fw.Future()  # exhausted
    threading.Timer(0.02, late.set_result, (2,)).start()
    assert [f.result() for f in fw.as_completed([late, done], timeout=TIMEOUT)] == [1, 2]
    assert _callbacks_of(late) == []
