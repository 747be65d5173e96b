"""The Future object: futures made by hand (set_result, set_exception,
completing twice), states and repr, result(timeout), cancel, done-callbacks
(once each, in order, in which thread, a failing one logged) and then-chains
(iterative: longer than the recursion limit).

What a task's exception does: test_exceptions.py. A future's memory and the
cyclic GC: test_future_gc.py.
"""

import concurrent.futures as cf
import logging
import sys
import threading
import time
from concurrent.futures import CancelledError, InvalidStateError

import pytest
from _pool_helpers import TIMEOUT, Boom, raise_it, until, wait_running

import forkwait as fw

# -- futures by hand -------------------------------------------------------------------


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


# -- states and repr -------------------------------------------------------------------


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


def test_future_is_generic():
    assert fw.Future[int] is not None
    assert "forkwait.Future" in repr(fw.Future())


# -- cancellation ----------------------------------------------------------------------


def test_cancel_queued_task(interop):
    interop(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, TIMEOUT)
    wait_running(blocker)
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
    wait_running(running)
    assert running.cancel() is False
    assert not running.cancelled()
    gate.set()
    assert fw.wait(running) is True
    assert running.cancel() is False


# -- callbacks -------------------------------------------------------------------------


def test_add_done_callback_runs_once_in_completing_thread():
    calls = []
    gate = threading.Event()
    fut = fw.fork(gate.wait, TIMEOUT)
    fut.add_done_callback(lambda f: calls.append((f, threading.current_thread().name)))
    gate.set()
    fw.wait(fut)
    assert until(lambda: calls)
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
    # the callbacks run right after the state is final, on the completing
    # thread: a waiter may see the failure first (without a GIL it does)
    assert until(lambda: seen)
    assert seen == [None]


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
        assert until(lambda: caplog.records)
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


def test_callbacks_run_in_order_and_a_failing_one_does_not_stop_the_others(caplog):
    f = fw.Future()
    seen = []
    f.add_done_callback(lambda _: seen.append(1))
    f.add_done_callback(lambda _: 1 / 0)
    f.add_done_callback(lambda _: seen.append(3))
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        f.set_result(None)
    assert seen == [1, 3]
    assert any("ZeroDivisionError" in r.exc_text for r in caplog.records if r.exc_text)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_a_done_callback_reaches_the_completer(exc):
    f = fw.Future()
    seen = []

    def raiser(_):
        raise exc()

    f.add_done_callback(raiser)
    f.add_done_callback(lambda _: seen.append("ran"))
    with pytest.raises(exc):
        f.set_result(1)
    assert f.done() and seen == ["ran"]


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


# -- then ------------------------------------------------------------------------------


def test_then_chains_values_and_errors():
    fut = fw.fork(pow, 2, 5)
    assert fut.then(lambda f: f.value() + 1).then(lambda f: f.value() * 2).wait() == 66

    def fail(_):
        raise Boom("in then")

    chained = fw.fork(abs, -1).then(fail)
    with pytest.raises(Boom, match="in then"):
        chained.wait()
    # the callback sees the parent's failure through value()
    parent = fw.fork(raise_it, Boom("parent"))
    seen = parent.then(lambda f: type(f.exception()).__name__)
    assert seen.wait() == "Boom"


def test_then_chain_longer_than_the_recursion_limit_completes():
    """A 200,000-long chain (far beyond the recursion limit) completes
    every link, built before and after the head is done."""
    head = fw.Future()
    tail = head
    n = 200_000
    for _ in range(n):
        tail = tail.then(lambda f: f.value() + 1)
    head.set_result(0)
    assert tail.done() and tail.value() == n
    # Built on a finished future: each link completes at once.
    again = fw.Future()
    again.set_result(0)
    t = again
    for _ in range(5000):
        t = t.then(lambda f: f.value() + 1)
    assert t.value() == 5000


@pytest.mark.slow
def test_then_chain_of_a_million_completes():
    head = fw.Future()
    tail = head
    for _ in range(1_000_000):
        tail = tail.then(lambda f: f.value() + 1)
    head.set_result(0)
    assert tail.value() == 1_000_000


def test_a_future_cannot_be_pickled_and_says_so():
    import pickle

    for f in (fw.fork(abs, -1), fw.Future()):
        with pytest.raises(TypeError, match="cannot pickle a forkwait.Future"):
            pickle.dumps(f)
