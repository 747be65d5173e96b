import os
import subprocess
import sys
import textwrap

import pytest

import forkwait as fw


@pytest.fixture
def interop():
    """Set the inter-op pool size for one test; restore it afterwards."""
    saved = fw.get_num_interop_threads()
    yield fw.set_num_interop_threads
    fw.set_num_interop_threads(saved)


@pytest.fixture
def intra():
    """Set the intra-op team size for one test; restore it afterwards."""
    saved = fw.get_num_threads()
    yield fw.set_num_threads
    fw.set_num_threads(saved)


def run_python(code, env=None, timeout=60, check=True, **kwargs):
    """Run `code` in a fresh interpreter; return the CompletedProcess."""
    full_env = dict(os.environ)
    for name in (
        "FORKWAIT_NUM_THREADS", "FORKWAIT_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
        "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FORKWAIT_INTRA_OP_MODE",
    ):
        full_env.pop(name, None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
