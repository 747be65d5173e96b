"""The serial build (a compiler without OpenMP) builds and passes the tests.

DESIGN.md rule 5: where the compiler has no OpenMP the build still succeeds,
the kernels run on one thread, and ``parallel_info()`` says so. CI's compiler
has OpenMP, so this test makes the other case: it copies the source tree,
builds it there with ``FORKWAIT_DISABLE_OPENMP=1`` (setup.py's switch: the
same path as a failed OpenMP probe) and runs the kernels' and fork/wait's
tests against that copy in a fresh interpreter. It takes about a minute on
2 cores (the compile; Cython's C files are copied along, so Cython reruns
only where a .pyx changed since the last build).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# the tests run against the serial build: every kernel family, the argument
# checks, the thread settings (their OpenMP-only tests skip themselves there)
# and fork/wait
SERIAL_TESTS = [
    "tests/test_ops_elementwise.py",
    "tests/test_ops_reduce.py",
    "tests/test_ops_matmul.py",
    "tests/test_ops_inputs.py",
    "tests/test_ops_fastpath.py",
    "tests/test_ops_threads.py",
    "tests/test_fork.py",
    "tests/test_wait.py",
    "tests/test_wait_many.py",
    "tests/test_future.py",
    "tests/test_exceptions.py",
]

# switches that would change what is built or how the tests run
_DROP = (
    "FORKWAIT_FAIL_NO_OPENMP", "FORKWAIT_BUILD_ONLY", "FORKWAIT_DEBUG", "FORKWAIT_SANITIZE",
    "FORKWAIT_NATIVE", "FORKWAIT_CPU_VARIANT", "FORKWAIT_NUM_THREADS",
    "FORKWAIT_NUM_INTEROP_THREADS", "FORKWAIT_INTRA_OP_MODE", "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONPATH",
)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(extra)
    return env


def _copy_tree(dst: Path) -> None:
    """The sources (with Cython's generated C, modification times kept), no
    compiled modules: everything is built again."""
    junk = shutil.ignore_patterns("*.so", "*.pyd", "*.html", "__pycache__", "build")
    shutil.copytree(ROOT / "forkwait", dst / "forkwait", ignore=junk)
    shutil.copytree(ROOT / "tests", dst / "tests", ignore=junk)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)


def _run(args: list, cwd: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
        f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


@pytest.mark.slow
def test_serial_build_builds_and_passes_the_kernel_and_fork_wait_tests(tmp_path):
    src = tmp_path / "src"
    _copy_tree(src)
    jobs = str(max(1, min(os.cpu_count() or 1, 4)))
    build = _run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace", "-j", jobs],
        src,
        _env(FORKWAIT_DISABLE_OPENMP="1", FORKWAIT_CYTHON_JOBS=jobs),
        timeout=900,
    )
    assert "building the serial version" in build.stderr
    # no module of the copy calls OpenMP's runtime (a parallel region is a GOMP_ call)
    built = list((src / "forkwait" / "_native").glob("*.so"))
    assert len(built) >= 7
    for so in built:
        assert b"GOMP_" not in so.read_bytes(), so.name

    env = _env(PYTHONPATH=str(src))
    probe = _run(
        [
            sys.executable,
            "-c",
            "import forkwait as fw, forkwait.ops; from forkwait._native import _team;"
            "print(fw.__file__); print(_team.openmp_info()[0]); print(fw.parallel_info())",
        ],
        src,
        env,
        timeout=120,
    )
    path, have_omp, info = probe.stdout.split("\n", 2)
    assert Path(path).resolve().is_relative_to(src.resolve())  # the copy, not this tree
    assert have_omp == "False"
    assert "OpenMP compiled in: no: kernels run on one thread" in info

    tests = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SERIAL_TESTS],
        src,
        env,
        timeout=900,
    )
    last = tests.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, last
