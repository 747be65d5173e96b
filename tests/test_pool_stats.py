"""The pool's task counts (pool._stats()): completed, running and queued add
up after fork trees and across Python threads that come and go (each thread
keeps its own share and hands it over when it ends).

The counts in an os.fork() child: test_fork_child.py.
"""

import threading
import time

import forkwait as fw
from forkwait._native import pool


def test_stats_count_steals_and_helps(interop):
    interop(2)
    before = pool._stats()

    def fib(n):
        if n < 2:
            return n
        a, b = fw.fork(fib, n - 1), fw.fork(fib, n - 2)
        return fw.wait(a) + fw.wait(b)

    assert fw.wait(fw.fork(fib, 14)) == 377
    after = pool._stats()
    assert after["completed"] - before["completed"] >= 1000
    assert after["running"] == 0 and after["queued"] == 0


def test_task_counts_add_up_across_threads_that_come_and_go():
    # Each thread keeps its own share of the running/completed counts (no
    # locked instruction per task); a thread that ends hands its share over.
    before = pool._stats()["completed"]

    def burst(k):
        for _ in range(k):
            fw.wait(fw.fork(abs, -1))
        fw.wait_all([fw.fork(abs, -2) for _ in range(k)])

    threads = [threading.Thread(target=burst, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    burst(25)
    cancelled = fw.Future()  # hand-made futures are not tasks: not counted
    cancelled.cancel()
    deadline = time.monotonic() + 10
    while pool._stats()["running"] != 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    stats = pool._stats()
    assert stats["running"] == 0
    assert stats["completed"] - before == 4 * 100 + 50
