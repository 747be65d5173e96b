"""The inter-op pool's threads: started lazily and named, resized at any time
(while tasks run, shrunk and grown back at once, from another thread while
forks go on), and the spare threads that keep deep nesting going: fork
chains and trees deeper than the recursion limit, with one worker, from many
threads, with other recursion limits and small thread stacks; spares retire
afterwards.
"""

import sys
import threading
import time

import pytest
from _child import run_python
from _pool_helpers import TIMEOUT, chain, fib, until

import forkwait as fw
from forkwait._native import pool

# -- start and resize ------------------------------------------------------------------


def test_pool_starts_lazily_with_named_threads():
    out = run_python(
        """
        import threading
        import forkwait as fw
        def names():
            return sorted(t.name for t in threading.enumerate() if t.name.startswith("forkwait"))
        print(names())
        fw.set_num_interop_threads(3)
        print(names())
        fw.wait(fw.fork(abs, 1))
        print(names())
        """
    ).stdout.splitlines()
    assert out[0] == "[]" and out[1] == "[]"
    assert out[2] == str([f"forkwait-interop-{i}" for i in range(3)])


def _interop_threads():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("forkwait-interop-"))


def test_resize_after_work_started(interop):
    interop(2)
    fw.wait(fw.fork(abs, 1))
    interop(4)  # grows at once
    assert until(lambda: len(_interop_threads()) == 4)
    assert _interop_threads() == [f"forkwait-interop-{i}" for i in range(4)]
    # shrinking lets a busy worker finish its task first
    gate = threading.Event()
    busy = [fw.fork(gate.wait, TIMEOUT) for _ in range(4)]
    assert until(lambda: all(f.running() for f in busy))
    interop(1)
    assert fw.get_num_interop_threads() == 1
    assert not any(f.done() for f in busy)
    gate.set()
    assert fw.wait_all(busy) == [True] * 4
    assert until(lambda: _interop_threads() == ["forkwait-interop-0"])
    assert fw.wait(fw.fork(fib, 12)) == 144


def test_shrink_then_grow_at_once_keeps_every_worker(interop):
    """A worker that is leaving after a shrink, when the pool grows back
    before it is gone, stays (the resize saw it alive and started none): the
    pool keeps its target's workers, not one short for good."""
    interop(2)
    fw.wait_all([fw.fork(abs, 1) for _ in range(4)])  # the pool runs
    assert until(lambda: fw._native.pool._stats()["workers"] == 2)
    for i in range(200):
        interop(1)
        # hold the GIL a moment: worker 1 sees the shrink and, leaving, waits
        # for the GIL while this thread grows the pool back
        t_end = time.perf_counter() + 0.0005 * (1 + i % 4)
        while time.perf_counter() < t_end:
            pass
        interop(2)
        time.sleep(0.003)  # the GIL: a leaving worker would be gone now
        assert fw._native.pool._stats()["workers"] == 2, f"a worker lost in round {i}"
    assert _interop_threads() == ["forkwait-interop-0", "forkwait-interop-1"]


def test_concurrent_resizes_and_forks(interop):
    stop = threading.Event()

    def resizer():
        k = 0
        while not stop.is_set():
            fw.set_num_interop_threads(1 + k % 4)
            fw.set_num_threads(1 + k % 3)
            k += 1
            time.sleep(0.001)

    t = threading.Thread(target=resizer)
    t.start()
    try:
        for _ in range(20):
            assert fw.wait_all([fw.fork(fib, 8) for _ in range(20)]) == [21] * 20
    finally:
        stop.set()
        t.join()
        fw.set_num_threads(fw._threads.available_cpus())


# -- spares: nesting deeper than the recursion limit -----------------------------------


def _spares_gone():
    """True once every spare thread has retired (within a minute)."""
    return until(lambda: pool._stats()["spares"] == 0, 60)


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
    proc = run_python(
        """
        sys.setrecursionlimit(20000)
        fw.set_num_interop_threads(1)
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
        """,
        prelude=True,
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
        t.join(120)
    assert not errors
    assert sorted(results) == [1200 + k for k in range(4)]
    assert _spares_gone()
