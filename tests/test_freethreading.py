"""Free-threaded CPython (PEP 703, "3.13t", the GIL off): importing any public
module of forkwait leaves the GIL off, and the suite runs there (`.ci/run`
runs it on 3.13t too; docs/freethreading.md).

On a GIL build these checks run in a free-threaded interpreter when one is
found (FORKWAIT_FT_PYTHON, or /opt/py313t/bin/python3.13t) and forkwait is
built for it in this tree; otherwise they skip and say how to get one.
"""

import os
import pathlib
import sys

import pytest
from _child import run_python

import forkwait

ROOT = pathlib.Path(__file__).resolve().parent.parent
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
HOW = (
    "no free-threaded CPython here: build one with "
    "`scripts/build-freethreaded-python.sh` (CPython 3.13 with --disable-gil into "
    "/opt/py313t, about 6 minutes), then `/opt/py313t/bin/python3.13t -m venv .venv-ft && "
    ".venv-ft/bin/pip install --prefer-binary -e '.[test]'` and run the suite with "
    "`.venv-ft/bin/python -m pytest` (or set FORKWAIT_FT_PYTHON to such an interpreter)"
)

# every public module: the package, its subpackages, and what they hand on
PUBLIC = ["forkwait", "forkwait.ops", "forkwait.cli", "forkwait._dask"] + sorted(
    f"forkwait._native.{p.name.split('.')[0]}"
    for p in (ROOT / "forkwait" / "_native").glob("*.so")
    if "cpython" in p.name
)

CHECK = f"""
import importlib, sys, warnings
# "The global interpreter lock (GIL) has been enabled ..." is a RuntimeWarning
warnings.simplefilter("error", RuntimeWarning)
assert not sys._is_gil_enabled(), "the GIL is on before forkwait"
for name in {sorted(set(PUBLIC))!r}:
    importlib.import_module(name)
    assert not sys._is_gil_enabled(), f"importing {{name}} turned the GIL on"
import forkwait as fw
assert fw.wait_all([fw.fork(abs, -i) for i in range(10)]) == list(range(10))
assert not sys._is_gil_enabled()
print("gil off")
"""


def _ft_python():
    """A free-threaded interpreter that can import forkwait from this tree."""
    if FREE_THREADED:
        return sys.executable
    found = [p for p in (os.environ.get("FORKWAIT_FT_PYTHON"), str(ROOT / ".venv-ft/bin/python"))
             if p and os.path.exists(p)]
    if not found:
        pytest.skip(HOW)
    exe = found[0]
    if not list((ROOT / "forkwait" / "_native").glob("pool.cpython-313t-*.so")):
        pytest.skip(f"forkwait is not built for {exe} in this tree: {HOW}")
    if run_python("import numpy", executable=exe, check=False).returncode != 0:
        pytest.skip(f"{exe} has no NumPy: {HOW}")
    return exe


def test_the_gil_stays_off_after_importing_every_public_module():
    exe = _ft_python()
    env = {"PYTHONPATH": str(ROOT)} if exe != sys.executable else {}
    env["PYTHON_GIL"] = ""  # (unset: the interpreter's own default, off)
    proc = run_python(CHECK, executable=exe, env=env)
    assert proc.stdout.strip() == "gil off", proc.stdout + proc.stderr


def test_this_interpreter_says_what_it_is():
    # (so that a CI log shows which leg ran: "gil" or "free-threaded")
    kind = "free-threaded" if FREE_THREADED else "gil"
    print(f"\n{sys.version} -> {kind}")
    assert forkwait.wait(forkwait.fork(abs, -1)) == 1
