"""A task's exception reaches its waiter (DESIGN.md rule 2): the same object,
with the task's frames; BaseException too (SystemExit, KeyboardInterrupt,
...), without ending the worker or the process; a failure that nobody
retrieves is logged once, at a safe point (never inside a finalizer), and one
that was retrieved is not.

An exception in a done-callback: test_future.py.
"""

import gc
import logging
import threading
import time
import traceback
import weakref

import pytest
from _child import run_python
from _pool_helpers import TIMEOUT, Boom, raise_it, until, wait_done

import forkwait as fw

# -- the waiter gets it ----------------------------------------------------------------


def test_wait_reraises_same_exception_with_task_frames():
    err = Boom("bad")
    fut = fw.fork(raise_it, err)
    with pytest.raises(Boom) as info:
        fw.wait(fut)
    assert info.value is err
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "raise_it" in frames
    for getter in (fut.value, fut.result, fut.wait):
        with pytest.raises(Boom) as again:
            getter()
        assert again.value is err
    assert fut.exception() is err


def test_base_exception_reaches_waiter_and_worker_survives(interop):
    interop(1)
    fut = fw.fork(raise_it, SystemExit(3))
    with pytest.raises(SystemExit):
        fw.wait(fut)
    gate = threading.Event()
    # the worker is still alive: it runs the next task (not run inline here)
    fut2 = fw.fork(gate.set)
    assert gate.wait(TIMEOUT)
    fw.wait(fut2)


class Custom(BaseException):
    pass


@pytest.mark.parametrize(
    "make", [lambda: SystemExit(3), KeyboardInterrupt, GeneratorExit, Custom],
    ids=["SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException-subclass"],
)
def test_base_exception_in_a_task_reaches_the_waiter_and_spares_the_worker(interop, make):
    interop(2)
    fw.wait_all([fw.fork(abs, 1) for _ in range(4)])
    deadline = time.monotonic() + TIMEOUT
    want = {"forkwait-interop-0", "forkwait-interop-1"}
    while True:  # a larger pool of an earlier test shrinks: wait until only workers
        # 0 and 1 are left (two left could be 0 and a retiring 3, and a new 1 to come)
        named = {t.name: t.ident for t in threading.enumerate()
                 if t.name.startswith("forkwait-interop-")}
        if set(named) == want:
            break
        assert time.monotonic() < deadline, f"pool did not settle at 2 workers: {named}"
        fw.wait_all([fw.fork(abs, 1) for _ in range(4)])
        time.sleep(0.001)
    workers = set(named.values())
    exc = make()
    ran_in = []

    def boom():
        ran_in.append(threading.current_thread().name)
        raise exc

    futs = [fw.fork(boom) for _ in range(6)]
    deadline = time.monotonic() + TIMEOUT
    while not all(f.done() for f in futs) and time.monotonic() < deadline:
        time.sleep(0.001)  # poll: a wait would run an unstarted task in this thread
    for f in futs:
        assert f.exception(timeout=0) is exc
    assert all(name.startswith("forkwait-interop-") for name in ran_in)
    with pytest.raises(type(exc)) as info:
        fw.wait(futs[0])
    assert info.value is exc
    # the same workers are alive and work
    assert fw.wait_all([fw.fork(abs, -i) for i in range(50)]) == list(range(50))
    alive = {t.ident for t in threading.enumerate() if t.name.startswith("forkwait-interop-")}
    assert workers <= alive, fw._native.pool._stats()
    # run inline in the waiting (main) thread: the waiter gets it too
    with pytest.raises(type(exc)):
        fw.wait(fw.fork(boom))


def test_system_exit_in_a_task_does_not_end_the_process():
    proc = run_python(
        """
        fw.set_num_interop_threads(1)
        f = fw.fork(sys.exit, 4)
        print("exception", repr(f.exception(timeout=30)), flush=True)
        print("still here", fib(10))
        """,
        prelude=True,
    )
    assert proc.stdout.split() == ["exception", "SystemExit(4)", "still", "here", "55"]


# -- unretrieved failures --------------------------------------------------------------


def test_unretrieved_exception_is_logged_once(caplog):
    gc.collect()
    err = Boom("lost")
    fut = fw.fork(raise_it, err)
    wait_done(fut)
    ref = weakref.ref(fut)
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        del fut
        # the worker drops its own reference just after finishing the future
        assert until(lambda: gc.collect() is not None and ref() is None)
    records = [r for r in caplog.records if r.exc_info and r.exc_info[1] is err]
    assert len(records) == 1
    assert "nobody retrieved" in records[0].getMessage()


def test_retrieved_exception_is_not_logged(caplog):
    fut = fw.fork(raise_it, Boom("seen"))
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
    fut = fw.fork(raise_it, err)
    wait_done(fut)
    fut.myself = fut
    ref = weakref.ref(fut)
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        del fut, err
        assert until(lambda: gc.collect() is not None and ref() is None)
        assert until(lambda: [r for r in caplog.records if r.exc_info] or None)
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


def test_unretrieved_failure_is_logged_later_not_inside_the_finalizer(caplog):
    """The report is deferred to a safe point (a pending call), so a
    GC inside ast.parse() on CPython 3.11 cannot break it."""

    def boom():
        return 1 / 0

    with caplog.at_level(logging.ERROR, logger="forkwait"):
        f = fw.fork(boom)
        while not f.done():
            time.sleep(0.001)
        del f
        gc.collect()
        for _ in range(100):  # the pending call runs between bytecodes
            if caplog.records:
                break
            time.sleep(0.001)
    assert any("nobody retrieved" in r.getMessage() for r in caplog.records)


def test_gc_of_a_failed_future_inside_ast_parse_does_not_break_it():
    proc = run_python(
        """
        import ast, gc, inspect, logging, sys, time
        import forkwait as fw
        logging.basicConfig(stream=sys.stdout, level=logging.ERROR)

        def boom():
            x = [1]
            return x[0] / 0

        src = inspect.getsource(ast)
        for i in range(100):
            class Holder: pass
            h = Holder(); h.me = h
            f = fw.fork(boom)
            while not f.done():
                time.sleep(0.0005)
            h.f = f
            del h, f
            gc.set_threshold(50)
            ast.parse(src)  # SystemError on 3.11 if the finalizer formats the traceback
        print("parsed 100")
        """,
        timeout=120,
    )
    assert "parsed 100" in proc.stdout
