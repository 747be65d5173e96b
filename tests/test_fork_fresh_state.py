"""State a process makes for itself, with no at-fork handler of its own: after
os.fork(), the child's Dask keys have a base of their own."""

import json
import os

import pytest

from forkwait._dask import _submit

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")


def in_fork_child(fn):
    """fn() in a child made by os.fork(); what it returned (a str), sent
    back through a pipe. The child leaves with os._exit: 0, or 1 if fn raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(r)
            os.write(w, fn().encode())
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
    return out


@needs_fork
def test_a_fork_child_makes_dask_keys_of_its_own():
    parent = _submit._key_base()
    assert _submit._key_base() is parent  # kept for the life of the process
    first = _submit._key_suffix()
    assert first.startswith(parent.base) and len(first) == 32

    def child():
        keys = _submit._key_base()
        return json.dumps([keys.pid, keys.base, _submit._key_suffix()])

    pid, base, suffix = json.loads(in_fork_child(child))
    assert pid != os.getpid()
    assert base != parent.base and suffix.startswith(base) and len(suffix) == 32
    # the parent keeps its own base and count
    assert _submit._key_base() is parent
    assert _submit._key_suffix() == f"{parent.base}{int(first[24:], 16) + 1:08x}"
