"""fork/wait semantics: never inline, values, exceptions, waiting runs work."""

import gc
import logging
import sys
import threading
import time
import traceback
import weakref
from concurrent.futures import CancelledError, InvalidStateError

import pytest

import forkwait as fw

TIMEOUT = 30  # seconds for an Event that must be set; a hang fails the test


def test_fork_returns_future_and_wait_returns_value():
    fut = fw.fork(divmod, 17, 5)
    assert isinstance(fut, fw.Future)
    assert fw.wait(fut) == (3, 2)
    assert fut.wait() == (3, 2)
    assert fut.value() == (3, 2)
    assert fut.result() == (3, 2)
    assert fut.done() and not fut.running() and not fut.cancelled()


def test_fork_passes_args_and_kwargs():
    def f(a, b=0, *, c):
        return (a, b, c)

    assert fw.wait(fw.fork(f, 1, c=3)) == (1, 0, 3)
    assert fw.wait(fw.fork(f, 1, 2, c=3)) == (1, 2, 3)


@pytest.mark.parametrize(
    "args",
    [(), (None,), (None, None), (1, None), (1, 2), (1, 2, 3), (None, None, None, None)],
)
def test_fork_passes_any_number_of_positional_arguments(args):
    # up to two without keywords are kept in the future itself, more in a tuple:
    # the call gets them the same way, None included
    assert fw.wait(fw.fork(lambda *a: a, *args)) == args
    assert fw.wait(fw.fork(lambda *a, **k: (a, k), *args, k=1)) == (args, {"k": 1})


@pytest.mark.parametrize("nargs", [1, 2, 3])
def test_a_finished_task_lets_go_of_its_arguments(nargs):
    class Arg:
        pass

    arg = Arg()
    ref = weakref.ref(arg)
    fut = fw.fork(lambda *a: len(a), *([arg] * nargs))
    assert fut.wait() == nargs
    del arg
    gc.collect()
    assert ref() is None  # the future lives on; the call's arguments do not
    assert fut.result() == nargs


def test_wait_takes_its_arguments_by_position_or_keyword():
    assert fw.wait(fw.fork(abs, -1), 10) == 1
    assert fw.wait(fw.fork(abs, -2), timeout=10) == 2
    assert fw.wait(fut=fw.fork(abs, -3)) == 3
    assert fw.wait(timeout=None, fut=fw.fork(abs, -4)) == 4
    f = fw.fork(abs, -5)
    for call, message in [
        (lambda: fw.wait(), "missing required argument 'fut'"),
        (lambda: fw.wait(f, 1, 2), "from 1 to 2 positional arguments but 3"),
        (lambda: fw.wait(f, tmo=1), "unexpected keyword argument 'tmo'"),
        (lambda: fw.wait(f, fut=f), "multiple values for argument 'fut'"),
        (lambda: fw.wait(f, 1, timeout=1), "multiple values for argument 'timeout'"),
        (lambda: fw.wait(42), "needs a forkwait.Future, got int"),
        (lambda: fw.wait(f, "soon"), "timeout must be a number of seconds or None, got str"),
    ]:
        with pytest.raises(TypeError, match=message):
            call()
    assert fw.wait(f) == 5


@pytest.mark.parametrize("bad", [None, 42, "fn", [len]])
def test_fork_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="callable"):
        fw.fork(bad)


def test_fork_never_runs_inline():
    """The call runs on a pool thread, even when nobody waits on it."""
    caller = threading.get_ident()
    started = threading.Event()
    release = threading.Event()
    seen = {}

    def task():
        seen["thread"] = threading.current_thread().name
        seen["ident"] = threading.get_ident()
        started.set()
        assert release.wait(TIMEOUT)
        return "done"

    fut = fw.fork(task)
    # fork returned although the task blocks until `release`: it was not run inline.
    assert started.wait(TIMEOUT)
    assert seen["ident"] != caller
    assert seen["thread"].startswith("forkwait-interop-")
    assert not fut.done() and fut.running()
    release.set()
    assert fw.wait(fut) == "done"


def test_wait_on_unstarted_future_runs_it_in_waiting_thread(interop):
    interop(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, TIMEOUT)  # occupies the only worker
    _wait_running(blocker)
    fut = fw.fork(threading.get_ident)
    assert not fut.running() and not fut.done()
    assert fw.wait(fut) == threading.get_ident()
    gate.set()
    assert fw.wait(blocker) is True


def test_wait_on_running_future_runs_its_subtree(interop):
    """Help-while-waiting: the only worker runs a task that blocks until its
    own child has run; the child is queued behind it. The waiter runs the
    child (it belongs to the subtree of the future waited on)."""
    interop(1)
    event = threading.Event()
    ran_in = []

    def child():
        ran_in.append(threading.get_ident())
        event.set()

    def parent():
        fw.fork(child)
        assert event.wait(TIMEOUT)
        return "released"

    running = fw.fork(parent)
    _wait_running(running)
    assert fw.wait(running) == "released"
    assert ran_in == [threading.get_ident()]


def _wait_running(fut):
    for _ in range(TIMEOUT * 1000):
        if fut.running() or fut.done():
            return
        time.sleep(0.001)
    raise AssertionError("task did not start")


# ---------------------------------------------------------------- exceptions


class Boom(Exception):
    pass


def _raise_it(exc):
    raise exc


def test_wait_reraises_same_exception_with_task_frames():
    err = Boom("bad")
    fut = fw.fork(_raise_it, err)
    with pytest.raises(Boom) as info:
        fw.wait(fut)
    assert info.value is err
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "_raise_it" in frames
    for getter in (fut.value, fut.result, fut.wait):
        with pytest.raises(Boom) as again:
            getter()
        assert again.value is err
    assert fut.exception() is err


def test_callbacks_of_a_failed_task_run_outside_its_exception():
    """As concurrent.futures' set_exception: the task's exception is the
    future's outcome, not the exception being handled while callbacks run."""
    seen = []
    gate = threading.Event()

    def fails():
        gate.wait(5)
        raise Boom("late")

    fut = fw.fork(fails)
    fut.add_done_callback(lambda f: seen.append(sys.exc_info()[1]))
    gate.set()
    with pytest.raises(Boom):
        fw.wait(fut)
    assert seen == [None]


def test_wait_all_raises_first_failure_in_order():
    futs = [fw.fork(int, "1"), fw.fork(int, "x"), fw.fork(_raise_it, Boom())]
    with pytest.raises(ValueError):
        fw.wait_all(futs)
    # retrieved, so that its report cannot land in a later test's log
    assert isinstance(futs[2].exception(timeout=TIMEOUT), Boom)


def test_base_exception_reaches_waiter_and_worker_survives(interop):
    interop(1)
    fut = fw.fork(_raise_it, SystemExit(3))
    with pytest.raises(SystemExit):
        fw.wait(fut)
    gate = threading.Event()
    # the worker is still alive: it runs the next task (not run inline here)
    fut2 = fw.fork(gate.set)
    assert gate.wait(TIMEOUT)
    fw.wait(fut2)


def test_unretrieved_exception_is_logged_once(caplog):
    gc.collect()
    err = Boom("lost")
    fut = fw.fork(_raise_it, err)
    _wait_done_quietly(fut)
    ref = weakref.ref(fut)
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        del fut
        # the worker drops its own reference just after finishing the future
        _until(lambda: gc.collect() is not None and ref() is None)
    records = [r for r in caplog.records if r.exc_info and r.exc_info[1] is err]
    assert len(records) == 1
    assert "nobody retrieved" in records[0].getMessage()


def test_retrieved_exception_is_not_logged(caplog):
    fut = fw.fork(_raise_it, Boom("seen"))
    with pytest.raises(Boom):
        fut.wait()
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        del fut
        gc.collect()
    assert not [r for r in caplog.records if r.name == "forkwait"]


def test_unretrieved_failure_in_a_reference_cycle_is_logged(caplog):
    # A failed future that only a cycle keeps alive (here the future holds
    # itself) dies in the cyclic GC: the report still comes, once, with the
    # exception intact (its message and its traceback's frames).
    gc.collect()
    err = Boom("cycle")
    fut = fw.fork(_raise_it, err)
    _wait_done_quietly(fut)
    fut.myself = fut
    ref = weakref.ref(fut)
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        del fut, err
        _until(lambda: gc.collect() is not None and ref() is None)
        _until(lambda: [r for r in caplog.records if r.exc_info] or None)
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1
    assert str(records[0].exc_info[1]) == "cycle"
    assert records[0].exc_info[2] is not None


@pytest.mark.parametrize("retrieve", ["exception", "result", "wait_all"])
def test_failure_retrieved_any_way_is_not_logged(caplog, retrieve):
    gc.collect()
    fut = fw.Future()
    fut.set_exception(Boom("manual"))
    if retrieve == "exception":
        assert isinstance(fut.exception(), Boom)
    elif retrieve == "result":
        with pytest.raises(Boom):
            fut.result()
    else:
        with pytest.raises(Boom):
            fw.wait_all([fut])
    ref = weakref.ref(fut)
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        del fut
        gc.collect()
        fw._native.pool._flush_unretrieved()
    assert ref() is None
    assert not [r for r in caplog.records if r.name == "forkwait"]


def test_unretrieved_manual_failure_is_logged(caplog):
    gc.collect()
    fut = fw.Future()
    fut.set_exception(Boom("manual, lost"))
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        del fut
        gc.collect()
        fw._native.pool._flush_unretrieved()
    assert [r for r in caplog.records if r.exc_info and str(r.exc_info[1]) == "manual, lost"]


def _wait_done_quietly(fut):
    for _ in range(TIMEOUT * 1000):
        if fut.done():
            return
        time.sleep(0.001)
    raise AssertionError("task did not finish")


# ---------------------------------------------------------------- futures by hand


def test_manual_future_set_result_and_exception():
    f = fw.Future()
    assert not f.done()
    with pytest.raises(InvalidStateError, match="wait"):
        f.value()
    f.set_result([1])
    assert f.wait() == [1]
    g = fw.Future()
    g.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        g.wait()
    h = fw.Future()
    h.set_exception(ValueError)  # a class is instantiated
    assert isinstance(h.exception(), ValueError)
    with pytest.raises(TypeError, match="exception"):
        fw.Future().set_exception("not an exception")


def test_completing_twice_raises():
    f = fw.Future()
    f.set_result(1)
    with pytest.raises(InvalidStateError, match="already finished"):
        f.set_result(2)
    with pytest.raises(InvalidStateError, match="already finished"):
        f.set_exception(Boom())
    assert f.value() == 1


def test_task_future_cannot_be_completed_by_hand():
    fut = fw.fork(abs, -1)
    with pytest.raises(InvalidStateError, match="forked task"):
        fut.set_result(5)
    assert fw.wait(fut) == 1


def test_manual_future_is_completed_from_another_thread():
    f = fw.Future()
    t = threading.Thread(target=lambda: (time.sleep(0.05), f.set_result("x")))
    t.start()
    assert f.wait() == "x"
    t.join()


def test_result_timeout():
    f = fw.Future()
    with pytest.raises(TimeoutError):
        f.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        f.exception(timeout=0)
    with pytest.raises(ValueError, match="nan"):
        f.result(timeout=float("nan"))
    f.set_result(3)
    assert f.result(timeout=0) == 3


# ---------------------------------------------------------------- cancellation


def test_cancel_queued_task(interop):
    interop(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, TIMEOUT)
    _wait_running(blocker)
    ran = []
    queued = fw.fork(ran.append, 1)
    assert queued.cancel() is True
    assert queued.cancelled() and queued.done()
    assert queued.cancel() is True
    with pytest.raises(CancelledError):
        fw.wait(queued)
    with pytest.raises(CancelledError):
        queued.exception()
    gate.set()
    fw.wait(blocker)
    fw.wait(fw.fork(abs, 0))  # the queue moved past the cancelled task
    assert ran == []


def test_cannot_cancel_running_or_finished(interop):
    interop(1)
    gate = threading.Event()
    running = fw.fork(gate.wait, TIMEOUT)
    _wait_running(running)
    assert running.cancel() is False
    assert not running.cancelled()
    gate.set()
    assert fw.wait(running) is True
    assert running.cancel() is False


# ---------------------------------------------------------------- callbacks


def test_add_done_callback_runs_once_in_completing_thread():
    calls = []
    gate = threading.Event()
    fut = fw.fork(gate.wait, TIMEOUT)
    fut.add_done_callback(lambda f: calls.append((f, threading.current_thread().name)))
    gate.set()
    fw.wait(fut)
    _until(lambda: calls)
    assert len(calls) == 1
    assert calls[0][0] is fut
    assert calls[0][1].startswith("forkwait-interop-") or calls[0][1] == "MainThread"
    # already done: runs at once, in the calling thread
    fut.add_done_callback(lambda f: calls.append((f, threading.current_thread().name)))
    assert calls[1] == (fut, threading.current_thread().name)


def test_callbacks_on_manual_future_run_in_setting_thread():
    where = []
    f = fw.Future()
    for _ in range(3):
        f.add_done_callback(lambda fut: where.append(threading.get_ident()))
    t = threading.Thread(target=f.set_result, args=(1,))
    t.start()
    t.join()
    assert where == [t.ident] * 3


def test_callback_exception_is_logged_and_worker_survives(caplog, interop):
    interop(1)
    gate = threading.Event()
    fut = fw.fork(gate.wait, TIMEOUT)

    def bad(_):
        raise RuntimeError("callback broke")

    fut.add_done_callback(bad)
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        gate.set()
        assert fw.wait(fut) is True
        _until(lambda: caplog.records)
    assert any("callback" in r.getMessage() for r in caplog.records)
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
    # the worker still runs tasks
    done = threading.Event()
    fw.fork(done.set)
    assert done.wait(TIMEOUT)


def test_add_done_callback_rejects_non_callable():
    with pytest.raises(TypeError, match="callable"):
        fw.Future().add_done_callback(3)
    with pytest.raises(TypeError, match="callable"):
        fw.Future().then("x")


def test_then_chains_values_and_errors():
    fut = fw.fork(pow, 2, 5)
    assert fut.then(lambda f: f.value() + 1).then(lambda f: f.value() * 2).wait() == 66

    def fail(_):
        raise Boom("in then")

    chained = fw.fork(abs, -1).then(fail)
    with pytest.raises(Boom, match="in then"):
        chained.wait()
    # the callback sees the parent's failure through value()
    parent = fw.fork(_raise_it, Boom("parent"))
    seen = parent.then(lambda f: type(f.exception()).__name__)
    assert seen.wait() == "Boom"


def _until(pred):
    for _ in range(TIMEOUT * 1000):
        if pred():
            return
        time.sleep(0.001)
    raise AssertionError("condition not reached")


# ---------------------------------------------------------------- collect_all / wait_all


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
    futs = [fw.fork(abs, -1), fw.fork(_raise_it, err)]
    with pytest.raises(Boom) as info:
        fw.collect_all(futs).wait()
    assert info.value is err


@pytest.mark.parametrize("fn", [fw.wait_all, fw.collect_all])
def test_collect_rejects_non_futures(fn):
    with pytest.raises(TypeError, match="item 1"):
        fn([fw.Future(), 3])
    with pytest.raises(TypeError, match="iterable"):
        fn(5)


def test_wait_rejects_non_future():
    with pytest.raises(TypeError, match="Future"):
        fw.wait(42)


def test_future_is_generic():
    assert fw.Future[int] is not None
    assert "forkwait.Future" in repr(fw.Future())
