"""The BLAS budget of forked tasks and ops.matmul's pin share one limiter.

Counts are read two ways: through the limiter (`_blas.libraries()`) and
through threadpoolctl, which finds the same libraries on its own.
"""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest
from _child import in_fork_child, needs_fork, run_python
from threadpoolctl import threadpool_info, threadpool_limits

import forkwait as fw
from forkwait._native import _blas

USER = 3  # a BLAS count no default gives, so a restore is visible


def blas_counts() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


pytestmark = pytest.mark.skipif(not blas_counts(), reason="no BLAS that threadpoolctl controls")


@pytest.fixture
def user_blas(interop):
    """BLAS at USER threads, the budget off, both put back afterwards (and
    the pool's size, which run_together may grow)."""
    was = fw.get_blas_budget()
    with threadpool_limits(USER, user_api="blas"):
        yield
        fw.set_blas_budget(False)
        assert blas_counts() == [USER] * len(blas_counts())
    fw.set_blas_budget(was)


def budget_on(cpus: int) -> None:
    """The budget as set_blas_budget(True) turns it on, for a given CPU count
    (the limit must not depend on the machine the test runs on)."""
    _blas.set_budget(True, cpus)


def run_together(n: int, body):
    """Run body() in n forked tasks that are all running at once."""
    fw.set_num_interop_threads(max(fw.get_num_interop_threads(), n))
    barrier = threading.Barrier(n, timeout=10)

    def task():
        barrier.wait()
        seen = body()
        barrier.wait()  # nobody leaves before all have looked
        return seen

    return fw.wait_all([fw.fork(task) for _ in range(n)], timeout=30)


def test_budget_limits_blas_while_several_tasks_run(user_blas):
    budget_on(cpus=2)
    seen = run_together(2, blas_counts)
    assert seen == [[1] * len(blas_counts())] * 2
    assert blas_counts() == [USER] * len(blas_counts())  # restored at once


def test_budget_limit_is_cpus_over_running_tasks(user_blas):
    budget_on(cpus=4)
    assert run_together(2, blas_counts)[0] == [2] * len(blas_counts())
    budget_on(cpus=4)
    assert run_together(3, blas_counts)[0] == [1] * len(blas_counts())
    budget_on(cpus=16)  # 16 // 2 = 8 > the user's 3: the user's count stays
    assert run_together(2, blas_counts)[0] == [USER] * len(blas_counts())


def test_public_switch_uses_the_cpus_available(user_blas):
    cpus = len(os.sched_getaffinity(0))
    fw.set_blas_budget(True)
    assert fw.get_blas_budget() is True
    assert _blas.state()["cpus"] == cpus
    seen = run_together(2, blas_counts)[0]
    assert seen == [min(USER, max(1, cpus // 2))] * len(blas_counts())
    assert "BLAS budget in forked tasks: on [set in code: set_blas_budget(True)]" in (
        fw.parallel_info())


def test_one_task_alone_keeps_the_users_count(user_blas):
    budget_on(cpus=2)
    assert fw.fork(blas_counts).wait() == [USER] * len(blas_counts())


def test_budget_off_changes_nothing(user_blas):
    assert run_together(2, blas_counts)[0] == [USER] * len(blas_counts())
    assert _blas.state()["limit"] == 0


def test_a_task_blocked_in_a_wait_does_not_count(user_blas):
    """A parent waiting on its child is not running BLAS: the child alone is
    one running task, whether the wait runs it inline or another thread does."""
    budget_on(cpus=2)

    def parent():
        return fw.fork(blas_counts).wait()

    assert fw.fork(parent).wait() == [USER] * len(blas_counts())

    # and a parent asleep on a child that another task is running
    gate = threading.Event()
    started = threading.Event()

    def child():
        gate.wait(10)
        return blas_counts()

    def sleeper(fut):
        started.set()
        return fw.wait(fut, timeout=20)

    def open_gate():
        # once the sleeper is in its wait and has stopped counting (the budget
        # then counts the child alone); a wait that kept counting leaves the
        # count at 2, and the child sees the budget's split after 10 s
        started.wait(10)
        deadline = time.monotonic() + 10
        while _blas.state()["running"] != 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        gate.set()

    c = fw.fork(child)
    while not c.running():  # a worker has it: the parent cannot run it inline
        pass
    p = fw.fork(sleeper, c)
    threading.Thread(target=open_gate).start()
    assert p.wait(timeout=30) == [USER] * len(blas_counts())


def test_the_users_change_during_tasks_is_what_comes_back(user_blas):
    """The user sets a count (from the thread that controls threadpoolctl's
    limits: threadpoolctl 3.8 ignores OpenBLAS limits set by other threads)
    while budget-limited tasks run: that count is what comes back."""
    budget_on(cpus=2)
    fw.set_num_interop_threads(max(fw.get_num_interop_threads(), 2))
    started = threading.Barrier(3, timeout=10)
    go = threading.Event()

    def task():
        started.wait()
        go.wait(10)
        return blas_counts()

    futs = [fw.fork(task) for _ in range(2)]
    started.wait()
    assert blas_counts() == [1] * len(blas_counts())
    _set_all(5)  # the user's own setting, in the middle
    go.set()
    fw.wait_all(futs, timeout=30)
    assert blas_counts() == [5] * len(blas_counts())
    _set_all(USER)


def _set_all(n: int) -> None:
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(user_api="blas").limit(limits=n)


def test_matmul_pin_and_budget_overlapping_never_leave_blas_pinned(user_blas):
    """The race of two save/restore pairs: tasks doing ops.matmul (pins SciPy's
    BLAS to 1) and NumPy matmuls, while the budget is switched on and off from
    another thread. Afterwards every library is back at the user's count."""
    a32 = np.ones((96, 96), np.float32)  # 96^3 > the size below which no pin is taken
    stop = threading.Event()

    def toggler():
        rnd = random.Random(1)
        while not stop.is_set():
            if rnd.random() < 0.5:
                budget_on(cpus=2)
            else:
                _blas.set_budget(False, 2)

    def work(i):
        if i % 2:
            return float(fw.ops.matmul(a32, a32)[0, 0])
        return float((a32 @ a32)[0, 0])

    t = threading.Thread(target=toggler)
    t.start()
    try:
        for _ in range(30):
            assert fw.wait_all([fw.fork(work, i) for i in range(8)], timeout=60) == [96.0] * 8
    finally:
        stop.set()
        t.join()
    budget_on(cpus=2)
    fw.set_blas_budget(False)
    assert blas_counts() == [USER] * len(blas_counts())
    assert all(not lib["pinned"] and not lib["limited"] for lib in _blas.libraries())


def test_matmul_alone_restores_the_users_count(user_blas):
    a = np.ones((128, 128))
    fw.ops.matmul(a, a)
    assert blas_counts() == [USER] * len(blas_counts())


@needs_fork
def matmul_then_counts():
    fw.ops.matmul(np.ones((2, 2)), np.ones((2, 2)))
    return blas_counts()


def test_fork_child_has_the_users_counts(user_blas):
    """os.fork() while budget-limited tasks run: the child gets the user's
    count back (no task runs in it) at its first BLAS step, a matmul here
    (nothing of OpenBLAS's is called inside os.fork())."""
    budget_on(cpus=2)
    got = []

    def body():
        seen = blas_counts()
        if not got:
            got.append(in_fork_child(matmul_then_counts))
        return seen

    seen = run_together(2, body)
    assert seen[0] == [1] * len(blas_counts())
    assert got[0].ok, got[0].error
    assert got[0].value == [USER] * len(blas_counts())


def test_bad_switch_values_are_refused():
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="enabled must be a bool"):
            fw.set_blas_budget(bad)


def test_environment_switch():
    code = "import forkwait as fw; print(fw.get_blas_budget())"
    out = run_python(code, env={"FORKWAIT_BLAS_BUDGET": "1"})
    assert out.stdout.strip() == "True"
    out = run_python(code, env={"FORKWAIT_BLAS_BUDGET": "maybe"}, flags=["-W", "always"])
    assert out.stdout.strip() == "False"
    assert "ignoring FORKWAIT_BLAS_BUDGET='maybe'" in out.stderr
