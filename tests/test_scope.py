"""fw.scope(): a structured scope waits for all its forks on exit (forks of
its tasks too), cancels unstarted siblings when one fails or on Ctrl-C, raises
one failure as itself and several as an ExceptionGroup, and nests.
"""

import sys
import threading
import time

import pytest
from _child import run_python
from _pool_helpers import TIMEOUT, blocked, until, wait_running

import forkwait as fw

if sys.version_info >= (3, 11):
    EG = ExceptionGroup  # noqa: F821
else:  # pragma: no cover
    from exceptiongroup import ExceptionGroup as EG


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
            wait_running(blocker)
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
    blocked(gate, interop)
    with pytest.raises(KeyboardInterrupt):
        with fw.scope() as s:
            queued = [s.fork(abs, -i) for i in range(3)]
            raise KeyboardInterrupt
    assert all(q.cancelled() for q in queued)


def test_an_exception_in_the_block_cancels_later_forks_of_running_tasks(gate, interop):
    interop(1)

    def parent():
        gate.wait(TIMEOUT)  # released once the scope has failed
        return s.fork(abs, -1)

    with pytest.raises(KeyError, match="body"):
        with fw.scope() as s:
            p = s.fork(parent)
            wait_running(p)
            threading.Thread(target=lambda: until(lambda: s._failed) and gate.set()).start()
            raise KeyError("body")
    assert p.result().cancelled()


def test_scopes_nest_and_fork_from_inside_a_scope_task(interop):
    interop(1)

    def inner_sum(n):
        with fw.scope() as inner:
            parts = [inner.fork(abs, -i) for i in range(n)]
        return sum(p.result() for p in parts)

    with fw.scope() as outer:
        totals = [outer.fork(inner_sum, n) for n in range(5)]
    assert [t.result() for t in totals] == [0, 0, 1, 3, 6]



# A child process: Ctrl-C (SIGINT) sent while the scope waits for its tasks at the
# end of the block (both run on pool threads by then). The tasks block on
# `release`, which the interrupter sets once KeyboardInterrupt came out of the
# scope or, if it does not come, a while later: a scope that left at once shows
# its tasks running. Released, each task forks into the scope once more.
_CTRL_C_AT_EXIT = """
fw.set_num_interop_threads(2)
started = threading.Semaphore(0)
release = threading.Event()
out = threading.Event()
main = threading.main_thread().ident
PRESSES = int(sys.argv[1])

def task():
    started.release()
    release.wait(60)
    try:
        late = s.fork(abs, -1)
    except RuntimeError:
        return "left"
    return "cancelled" if late.cancelled() else "ran"

def in_frame(name):
    frame = sys._current_frames().get(main)
    while frame is not None:
        if frame.f_code.co_name == name and "_futures" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False

def until(pred):
    deadline = time.monotonic() + 60
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.001)

def interrupter():
    until(lambda: in_frame("_wait_all"))  # the end of the block waits on them
    os.kill(os.getpid(), signal.SIGINT)
    if PRESSES == 2:
        until(lambda: in_frame("_wait_running"))  # waiting for the running ones
        os.kill(os.getpid(), signal.SIGINT)
    out.wait(3)  # KeyboardInterrupt out of the scope, or it waits as it should
    release.set()

threading.Thread(target=interrupter, daemon=True).start()
try:
    with fw.scope() as s:
        fs = [s.fork(task) for _ in range(2)]
        started.acquire(); started.acquire()  # both run on pool threads
    print("no KeyboardInterrupt")
except KeyboardInterrupt:
    running = sum(f.running() for f in fs)
    out.set()
print("running", running, "then", [f.result(60) for f in fs])
"""


def test_ctrl_c_while_the_scope_waits_at_the_end_waits_for_its_running_tasks():
    # ... and the scope has failed: a running task's new fork is cancelled at once
    out = run_python(_CTRL_C_AT_EXIT, argv=["1"], prelude=True).stdout
    assert "running 0 then ['cancelled', 'cancelled']" in out


def test_a_second_ctrl_c_while_the_scope_waits_leaves_at_once():
    out = run_python(_CTRL_C_AT_EXIT, argv=["2"], prelude=True).stdout
    assert "running 2 then ['left', 'left']" in out
