"""fork(): the call and its arguments, that fork never runs the call in the
calling thread, that forked calls run at the same time (overlap checked by
events and timestamps recorded inside the tasks), and that a task runs in a
copy of its caller's context, inline or on a worker (DESIGN.md rule 7).

Forks of forkwait's own kernels, which run without the GIL:
test_fork_gil_free.py.
"""

import contextvars
import decimal
import gc
import sys
import threading
import time
import weakref

import numpy as np
import pytest
from _pool_helpers import TIMEOUT, wait_running

import forkwait as fw

# -- the call and its arguments --------------------------------------------------------


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


def test_fork_fn_is_positional_only():
    def takes_fn(fn, x):
        return fn(x)

    assert fw.wait(fw.fork(takes_fn, fn=abs, x=-3)) == 3


@pytest.mark.parametrize("bad", [None, 42, "fn", [len]])
def test_fork_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="callable"):
        fw.fork(bad)


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


# -- never inline, and at the same time ------------------------------------------------


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


# -- the caller's context --------------------------------------------------------------


request_id = contextvars.ContextVar("request_id", default="unset")


def test_task_sees_the_callers_context_inline_and_on_a_worker(interop):
    interop(1)
    request_id.set("caller")
    gate = threading.Event()
    f_worker = fw.fork(request_id.get)
    deadline = time.monotonic() + TIMEOUT
    while not f_worker.done() and time.monotonic() < deadline:
        time.sleep(0.001)  # let the worker run it (a wait would run it here)
    blocker = fw.fork(gate.wait, TIMEOUT)
    wait_running(blocker)
    f_inline = fw.fork(request_id.get)  # the worker is busy: the wait runs it here
    assert fw.wait(f_inline) == "caller"
    assert f_worker.result(timeout=0) == "caller"
    gate.set()


def test_task_runs_in_a_copy_changes_do_not_leak_back():
    request_id.set("outer")

    def change():
        request_id.set("inner")
        return request_id.get()

    assert fw.wait(fw.fork(change)) == "inner"
    assert request_id.get() == "outer"


def test_numpy_errstate_and_decimal_context_travel_with_the_task():
    def divide():
        with np.errstate(all="ignore"):
            pass
        return np.geterr()["divide"]

    with np.errstate(divide="raise"):
        assert fw.wait(fw.fork(lambda: np.geterr()["divide"])) == "raise"
    if sys.version_info >= (3, 12) or True:
        with decimal.localcontext() as ctx:
            ctx.prec = 5
            assert fw.wait(fw.fork(lambda: decimal.getcontext().prec)) == 5
    assert fw.wait(fw.fork(divide)) == np.geterr()["divide"]


def test_then_callback_runs_in_the_context_of_the_then_caller():
    f = fw.Future()
    request_id.set("at-then")
    g = f.then(lambda _: request_id.get())
    request_id.set("at-completion")

    def complete():
        request_id.set("completer")
        f.set_result(1)

    threading.Thread(target=complete).start()
    assert g.result(timeout=TIMEOUT) == "at-then"
