"""Helpers of the pool's tests: fork trees, waiting for a state without
waiting on a future (a wait would run an unstarted task in the waiting
thread), and an exception to raise in tasks.

Every loop here is bounded by a timeout that only turns a hang into a
failure; nothing asserts a duration.
"""

from __future__ import annotations

import time

import forkwait as fw

TIMEOUT = 30  # seconds for a state that must come; a hang fails the test


def fib(n):
    """Fibonacci by a fork tree: each call forks two children and waits on both."""
    if n < 2:
        return n
    a, b = fw.fork(fib, n - 1), fw.fork(fib, n - 2)
    return fw.wait(a) + fw.wait(b)


def chain(k):
    """A chain of k forks, each waiting on the next: k nested waits."""
    return 0 if k == 0 else 1 + fw.wait(fw.fork(chain, k - 1))


def until(predicate, timeout=TIMEOUT):
    """Poll `predicate` until it is true; False if `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)


def wait_running(fut, timeout=TIMEOUT):
    """Return once `fut` runs (or is done) on some thread; fail after `timeout`."""
    if not until(lambda: fut.running() or fut.done(), timeout):
        raise AssertionError(f"task did not start: {fut!r}")


def wait_done(fut, timeout=TIMEOUT):
    """Return once `fut` is done, without waiting on it (nothing runs here)."""
    if not until(fut.done, timeout):
        raise AssertionError(f"task did not finish: {fut!r}")


def on_worker(fn, *args, timeout=TIMEOUT):
    """``fn(*args)`` on a pool worker, never in this thread: fork, poll
    until done, then read the value."""
    f = fw.fork(fn, *args)
    wait_done(f, timeout)
    return f.result(timeout=0)


def blocked(gate, interop, n=1):
    """A pool of `n` threads, each running a task blocked on `gate` (an
    Event), so that new forks stay queued; the blocking tasks."""
    interop(n)
    blockers = [fw.fork(gate.wait, TIMEOUT) for _ in range(n)]
    for b in blockers:
        wait_running(b)
    return blockers


class Boom(Exception):
    """An exception no library code raises."""


def raise_it(exc):
    raise exc
