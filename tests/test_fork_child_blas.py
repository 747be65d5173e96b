"""os.fork() and the BLAS libraries ops.matmul calls.

The child returns from os.fork() and multiplies whatever the parent's pool
was doing at the fork; forkwait calls nothing of OpenBLAS's inside fork();
the user's thread counts are back after the child's first matmul; a library
a forkwait thread was inside at the fork (a count change, a wide call) is
left alone in the child ("stranded": OpenBLAS's lock may be held there).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import numpy as np
import pytest

import forkwait as fw
from forkwait._native import _blas

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

USER = 3  # a BLAS count no default gives, so a restore is visible


def in_child(body, timeout=30.0):
    """body() in a child of os.fork(), its JSON result; None when the child
    has not exited after `timeout` seconds (it is killed: a hang, perhaps
    inside os.fork() itself, where no alarm can be set)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps(body()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return None
        time.sleep(0.005)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return json.loads(data)


@pytest.fixture
def user_blas(interop, intra):
    """Every BLAS library at USER threads (put back afterwards), a pool of 2
    and teams of 2."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _blas.blas_info()[0] not in _blas.BLAS_NAMES.values():
        pytest.skip("needs an OpenBLAS")
    interop(2)
    intra(2)
    with threadpoolctl.threadpool_limits(USER, user_api="blas"):
        yield


def counts_after(futs):
    """(In a child) wait for the inherited tasks (those queued at the fork
    run here; those other threads of the parent ran fail), then the records
    of the libraries as {"stranded": n, "wrong": [count of a library that is
    not stranded and not at the user's count]}."""
    for f in futs:
        try:
            f.wait()
        except RuntimeError:
            pass
    libs = _blas.libraries()
    return {
        "stranded": sum(lib["stranded"] for lib in libs),
        "wrong": [
            lib["num_threads"] for lib in libs if not lib["stranded"] and lib["num_threads"] != USER
        ],
    }


def test_children_forked_while_tasks_multiply_return_and_multiply(user_blas):
    """Many forks while forked tasks run matmuls (so worker threads pin and
    unpin the libraries at the fork): every child returns from os.fork(),
    multiplies right, and finds the user's counts after its first matmul."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256))
    ref = a @ a
    rnd = random.Random(1)
    for i in range(40):
        futs = [fw.fork(fw.ops.matmul, a, a) for _ in range(6)]
        time.sleep(rnd.random() * 0.01)

        def child(futs=futs):
            ok = bool(np.allclose(fw.ops.matmul(a, a), ref))
            return dict(counts_after(futs), ok=ok)

        got = in_child(child)
        assert got is not None, f"fork #{i}: the child hung"
        assert got["ok"], f"fork #{i}: wrong product in the child"
        assert got["wrong"] == [], f"fork #{i}: counts {got['wrong']}, not the user's {USER}"
        for r in fw.wait_all(futs):
            np.testing.assert_allclose(r, ref)
    assert all(lib["num_threads"] == USER for lib in _blas.libraries())


def test_nothing_runs_inside_fork_and_the_first_matmul_restores(user_blas):
    """A 1-thread pin held at the fork: inside os.fork() forkwait changes no
    count (the child starts with the count as the fork left it: 1), and the
    child's first matmul, however small, brings back the user's."""
    lib = _blas.blas_index()
    _blas._test_pin(lib, 1)
    try:
        changes = _blas.state()["changes"]

        def child():
            before = (_blas.state()["changes"], _blas.blas_info()[2])
            rec = [r for r in _blas.libraries() if r["path"] == _blas.blas_info()[1]][0]
            fw.ops.matmul(np.ones((2, 2)), np.ones((2, 2)))  # below any pin
            return {
                "before": before,
                "pinned": rec["pinned"],
                "user": rec["user_threads"],
                "stranded": rec["stranded"],
                "after": _blas.blas_info()[2],
            }

        got = in_child(child)
    finally:
        _blas._test_pin(lib, -1)
    assert got == {
        "before": [changes, 1],
        "pinned": 0,
        "user": USER,
        "stranded": False,
        "after": USER,
    }
    assert _blas.blas_info()[2] == USER


def test_the_table_in_a_child_drops_only_stranded_libraries(user_blas):
    """A wide pin held at the fork (a threaded call may be inside that
    library): the child calls nothing of it; its matmuls run on the other
    library, whose count is the user's, or on forkwait's own kernel."""
    names = [n for n, _, _ in _blas.blas_libraries()]
    idx = _blas.blas_indices()
    assert _blas._test_pin_wide(idx[0], 2) == 2
    a = np.random.default_rng(2).standard_normal((300, 300))
    ref = a @ a
    try:

        def child():
            ok = bool(np.allclose(fw.ops.matmul(a, a), ref))
            libs = {r["path"]: r for r in _blas.libraries()}
            return {
                "ok": ok,
                "table": [n for n, _, _ in _blas.blas_libraries()],
                "info": _blas.blas_info()[0],
                "first": [libs[p]["stranded"] for _, p, _ in _blas.blas_libraries()],
            }

        got = in_child(child)
    finally:
        _blas._test_unpin_wide(idx[0])
    assert got["ok"]
    assert got["table"] == names[1:]
    assert got["info"] == (names[1] if len(names) > 1 else "own")
    assert not any(got["first"])
    assert [c for _, _, c in _blas.blas_libraries()] == [USER] * len(names)
