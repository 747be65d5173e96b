"""wait() on one future: its arguments; a wait does work (it runs an
unstarted task in the waiting thread, and while the task runs elsewhere, only
tasks of that task's own subtree: DESIGN.md rule 1); nesting to any depth
never deadlocks; timed waits help the same way and give up at the deadline;
an untimed wait blocks instead of spinning; a cycle of waits raises instead
of hanging.

Waiting on many futures: test_wait_many.py. Waits deeper than the recursion
limit (spare threads): test_pool_size.py. Ctrl-C in a wait: test_shutdown.py.
"""

import os
import sys
import threading
import time

import pytest
from _pool_helpers import TIMEOUT, blocked, fib, wait_running

import forkwait as fw

# -- arguments -------------------------------------------------------------------------


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


def test_wait_rejects_non_future():
    with pytest.raises(TypeError, match="Future"):
        fw.wait(42)


# -- a wait runs the task, or its subtree ----------------------------------------------


def test_wait_on_unstarted_future_runs_it_in_waiting_thread(interop):
    interop(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, TIMEOUT)  # occupies the only worker
    wait_running(blocker)
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
    wait_running(running)
    assert fw.wait(running) == "released"
    assert ran_in == [threading.get_ident()]


def test_wait_with_a_lock_held_does_not_run_the_task_that_needs_it(interop):
    """The deadlock that helping with any task would cause: the only worker
    is busy, the waiter holds a lock that another queued task needs. The
    wait must not run that task."""
    interop(1)
    lock = threading.Lock()
    me = threading.get_ident()
    ran_in = []

    def needs_lock():
        ran_in.append(threading.get_ident())
        with lock:
            return "locked"

    with lock:
        a = fw.fork(time.sleep, 0.1)
        wait_running(a)
        b = fw.fork(needs_lock)
        assert fw.wait(a) is None
        assert me not in ran_in
    assert fw.wait(b) == "locked"


def test_wait_runs_only_its_subtree_even_nested(interop):
    """A wait on X runs X's children and grandchildren, and not a sibling
    forked by the same thread."""
    interop(1)
    me = threading.get_ident()
    where = {}
    gate = threading.Event()
    ready = threading.Event()

    def leaf(name):
        where[name] = threading.get_ident()
        if name == "grandchild":
            gate.set()

    def child():
        fw.fork(leaf, "grandchild")
        return "child"

    def parent():
        fw.fork(child)
        ready.set()
        assert gate.wait(TIMEOUT)  # until the grandchild ran (somewhere)
        return "parent"

    x = fw.fork(parent)
    assert ready.wait(TIMEOUT)  # parent is running on the only worker
    sibling = fw.fork(leaf, "sibling")
    assert fw.wait(x) == "parent"
    assert where["grandchild"] == me  # the waiter ran the subtree
    assert where.get("sibling") != me  # ... and never the sibling
    fw.wait(sibling)


def test_wait_in_one_thread_never_runs_another_threads_tasks(interop):
    """Ctrl-C and exit: the work a wait runs is its own subtree, so
    no thread runs (and can abandon or interrupt) another thread's task."""
    interop(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, TIMEOUT)
    wait_running(blocker)
    theirs = []
    other_started = threading.Event()

    def other_thread():
        theirs.extend(fw.fork(threading.get_ident) for _ in range(20))
        other_started.set()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert other_started.is_set()
    mine = fw.fork(threading.get_ident)
    assert fw.wait(mine) == threading.get_ident()  # unstarted: runs here
    slow = fw.fork(time.sleep, 0.05)  # runs here too (unstarted)
    fw.wait(slow)
    assert not any(f.done() for f in theirs)  # none ran inside those waits
    gate.set()
    deadline = time.monotonic() + TIMEOUT
    while not all(f.done() for f in theirs) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert threading.get_ident() not in [f.result(timeout=0) for f in theirs]


def test_waiting_thread_is_one_more_worker_for_the_subtree(interop):
    """With one worker and a waiting main thread, two tasks of the subtree run
    at once (events recorded inside the tasks)."""
    interop(1)
    inside = threading.Barrier(2, timeout=TIMEOUT)

    def leaf():
        inside.wait()  # both leaves must be inside at the same time
        return threading.get_ident()

    def root():
        a, b = fw.fork(leaf), fw.fork(leaf)
        ready.set()
        return sorted(fw.wait_all([a, b]))

    ready = threading.Event()
    r = fw.fork(root)
    idents = fw.wait(r)
    assert len(set(idents)) == 2


# -- nesting never deadlocks -----------------------------------------------------------


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


# -- timed waits -----------------------------------------------------------------------


def test_timed_waits_inside_tasks_help_with_their_own_children(interop):
    """Every worker doing child.result(timeout) on its queued child."""
    interop(2)

    def parent(i):
        child = fw.fork(lambda: i * 10)
        return child.result(timeout=TIMEOUT)

    futs = [fw.fork(parent, i) for i in range(8)]
    assert fw.wait_all(futs, timeout=TIMEOUT) == [i * 10 for i in range(8)]

    def parent_exc():
        child = fw.fork(int, "x")
        return type(child.exception(timeout=TIMEOUT)).__name__

    assert fw.wait(fw.fork(parent_exc)) == "ValueError"


def test_timed_wait_gives_up_at_the_deadline_and_leaves_the_task_running(interop):
    interop(1)
    gate = threading.Event()
    f = fw.fork(gate.wait, TIMEOUT)
    wait_running(f)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        fw.wait(f, timeout=0.01)
    with pytest.raises(TimeoutError):
        fw.wait_all([f], timeout=0.01)
    assert f.running()
    gate.set()
    assert fw.wait(f) is True


def test_wait_and_wait_all_timeouts_leave_futures_running(gate, interop):
    blocker = blocked(gate, interop)[0]
    with pytest.raises(TimeoutError):
        fw.wait(blocker, timeout=0.01)
    with pytest.raises(TimeoutError):
        fw.wait_all([blocker], timeout=0.01)
    assert blocker.running()


def _thread_state(native_id):
    """The kernel's scheduling state of a thread of this process ('R'
    running or runnable, 'S' asleep, ...) and its voluntary context
    switches so far (each time it blocked)."""
    with open(f"/proc/self/task/{native_id}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return fields["State"].split()[0], int(fields["voluntary_ctxt_switches"])


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
@pytest.mark.parametrize("how", ["result-inf", "result-1e300", "result-max", "wait_all-max"])
def test_result_timeout_inf_waits_without_spinning(interop, how):
    """A waiter with timeout=inf blocks in the kernel: it is asleep ('S')
    and nothing wakes it (its voluntary context switches stay the same)
    while the task runs on. A spinning waiter is never asleep; one that
    polls, or spins for the GIL, is woken again and again. So does one with a
    timeout too large for the system's clocks (past threading.TIMEOUT_MAX:
    no deadline; a deadline that overflowed the timespec spun a CPU)."""
    timeout = {"result-inf": float("inf"), "result-1e300": 1e300,
               "result-max": sys.float_info.max, "wait_all-max": sys.float_info.max}[how]
    interop(1)
    gate = threading.Event()
    f = fw.fork(gate.wait, TIMEOUT)
    wait_running(f)
    out = {}
    started = threading.Event()

    def waiter():
        out["tid"] = threading.get_native_id()
        started.set()
        if how.startswith("wait_all"):
            out["value"] = fw.wait_all([f, f], timeout=timeout)[0]
        else:
            out["value"] = f.result(timeout=timeout)

    t = threading.Thread(target=waiter)
    t.start()
    assert started.wait(TIMEOUT)
    # 20 looks in a row (this thread sleeping between them, the GIL free)
    # that find the waiter asleep, not woken since the last look
    deadline = time.monotonic() + TIMEOUT
    quiet, last = 0, None
    while quiet < 20:
        assert time.monotonic() < deadline, "the waiter never stayed asleep"
        time.sleep(0.005)
        state, switches = _thread_state(out["tid"])
        quiet = quiet + 1 if state == "S" and switches == last else 0
        last = switches
    assert not f.done() and t.is_alive()
    gate.set()
    t.join(TIMEOUT)
    assert out["value"] is True


# -- cycles of waits -------------------------------------------------------------------


def test_task_waiting_on_itself_raises_runtime_error():
    box = {}
    ready = threading.Event()  # (a pool thread may start the task before `box` is set)

    def me():
        ready.wait(TIMEOUT)
        return fw.wait(box["f"])

    box["f"] = fw.fork(me)
    ready.set()
    with pytest.raises(RuntimeError, match="deadlock"):
        box["f"].result(timeout=TIMEOUT)


def test_two_tasks_waiting_on_each_other_raise_instead_of_hanging(interop):
    interop(2)
    box = {}
    both = threading.Barrier(3, timeout=TIMEOUT)  # the two tasks, and this thread once `box` is set

    def a():
        both.wait()
        return fw.wait(box["b"])

    def b():
        both.wait()
        return fw.wait(box["a"])

    box["a"] = fw.fork(a)
    box["b"] = fw.fork(b)
    both.wait()
    errors = []
    for f in (box["a"], box["b"]):
        try:
            f.result(timeout=TIMEOUT)
        except RuntimeError as exc:
            errors.append(str(exc))
    assert errors and all("deadlock" in e for e in errors)
    # The pool is fine afterwards.
    assert fw.wait(fw.fork(sum, [1, 2])) == 3


def test_waiting_on_an_ancestor_from_a_helped_task_raises():
    """A task run inline inside a wait, waiting on the task that waits."""
    box = {}

    ready = threading.Event()  # (a pool thread may start `outer` before `box` is set)

    def inner():
        return fw.wait(box["outer"])  # outer runs beneath us on this thread

    def outer():
        ready.wait(TIMEOUT)
        return fw.wait(fw.fork(inner))

    box["outer"] = fw.fork(outer)
    ready.set()
    with pytest.raises(RuntimeError, match="deadlock"):
        fw.wait(box["outer"])


def _cycle_through(kind, other):
    """A wait of `kind` on [other's future, a long-running helper] as the
    waiting side of a two-task cycle."""
    futs = [other]
    if kind == "wait_all":
        return fw.wait_all(futs + [fw.fork(time.sleep, 0.01)])
    if kind == "wait_any":
        return fw.wait_any(futs).result()
    if kind == "as_completed":
        return [f.result() for f in fw.as_completed(futs)]
    if kind == "collect_all":
        return fw.collect_all(futs).wait()
    return fw.wait(other)


@pytest.mark.parametrize("kind", ["wait_all", "wait_any", "as_completed", "collect_all"])
def test_a_cycle_through_a_wait_on_many_raises_instead_of_hanging(interop, kind):
    """A waits on B through wait_all / wait_any / as_completed /
    collect_all(...).wait(), B waits on A: the wait that closes the cycle
    raises RuntimeError at once, as a cycle through wait() does."""
    interop(2)
    box = {}
    both = threading.Barrier(3, timeout=TIMEOUT)  # the two tasks, and this thread once `box` is set

    def a():
        both.wait()
        return _cycle_through(kind, box["b"])

    def b():
        both.wait()
        return fw.wait(box["a"])

    box["a"] = fw.fork(a)
    box["b"] = fw.fork(b)
    both.wait()
    errors = []
    for f in (box["a"], box["b"]):
        try:
            f.result(timeout=TIMEOUT)
        except RuntimeError as exc:
            errors.append(str(exc))
    assert errors and all("deadlock" in e for e in errors), errors
    assert fw.wait(fw.fork(sum, [1, 2])) == 3


def test_wait_any_with_one_member_outside_the_cycle_is_no_deadlock(interop):
    """wait_any on [B (which waits on A), C (which ends)]: C may end the wait,
    so A's wait is no deadlock and returns C; B then gets A's value."""
    interop(3)
    box = {}
    started = threading.Event()
    ready = threading.Event()  # `box` is set

    def a():
        started.wait(TIMEOUT)
        ready.wait(TIMEOUT)
        first = fw.wait_any([box["b"], box["c"]])
        return first is box["c"]

    def b():
        started.set()
        ready.wait(TIMEOUT)
        return fw.wait(box["a"])

    box["a"] = fw.fork(a)
    box["b"] = fw.fork(b)
    box["c"] = fw.fork(time.sleep, 0.2)
    ready.set()
    assert box["a"].result(timeout=TIMEOUT) is True
    assert box["b"].result(timeout=TIMEOUT) is True


def test_a_timed_wait_in_a_cycle_is_no_deadlock(interop):
    """A waits on B with a timeout and a fallback, B waits on A without one:
    only a cycle of untimed waits is a deadlock, so B waits, A times out and
    takes its fallback, and B gets A's value."""
    interop(2)
    box = {}
    both = threading.Barrier(3, timeout=TIMEOUT)  # the two tasks, and this thread once `box` is set

    def a():
        both.wait()
        try:
            return fw.wait(box["b"], timeout=0.3)
        except TimeoutError:
            return "fallback"

    def b():
        both.wait()
        return ("b got", fw.wait(box["a"]))

    box["a"] = fw.fork(a)
    box["b"] = fw.fork(b)
    both.wait()
    assert box["a"].result(timeout=TIMEOUT) == "fallback"
    assert box["b"].result(timeout=TIMEOUT) == ("b got", "fallback")


def test_a_wait_helps_a_great_grandchild_whose_ancestors_are_done(interop):
    """R (on the only pool thread) forks P and blocks until a gate opens; the
    main thread's wait on R runs P, P forks Q and returns, Q forks C and
    returns, and C opens the gate. C belongs to R's subtree though P and Q
    are done: the waiter must find it (each done task keeps its parent link
    while a descendant is undone), or nobody runs C and R never ends."""
    interop(1)
    gate = threading.Event()

    def c():
        gate.set()
        return "c"

    def q():
        fw.fork(c)
        return "q"

    def p():
        fw.fork(q)
        return "p"

    def r():
        fw.fork(p)
        return gate.wait(TIMEOUT)

    root = fw.fork(r)
    wait_running(root)
    assert fw.wait(root) is True
