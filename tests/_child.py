"""Running code in a child process, for the tests: a fresh interpreter
(``run_python``, ``start_python``, ``run_module``) or an ``os.fork()`` child
of this one (``in_fork_child``, ``reap``).

Every helper bounds the child's life: a child that hangs is killed and the
test fails, instead of the suite hanging. Nothing here measures a duration.

Child scripts may start with ``PRELUDE`` (``prelude=True``): it imports
``os, sys, signal, threading, time``, ``forkwait as fw``, ``_team`` and
``pool``, and the helpers ``chain``, ``fib``, ``on_worker`` (from ``_pool_helpers``),
``reap`` and ``say`` (from here), so that a script does not copy them.

This module imports neither pytest nor forkwait, so that child scripts can
import it.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT = 120  # seconds a child may live; only a hang comes near it
HAS_FORK = hasattr(os, "fork")
HUNG = -999  # reap()'s exit code for a child that was killed for hanging
TESTS = str(Path(__file__).resolve().parent)

# settings that a child must not inherit from the shell that runs the tests
_SETTINGS = (
    "FORKWAIT_NUM_THREADS", "FORKWAIT_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FORKWAIT_INTRA_OP_MODE",
)

PRELUDE = f"""\
import os, sys, signal, threading, time
sys.path.insert(0, {TESTS!r})
import forkwait as fw
from forkwait._native import _team, pool
from _child import reap, say
from _pool_helpers import chain, fib, on_worker
"""


def needs_fork(test):
    """Skip `test` where the platform has no os.fork()."""
    import pytest

    return pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")(test)


def clean_env(env: dict | None = None) -> dict:
    """This process's environment without forkwait's and OpenMP's settings,
    updated with `env`."""
    full = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    full.update(env or {})
    return full


def _command(code: str | None, module: str | None, argv, flags, prelude: bool,
             executable: str | None = None) -> list[str]:
    if (code is None) == (module is None):
        raise TypeError("give either code or module")
    exe = executable or sys.executable
    if module is not None:
        return [exe, *flags, "-m", module, *argv]
    code = textwrap.dedent(code)
    if prelude:
        code = PRELUDE + code
    return [exe, *flags, "-c", code, *argv]


def run_python(code: str | None = None, *, module: str | None = None, argv=(), flags=(),
               prelude: bool = False, env: dict | None = None, timeout: float = TIMEOUT,
               check: bool = True, executable: str | None = None,
               **kwargs: Any) -> subprocess.CompletedProcess:
    """Run `code` (dedented; after ``PRELUDE`` if `prelude`), or ``-m
    module``, in a fresh interpreter (this one, or `executable`) with
    ``clean_env(env)``, its output captured as text. `flags` go to the
    interpreter, `argv` to the program; `kwargs` to ``subprocess.run``
    (``cwd``, ...). With `check`, a non-zero exit fails with the output; a
    child still running after `timeout` seconds is killed
    (``subprocess.TimeoutExpired``)."""
    proc = subprocess.run(
        _command(code, module, argv, flags, prelude, executable),
        env=clean_env(env), capture_output=True, text=True, timeout=timeout, **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def run_module(module: str, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """``python -m module *argv`` as ``run_python`` runs it, unchecked: the
    caller reads the exit status."""
    kwargs.setdefault("check", False)
    return run_python(module=module, argv=argv, **kwargs)


def start_python(code: str | None = None, *, module: str | None = None, argv=(), flags=(),
                 prelude: bool = False, env: dict | None = None,
                 **kwargs: Any) -> subprocess.Popen:
    """As ``run_python``, but started and returned at once (stdout and
    stderr are pipes, text by default), for a test that talks to the child
    while it runs. The caller waits for it (with a timeout) and kills it."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    return subprocess.Popen(_command(code, module, argv, flags, prelude), env=clean_env(env),
                            **kwargs)


def reap(pid: int, timeout: float = TIMEOUT) -> int:
    """The exit code of the os.fork() child `pid` (as
    ``os.waitstatus_to_exitcode``); a child still alive after `timeout`
    seconds is killed, and the code is ``HUNG``."""
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(pause)
        pause = min(2 * pause, 0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return HUNG


def say(*words: object) -> None:
    """Print one line with one write (lines of several threads or of a
    parent and its child never interleave)."""
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


@dataclass
class Child:
    """What an os.fork() child of ``in_fork_child`` did: its exit code (0:
    `fn` returned, 1: it raised, ``HUNG``: killed), the value `fn` returned,
    or the traceback of what it raised."""

    exitcode: int
    value: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exitcode == 0


def in_fork_child(fn: Callable[..., Any], *args: Any, timeout: float = TIMEOUT) -> Child:
    """Call ``fn(*args)`` in an os.fork() child of this process and return
    a ``Child``. The child sends its value (pickled) or its traceback to
    the parent through a pipe and leaves with ``os._exit``: nothing of the
    parent's (pytest's at-exit work, buffered output) runs in it. A child
    still alive after `timeout` seconds is killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(r)
            try:
                payload = pickle.dumps((True, fn(*args)))
                code = 0
            except BaseException:  # noqa: BLE001 - sent to the parent
                payload = pickle.dumps((False, traceback.format_exc()))
            with os.fdopen(w, "wb") as out:
                out.write(payload)
        finally:
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + timeout
    data = b""
    with os.fdopen(r, "rb", buffering=0) as inp:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([inp], [], [], left)[0]:
                break  # hung: reap() kills it
            chunk = inp.read(1 << 16)
            if not chunk:
                break
            data += chunk
    code = reap(pid, max(0.0, deadline - time.monotonic()))
    if not data:
        return Child(code, error="the child sent nothing")
    returned, payload = pickle.loads(data)
    return Child(code, value=payload) if returned else Child(code, error=payload)
