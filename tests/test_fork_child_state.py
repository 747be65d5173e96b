"""The pool's Python state in the child of os.fork(): each piece is reset
or kept as the list in forkwait/_native/_pool/atfork.pxi says."""

import concurrent.futures as cf
import os
import threading

import pytest

import forkwait as fw
from forkwait._native import pool

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")


def _in_child(body):
    """Run body() in an os.fork() child; its return value (a str) or the
    failure, read back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            out = body()
        except BaseException as exc:
            out = f"FAIL {type(exc).__name__}: {exc}"
        os.write(w, str(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return out


def test_cf_lock_held_by_another_thread_at_the_fork_is_free_in_the_child():
    # concurrent.futures.wait takes this lock as every future's _condition;
    # a parent thread holding it at the fork must not leave it held.
    held = threading.Event()
    release = threading.Event()

    def holder():
        with fw.Future()._condition:
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    try:
        def body():
            f = fw.fork(pow, 2, 5)
            done, _ = cf.wait([f], timeout=10)
            return f"{len(done)} {f.result()}"

        assert _in_child(body) == "1 32"
    finally:
        release.set()
        t.join(30)


def test_the_fork_hook_is_cleared_in_the_child_and_kept_in_the_parent():
    calls = []

    def hook(fn, args, kwargs):
        calls.append(fn)
        return None  # leave the fork to the local pool

    old = pool._set_fork_hook(hook)
    try:
        def body():
            return repr(pool._set_fork_hook(None))

        assert _in_child(body) == "None"
        fw.wait(fw.fork(abs, -1))
        assert calls == [abs]
    finally:
        pool._set_fork_hook(old)


def test_unretrieved_failures_of_the_parent_are_not_reported_by_the_child():
    # a failure collected, its report not yet made at the fork
    pool._defer_report_for_tests(ValueError("parent's"))
    try:
        assert _in_child(lambda: str(len(pool._unretrieved_pending()))) == "0"
        assert len(pool._unretrieved_pending()) == 1
    finally:
        pool._flush_unretrieved()
