"""os.fork() and multiprocessing children of a process that used forkwait
(DESIGN.md rule 6): the child's pool works (fork trees, every kind of wait,
kernels), tasks queued at the fork run in the child, tasks that other threads
were running fail there with a clear error, GCC bug 60035 (a child of a
thread that ran an OpenMP team) is avoided, the task counts stay right, and
the parent never deadlocks in os.fork() while the pool, logging and imports
churn.

Each test runs its scenario in a fresh interpreter (tests/_child.py); the
BLAS limiter's state in a fork child: test_blas_budget.py and
test_matmul_*.py.
"""

import pytest
from _child import needs_fork, run_python

from forkwait._native import _team

# -- the child's pool ------------------------------------------------------------------


@needs_fork
def test_child_of_os_fork_has_a_working_pool():
    proc = run_python(
        """
        print("parent", fib(12), flush=True)
        pid = os.fork()
        if pid == 0:
            values = fw.wait_all([fw.fork(abs, -i) for i in range(50)])
            ok = fib(12) == 144 and values == list(range(50))
            os._exit(0 if ok else 1)
        print("child exit", reap(pid))
        """,
        prelude=True,
    )
    assert proc.stdout.split() == ["parent", "144", "child", "exit", "0"]


@needs_fork
def test_child_after_pool_and_kernels_in_workers_runs_parallel_kernels():
    """The parent ran fork/wait and OpenMP teams in pool workers only (never in
    the forking thread): the child's main thread may run teams."""
    proc = run_python(
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
        prelude=True,
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
    proc = run_python(
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
        """,
        prelude=True,
    )
    out = proc.stdout.split()
    assert out == ["parent", "55", "child", "1", "2", "child", "exit", "0",
                   "parent", "after", "2", "False"], proc.stdout + proc.stderr


@needs_fork
def test_task_counts_in_an_os_fork_child():
    proc = run_python(
        """
        gate = threading.Event()
        held = fw.fork(gate.wait, 30)
        while not held.running():
            pass
        done_before = pool._stats()["completed"]
        pid = os.fork()
        if pid == 0:
            # the task running at the fork failed in the child (its thread is
            # gone there): one completed, none running; new ones count on
            ok = held.done() and pool._stats()["running"] == 0
            ok = ok and pool._stats()["completed"] == done_before + 1
            fw.wait_all([fw.fork(abs, -i) for i in range(10)])
            ok = ok and pool._stats()["completed"] == done_before + 11
            ok = ok and pool._stats()["running"] == 0
            os._exit(0 if ok else 1)
        code = reap(pid)
        gate.set()
        fw.wait(held)
        print("child", code, flush=True)
        """,
        prelude=True,
    )
    assert "child 0" in proc.stdout, proc.stdout + proc.stderr


# -- tasks at the fork -----------------------------------------------------------------


@needs_fork
def test_fork_child_runs_queued_tasks_for_every_kind_of_wait():
    """Tasks queued at the fork run in the child for result(timeout), await
    and callbacks, not only for a plain wait()."""
    proc = run_python(
        """
        import asyncio
        fw.set_num_interop_threads(1)
        gate = threading.Event()
        busy = fw.fork(gate.wait, 30)
        while not busy.running():
            time.sleep(0.001)
        queued = [fw.fork(sum, [1, 2, 3]) for _ in range(3)]
        pid = os.fork()
        if pid == 0:
            got = [queued[0].result(timeout=20)]
            async def main():
                return await queued[1]
            got.append(asyncio.run(main()))
            seen = threading.Event()
            queued[2].add_done_callback(lambda f: seen.set())
            got.append(seen.wait(20) and queued[2].value())
            print("child", got, flush=True)
            os._exit(0)
        reap(pid)
        gate.set()
        print("parent", fw.wait_all(queued))
        """,
        prelude=True,
    )
    assert proc.stdout.split("\n")[:2] == ["child [6, 6, 6]", "parent [6, 6, 6]"]


@needs_fork
def test_os_fork_child_runs_the_ones_queued_at_the_fork():
    """GIL-free tasks (forked ops.matmul) queued at the fork run in the child."""
    code = """
    import numpy as np
    from forkwait import ops
    fw.set_num_interop_threads(1)
    gate = threading.Event(); started = threading.Event()
    def block():
        started.set(); gate.wait(30)
    blocker = fw.fork(block)
    started.wait(30)
    a = np.arange(16.0).reshape(4, 4)
    queued = [fw.fork(ops.matmul, a, a) for _ in range(5)]
    pid = os.fork()
    if pid == 0:
        ok = all(np.array_equal(f.result(timeout=30), a @ a) for f in queued)
        os._exit(0 if ok else 3)
    gate.set()
    print("child", reap(pid))
    print("parent", all(np.array_equal(f.result(timeout=30), a @ a) for f in queued))
    """
    proc = run_python(code, prelude=True)
    assert "child 0" in proc.stdout and "parent True" in proc.stdout, proc.stdout


@needs_fork
def test_child_exit_drains_the_queue_it_inherited():
    """The child of os.fork() that exits normally (no os._exit) runs the
    tasks that were queued in the parent: queued work is never dropped."""
    proc = run_python(
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
        """,
        prelude=True,
    )
    lines = proc.stdout.splitlines()
    assert lines.count("child ends") == 1 and lines[-1] == "child exit 0"
    # three from the child (at its exit), three from the parent
    assert sorted(x for x in lines if x.startswith("queued")) == sorted(
        [f"queued {i}" for i in range(3)] * 2
    )


@needs_fork
def test_child_fails_tasks_other_threads_were_running_and_keeps_its_own():
    """At os.fork(), a worker runs one task and a user thread runs another
    inline in a wait: in the child both fail with RuntimeError (their threads
    are gone). The forking thread's own task (os.fork() called inside a task
    that the main thread runs inline) finishes normally in the child."""
    proc = run_python(
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
        """,
        prelude=True,
    )
    assert proc.stdout.split() == [
        "child", "ok", "parent", "True", "True", "child", "exit", "0"
    ], proc.stdout + proc.stderr


# -- multiprocessing -------------------------------------------------------------------


@needs_fork
def test_multiprocessing_fork_children_fork_wait_and_run_kernels():
    proc = run_python(
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
        """,
        prelude=True,
    )
    assert proc.stdout.split() == ["parent", "89", "2", "children", "[0,", "0,", "0]", "True"]


@needs_fork
def test_multiprocessing_fork_start_method_with_busy_pool():
    proc = run_python(
        """
        import multiprocessing as mp, threading
        import forkwait as fw

        def work(q):
            q.put(fw.wait(fw.fork(sum, range(10))))

        stop = threading.Event()
        def churn():
            while not stop.is_set():
                fw.wait_all([fw.fork(abs, -i) for i in range(50)])
        threading.Thread(target=churn, daemon=True).start()
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=work, args=(q,)) for _ in range(60)]
        for p in procs:
            p.start()
        got = [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(60)
        stop.set()
        print("results", set(got), all(p.exitcode == 0 for p in procs))
        """,
        timeout=240,
    )
    assert proc.stdout.split() == ["results", "{45}", "True"]


# -- the parent never deadlocks --------------------------------------------------------


FORK_STRESS = """
import importlib, logging
fw.set_num_interop_threads(2)
stop = threading.Event()

def churn_loggers():
    i = 0
    while not stop.is_set():
        logging.getLogger(f"fw.test.{i % 500}")  # takes logging's lock (a before-fork step)
        i += 1

def churn_imports():
    while not stop.is_set():
        importlib.invalidate_caches()
        importlib.import_module("json.decoder")  # the import lock

def churn_pool():
    while not stop.is_set():
        fw.wait_all([fw.fork(sum, range(20)) for _ in range(20)])

threads = [threading.Thread(target=f, daemon=True)
           for f in (churn_loggers, churn_imports, churn_pool, churn_pool)]
for t in threads:
    t.start()
for i in range(N):
    pid = os.fork()
    if pid == 0:
        # The child's pool works: a fork tree and a timed wait.
        ok = fw.wait(fw.fork(sum, [1, 2, 3])) == 6
        ok = ok and fw.fork(abs, -4).result(timeout=20) == 4
        os._exit(0 if ok else 3)
    code = reap(pid)
    if code != 0:
        print("child failed", i, code, flush=True)
        sys.exit(1)
stop.set()
print("forks done", N, flush=True)
"""


@needs_fork
def test_os_fork_while_pool_loggers_and_imports_churn_never_deadlocks():
    """The parent never deadlocks in os.fork() (no forkwait lock is held
    across CPython's before-fork steps), and each child has a pool."""
    proc = run_python("N = 200\n" + FORK_STRESS, prelude=True, timeout=240)
    assert "forks done 200" in proc.stdout
