"""Reliability, the process's life (issue 5): os.fork() and multiprocessing,
GCC bug 60035, interpreter exit, Ctrl-C, BaseException in tasks, fork after
shutdown, and fork trees deeper than Python's recursion limit.

Everything that touches the process (fork, exit, signals, recursion limits)
runs in a fresh interpreter (``run_python``). A timeout only turns a hang
into a failure; nothing asserts a duration. See docs/reliability.md.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import run_python

import forkwait as fw
from forkwait._native import _team, pool

TIMEOUT = 60
HAS_FORK = hasattr(os, "fork")
needs_fork = pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")

# Imported by the subprocess scripts below.
PRELUDE = """
import os, sys, signal, threading, time
import forkwait as fw
from forkwait._native import _team, pool

def fib(n):
    if n < 2:
        return n
    a, b = fw.fork(fib, n - 1), fw.fork(fib, n - 2)
    return fw.wait(a) + fw.wait(b)

def say(*words):
    # One write per line, so that lines of several threads never interleave.
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())

def on_worker(fn, *args):
    # fn(*args) on a pool worker, never in this thread (a wait would run an
    # unstarted task here): poll until done, then read the value.
    f = fw.fork(fn, *args)
    deadline = time.monotonic() + 30
    while not f.done() and time.monotonic() < deadline:
        time.sleep(0.001)
    return f.result(timeout=0)

def reap(pid, timeout=30):
    # The child's exit code; a child still alive after `timeout` is killed: -999.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -999
"""


def run(code, **kwargs):
    kwargs.setdefault("timeout", TIMEOUT * 2)
    return run_python(PRELUDE + textwrap.dedent(code), **kwargs)


# ---------------------------------------------------------------- os.fork()


@needs_fork
def test_child_after_pool_and_kernels_in_workers_runs_parallel_kernels():
    """The parent ran fork/wait and OpenMP teams in pool workers only (never in
    the forking thread): the child's main thread may run teams."""
    proc = run(
        """
        fw.set_num_interop_threads(2)
        fw.set_intra_op_mode("fixed")
        fw.set_num_threads(2)
        print("parent", fib(12), sorted(set(
            on_worker(_team._probe_team) for _ in range(4)
        )), flush=True)
        pid = os.fork()
        if pid == 0:
            ok = fib(12) == 144 and _team._probe_team() == 2
            ok = ok and on_worker(_team._probe_team) == 2
            os._exit(0 if ok else 1)
        print("child exit", reap(pid))
        """,
        env={"OMP_WAIT_POLICY": "passive"},
    )
    assert proc.stdout.split() == ["parent", "144", "[2]", "child", "exit", "0"]


@needs_fork
@pytest.mark.skipif(
    not hasattr(_team, "_fork_serial"),
    reason="needs the GCC-bug-60035 flag in _team (docs/reliability.md)",
)
def test_gcc_60035_child_of_a_thread_that_ran_a_team_finishes():
    """GCC bug 60035: a fork() child hangs in its first parallel region when the
    forking thread had run one (docs/reliability.md shows it here). forkwait's
    child runs kernels serially in that thread, in parallel in other threads,
    and parallel_info() says so."""
    proc = run(
        """
        fw.set_intra_op_mode("fixed")
        fw.set_num_threads(2)
        assert _team._probe_team() == 2          # a team in the forking thread
        print("parent", fib(10), flush=True)
        ops = getattr(fw, "ops", None)
        pid = os.fork()
        if pid == 0:
            serial_here = _team._probe_team()     # would hang without the flag
            in_worker = on_worker(_team._probe_team)
            info = fw.parallel_info()
            ok = serial_here == 1 and in_worker == 2 and _team._fork_serial()
            ok = ok and "60035" in info and fib(12) == 144
            if ops is not None and hasattr(ops, "exp"):
                import numpy as np
                x = np.linspace(-3, 3, 1 << 20)
                ok = ok and np.allclose(ops.exp(x), np.exp(x))
                ok = ok and np.allclose(fw.fork(ops.exp, x).wait(), np.exp(x))
            print("child", serial_here, in_worker, flush=True)
            os._exit(0 if ok else 1)
        print("child exit", reap(pid))
        # the parent itself is unaffected
        print("parent after", _team._probe_team(), _team._fork_serial())
        """
    )
    out = proc.stdout.split()
    assert out == ["parent", "55", "child", "1", "2", "child", "exit", "0",
                   "parent", "after", "2", "False"], proc.stdout + proc.stderr


@needs_fork
def test_multiprocessing_fork_children_fork_wait_and_run_kernels():
    proc = run(
        """
        import multiprocessing as mp

        def child(q):
            team = on_worker(_team._probe_team)
            q.put((fib(11), team, fw.wait_all([fw.fork(abs, -i) for i in range(20)])))

        if __name__ == "__main__":
            fw.set_intra_op_mode("fixed")
            fw.set_num_threads(2)
            print("parent", fib(11), on_worker(_team._probe_team))
            ctx = mp.get_context("fork")
            q = ctx.Queue()
            procs = [ctx.Process(target=child, args=(q,)) for _ in range(3)]
            for p in procs:
                p.start()
            got = [q.get(timeout=30) for _ in procs]
            for p in procs:
                p.join(30)
            print("children", [p.exitcode for p in procs],
                  all(g == (89, 2, list(range(20))) for g in got))
        """
    )
    assert proc.stdout.split() == ["parent", "89", "2", "children", "[0,", "0,", "0]", "True"]


@needs_fork
def test_child_fails_tasks_other_threads_were_running_and_keeps_its_own():
    """At os.fork(), a worker runs one task and a user thread runs another
    inline in a wait: in the child both fail with RuntimeError (their threads
    are gone). The forking thread's own task (os.fork() called inside a task
    that the main thread runs inline) finishes normally in the child."""
    proc = run(
        """
        fw.set_num_interop_threads(1)
        gate = threading.Event()
        in_worker = fw.fork(gate.wait, 60)
        while not in_worker.running():
            time.sleep(0.001)
        started = threading.Event()
        box = {}

        def inline_user():
            box["f"] = fw.fork(lambda: (started.set(), gate.wait(60))[1])
            fw.wait(box["f"])  # the only worker is busy: runs it inline here

        t = threading.Thread(target=inline_user)
        t.start()
        assert started.wait(30)

        def forking_task():
            pid = os.fork()
            if pid == 0:
                return "child-side"
            return pid

        value = fw.wait(fw.fork(forking_task))  # runs inline in the main thread
        if value == "child-side":
            errs = [f.exception(timeout=30) for f in (in_worker, box["f"])]
            ok = all(isinstance(e, RuntimeError) and "os.fork()" in str(e) for e in errs)
            ok = ok and fib(10) == 55 and pool._stats()["running"] == 0
            print("child ok" if ok else f"child bad {errs!r}", flush=True)
            os._exit(0 if ok else 1)
        code = reap(value)
        gate.set()
        t.join(30)
        print("parent", in_worker.wait(), box["f"].wait(), "child exit", code)
        """
    )
    assert proc.stdout.split() == [
        "child", "ok", "parent", "True", "True", "child", "exit", "0"
    ], proc.stdout + proc.stderr


# ---------------------------------------------------------------- exit


def test_exit_runs_queued_fork_trees_to_the_end():
    """Documented: queued tasks run at exit, and a task that runs then may
    still fork and wait on children; nothing is lost, nothing hangs."""
    proc = run(
        """
        fw.set_num_interop_threads(1)

        def tree(tag, depth):
            if depth == 0:
                print("leaf", tag, flush=True)
                return 1
            kids = [fw.fork(tree, f"{tag}{k}", depth - 1) for k in range(2)]
            return sum(fw.wait_all(kids))

        def root(r):
            time.sleep(0.05)  # the main thread has ended by now
            print("root", r, tree(str(r), 5), flush=True)

        for r in range(4):
            fw.fork(root, r)
        print("main done", flush=True)
        """
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "main done"
    assert sorted(x for x in lines if x.startswith("root")) == [f"root {r} 32" for r in range(4)]
    assert len([x for x in lines if x.startswith("leaf")]) == 4 * 32
    assert proc.stderr == ""


def test_fork_while_draining_only_from_tasks():
    """While the pool drains at exit, a running task may fork; a plain thread
    gets RuntimeError with a clear message; afterwards everything does."""
    proc = run(
        """
        import atexit
        fw.set_num_interop_threads(1)

        def late_task():
            while pool._stats()["state"] != "draining":
                time.sleep(0.005)
            say("task forks", fw.wait(fw.fork(abs, -7)))

        def plain_thread():
            while pool._stats()["state"] == "running":
                time.sleep(0.005)
            try:
                fw.fork(abs, 1)
            except RuntimeError as exc:
                say("thread refused:", exc)

        def after_exit():
            try:
                fw.fork(abs, 1)
            except RuntimeError:
                say("atexit refused", pool._stats()["state"])

        atexit.register(after_exit)
        fw.fork(late_task)
        threading.Thread(target=plain_thread).start()
        """
    )
    out = proc.stdout
    assert "task forks 7" in out
    assert "thread refused: forkwait's inter-op pool has shut down" in out
    assert "atexit refused closed" in out
    assert proc.stderr == ""


@needs_fork
def test_child_exit_drains_the_queue_it_inherited():
    """The child of os.fork() that exits normally (no os._exit) runs the
    tasks that were queued in the parent: queued work is never dropped."""
    proc = run(
        """
        fw.set_num_interop_threads(1)
        gate = threading.Event()
        busy = fw.fork(gate.wait, 60)
        while not busy.running():
            time.sleep(0.001)
        queued = [fw.fork(os.write, 1, f"queued {i}\\n".encode()) for i in range(3)]
        pid = os.fork()
        if pid == 0:
            say("child ends")  # one write: the queued tasks run meanwhile
            sys.exit(0)
        code = reap(pid)
        gate.set()
        fw.wait_all(queued)
        print("child exit", code)
        """
    )
    lines = proc.stdout.splitlines()
    assert lines.count("child ends") == 1 and lines[-1] == "child exit 0"
    # three from the child (at its exit), three from the parent
    assert sorted(x for x in lines if x.startswith("queued")) == sorted(
        [f"queued {i}" for i in range(3)] * 2
    )


def test_exit_with_a_deep_blocked_daemon_thread_does_not_hang():
    """A daemon thread blocked forever deep in a fork chain, so that spare
    threads ran its chain: spares are daemon threads and the interpreter
    exits. (The one worker is kept busy until exit so that the chain runs in
    the daemon thread and the spares only; a task that never ends in a
    worker keeps the interpreter alive, as with concurrent.futures.)"""
    proc = run(
        """
        never = fw.Future()
        fw.set_num_interop_threads(1)
        gate = threading.Event()
        busy = fw.fork(gate.wait, 60)
        while not busy.running():
            time.sleep(0.001)
        threading._register_atexit(gate.set)

        bottom = threading.Event()

        def chain(k):
            if k == 0:
                bottom.set()
                return never.wait()
            return fw.wait(fw.fork(chain, k - 1))

        threading.Thread(target=chain, args=(2500,), daemon=True).start()
        assert bottom.wait(60)  # the whole chain is blocked: nothing queued
        print("blocked", pool._stats()["blocked_deep"] >= 3, pool._stats()["spares"] >= 3,
              pool._stats()["queued"], flush=True)
        """
    )
    assert proc.stdout.split() == ["blocked", "True", "True", "0"]


# ---------------------------------------------------------------- Ctrl-C


CTRL_C_SCRIPT = """
fw.set_num_interop_threads(2)

def phase(name):
    print(name, flush=True)

gate = threading.Event()
long_task = fw.fork(gate.wait, 120)
other = fw.fork(gate.wait, 120)
while not (long_task.running() and other.running()):
    time.sleep(0.001)

# 1: wait() on a long task that runs in a worker
try:
    phase("wait")
    fw.wait(long_task)
    phase("not interrupted")
except KeyboardInterrupt:
    phase("interrupted wait")

# 2: the main thread helps while it waits (it runs a task of the subtree of
# the future it waits on) and is interrupted inside that task
fw.set_num_interop_threads(3)
inner_gate = threading.Event()
box = {}

def inner():
    phase("helping")
    inner_gate.wait(120)

def outer():
    box["inner"] = fw.fork(inner)  # queued on this worker's deque
    gate.wait(120)
    return True

helper_target = fw.fork(outer)
while not (helper_target.running() and "inner" in box):
    time.sleep(0.001)
try:
    fw.wait(helper_target)
    phase("not interrupted")
except KeyboardInterrupt:
    phase("interrupted helping")
assert isinstance(box["inner"].exception(timeout=30), KeyboardInterrupt)

# 3: result() with a timeout
try:
    phase("result")
    long_task.result(timeout=120)
    phase("not interrupted")
except KeyboardInterrupt:
    phase("interrupted result")

# 4: a wait too deep to help (a spare thread runs meanwhile)
def deep(k):
    if k == 0:
        return fw.wait(long_task)
    return deep(k - 1)

def kill_when_blocked():
    while pool._stats()["blocked_deep"] == 0:
        time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=kill_when_blocked).start()
try:
    deep(int(sys.getrecursionlimit() * 0.85))
    phase("not interrupted")
except KeyboardInterrupt:
    phase("interrupted deep")

gate.set()
print("usable", fw.wait(long_task), fw.wait(other) and fw.wait(helper_target), fib(12),
      pool._stats()["blocked_deep"], flush=True)
"""


def test_ctrl_c_interrupts_every_kind_of_wait_and_pool_stays_usable():
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + CTRL_C_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            line = line.strip()
            seen.append(line)
            if line in ("wait", "helping", "result"):
                time.sleep(0.2)  # let it reach the blocking call (not asserted)
                proc.send_signal(signal.SIGINT)
            if line.startswith("usable") or line == "not interrupted":
                break
        proc.wait(TIMEOUT)
    finally:
        proc.kill()
        err = proc.stderr.read()
    assert seen == [
        "wait", "interrupted wait", "helping", "interrupted helping", "result",
        "interrupted result", "interrupted deep", "usable True True 144 0",
    ], err


# ---------------------------------------------------------------- BaseException


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
    proc = run(
        """
        fw.set_num_interop_threads(1)
        f = fw.fork(sys.exit, 4)
        print("exception", repr(f.exception(timeout=30)), flush=True)
        print("still here", fib(10))
        """
    )
    assert proc.stdout.split() == ["exception", "SystemExit(4)", "still", "here", "55"]


def test_fork_after_shutdown_message():
    proc = run(
        """
        import atexit
        fw.wait(fw.fork(abs, 1))
        def late():
            try:
                fw.fork(abs, 1)
            except RuntimeError as exc:
                print(exc)
        atexit.register(late)
        """
    )
    assert "shut down (the interpreter is exiting); fork() is not possible" in proc.stdout


# ---------------------------------------------------------------- deep trees


def chain(k):
    return 0 if k == 0 else 1 + fw.wait(fw.fork(chain, k - 1))


def _spares_gone():
    for _ in range(TIMEOUT * 100):
        if pool._stats()["spares"] == 0:
            return True
        time.sleep(0.01)
    return False


def test_chain_deeper_than_the_recursion_limit(interop):
    interop(1)
    depth = 3 * sys.getrecursionlimit()
    before = pool._stats()["spares_started"]
    assert chain(depth) == depth
    assert pool._stats()["spares_started"] > before  # compensation did happen
    assert _spares_gone()
    assert pool._stats()["blocked_deep"] == 0


@pytest.mark.slow
def test_fork_tree_of_100k_tasks_deeper_than_1000(interop):
    """A spine of depth 1,100; every spine node also forks 90 leaves; one
    inter-op thread. 100,100 tasks complete, no RecursionError, spares retire."""
    interop(1)
    depth, leaves = 1100, 90
    threads_before = threading.active_count()
    done0 = pool._stats()["completed"]

    def leaf(i):
        return i

    def spine(k):
        kids = [fw.fork(leaf, i) for i in range(leaves)]
        rest = fw.fork(spine, k - 1) if k > 1 else None
        total = sum(fw.wait_all(kids)) + (fw.wait(rest) if rest is not None else 0)
        return total

    assert fw.wait(fw.fork(spine, depth)) == depth * sum(range(leaves))
    assert pool._stats()["completed"] - done0 == depth * (leaves + 1)
    assert _spares_gone()
    assert threading.active_count() <= threads_before  # no thread left behind


def test_deep_chains_with_other_limits():
    """The margin follows sys.getrecursionlimit() and the C stack: a raised
    limit does not overflow the C stack; small thread stacks still work."""
    proc = run(
        """
        sys.setrecursionlimit(20000)
        fw.set_num_interop_threads(1)
        def chain(k):
            return 0 if k == 0 else 1 + fw.wait(fw.fork(chain, k - 1))
        print("raised", chain(8000), flush=True)
        sys.setrecursionlimit(300)
        print("lowered", chain(2000), flush=True)
        sys.setrecursionlimit(1000)
        threading.stack_size(256 * 1024)
        box = []
        t = threading.Thread(target=lambda: box.append(chain(2000)))
        t.start()
        t.join()
        print("small stacks", box[0], pool._stats()["blocked_deep"])
        """
    )
    assert proc.stdout.split() == ["raised", "8000", "lowered", "2000", "small", "stacks",
                                   "2000", "0"]


def test_deep_waits_from_many_threads(interop):
    interop(2)
    results, errors = [], []

    def client(k):
        try:
            results.append(chain(1200 + k))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert not errors
    assert sorted(results) == [1200 + k for k in range(4)]
    assert _spares_gone()
