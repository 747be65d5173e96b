"""The end of the process (DESIGN.md rule 6): interpreter exit runs every
queued task (fork trees too) and hangs on no blocked daemon thread; fork()
while the pool drains and after it has shut down; Ctrl-C interrupts every
kind of wait and leaves the pool usable.

Each test runs in a fresh interpreter (tests/_child.py). Nothing asserts a
duration: a timeout only turns a hang into a failure.
"""

import signal
import time

from _child import run_python, start_python

# -- interpreter exit ------------------------------------------------------------------


def test_exit_with_queued_and_running_tasks_runs_them():
    """Documented: at interpreter exit the queued tasks still run (as with
    concurrent.futures); nothing hangs and no output is lost."""
    proc = run_python(
        """
        import time
        import forkwait as fw
        fw.set_num_interop_threads(1)
        def slow(i):
            time.sleep(0.05)
            print("task", i, flush=True)
        for i in range(6):
            fw.fork(slow, i)
        print("main done", flush=True)
        """
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "main done"
    assert sorted(lines[1:]) == [f"task {i}" for i in range(6)]
    assert proc.stderr == ""


def test_failures_still_referenced_at_exit_are_reported_once_each():
    """Futures that failed, still referenced when the script ends (a
    module-level list nobody waited on), die while the interpreter tears its
    modules down, after logging has shut down: each is reported on stderr,
    once, with its traceback, and nothing of forkwait's own goes wrong."""
    proc = run_python(
        """
        import time
        import forkwait as fw
        def boom(i):
            raise ValueError(f"task {i} failed and nobody looked")
        fs = [fw.fork(boom, i) for i in range(5)]
        time.sleep(0.1)
        """
    )
    err = proc.stderr
    assert err.count("nobody retrieved its exception") == 5, err
    assert sorted(f"task {i} failed and nobody looked" in err for i in range(5)) == [True] * 5
    assert "Exception ignored" not in err and "TypeError" not in err, err


def test_a_failure_collected_before_exit_goes_to_logging():
    """One that died while logging is still up (here: before the exit
    starts) is an ERROR record of the forkwait logger, as documented."""
    proc = run_python(
        """
        import gc, logging, sys, time
        import forkwait as fw
        logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
        f = fw.fork(int, "x")
        while not f.done():
            time.sleep(0.01)
        del f
        gc.collect()
        """
    )
    assert "ERROR forkwait forkwait: a future failed and nobody retrieved" in proc.stdout, (
        proc.stdout + proc.stderr)
    assert "Exception ignored" not in proc.stderr


def test_exit_runs_queued_fork_trees_to_the_end():
    """Documented: queued tasks run at exit, and a task that runs then may
    still fork and wait on children; nothing is lost, nothing hangs."""
    proc = run_python(
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
        """,
        prelude=True,
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "main done"
    assert sorted(x for x in lines if x.startswith("root")) == [f"root {r} 32" for r in range(4)]
    assert len([x for x in lines if x.startswith("leaf")]) == 4 * 32
    assert proc.stderr == ""


def test_exit_with_a_deep_blocked_daemon_thread_does_not_hang():
    """A daemon thread blocked forever deep in a fork chain, so that spare
    threads ran its chain: spares are daemon threads and the interpreter
    exits. (The one worker is kept busy until exit so that the chain runs in
    the daemon thread and the spares only; a task that never ends in a
    worker keeps the interpreter alive, as with concurrent.futures.)"""
    proc = run_python(
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
        """,
        prelude=True,
    )
    assert proc.stdout.split() == ["blocked", "True", "True", "0"]


def test_daemon_thread_blocked_in_wait_does_not_take_queued_tasks_at_exit():
    """At exit, a daemon thread blocked in wait() never takes another
    thread's queued task, so exit runs every queued task."""
    proc = run_python(
        """
        import threading, time
        import forkwait as fw
        fw.set_num_interop_threads(1)
        never = fw.Future()
        gate = threading.Event()
        busy = fw.fork(gate.wait, 30)
        while not busy.running():
            time.sleep(0.001)

        def daemon():
            inner = fw.fork(never.wait)   # queued behind `busy`
            fw.wait(inner)                # runs it inline: blocks forever

        threading.Thread(target=daemon, daemon=True).start()
        time.sleep(0.1)
        queued = [fw.fork(print, "ran", i, flush=True) for i in range(3)]
        threading._register_atexit(gate.set)
        print("main ends", flush=True)
        """,
        timeout=60,
    )
    lines = proc.stdout.split("\n")
    assert lines[0] == "main ends"
    assert sorted(lines[1:4]) == ["ran 0", "ran 1", "ran 2"]


# -- fork() during and after shutdown --------------------------------------------------


def test_fork_while_draining_only_from_tasks():
    """While the pool drains at exit, a running task may fork; a plain thread
    gets RuntimeError with a clear message; afterwards everything does."""
    proc = run_python(
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
        """,
        prelude=True,
    )
    out = proc.stdout
    assert "task forks 7" in out
    assert "thread refused: forkwait's inter-op pool has shut down" in out
    assert "atexit refused closed" in out
    assert proc.stderr == ""


def test_fork_after_shutdown_message():
    proc = run_python(
        """
        import atexit
        fw.wait(fw.fork(abs, 1))
        def late():
            try:
                fw.fork(abs, 1)
            except RuntimeError as exc:
                print(exc)
        atexit.register(late)
        """,
        prelude=True,
    )
    assert "shut down (the interpreter is exiting); fork() is not possible" in proc.stdout


# -- Ctrl-C ----------------------------------------------------------------------------


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
    proc = start_python(CTRL_C_SCRIPT, prelude=True)
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
        proc.wait(60)
    finally:
        proc.kill()
        err = proc.stderr.read()
    assert seen == [
        "wait", "interrupted wait", "helping", "interrupted helping", "result",
        "interrupted result", "interrupted deep", "usable True True 144 0",
    ], err
