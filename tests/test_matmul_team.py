"""ops.matmul's wide products on the team: the OpenBLAS copy forkwait loads
itself (scipy-openblas64's) runs the jobs of its threaded calls on the
caller's OpenMP team (forkwait/_native/_fw_blas_team.h)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from _child import in_fork_child, needs_fork, run_python

import forkwait as fw
from forkwait import ops
from forkwait._native import _blas, _matmul
from forkwait._threads import available_cpus

N = 600  # 600**3 multiply-adds: above the wide-on-the-team thresholds (2**26, 2**24)


def team_calls():
    return _blas.team_blas()[1:]


@pytest.fixture
def team_copy():
    if _blas._openblas64_path() is None:
        pytest.skip("scipy-openblas64 is not installed")
    _blas.select_blas()
    path = _blas.team_blas()[0]
    assert path is not None, "forkwait loaded scipy-openblas64 but did not give it the team"
    old = _matmul.set_wide_team(3)
    yield path
    _matmul.set_wide_team(old)
    _blas.select_blas()


def test_the_team_copy_is_the_second_library_and_not_a_global_one(team_copy):
    """Loaded RTLD_LOCAL: its symbols (NumPy's copy's names too) are not in
    the process's global namespace, so they stand in for no other library's
    (importing the scipy_openblas64 package would put them there)."""
    libs = _blas.blas_libraries()
    assert [n for n, _, _ in libs] == ["numpy-openblas", "scipy-openblas64"]
    assert os.path.realpath(libs[1][1]) == os.path.realpath(team_copy)
    code = (
        "import ctypes, sys, forkwait.ops;"
        "print(hasattr(ctypes.CDLL(None), 'scipy_sgemm_64_'), 'scipy_openblas64' in sys.modules)"
    )
    out = run_python(code).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_a_team_product_is_one_gemm_on_the_team(team_copy, dt):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((N, N + 3)).astype(dt)
    b = rng.standard_normal((N + 3, N - 5)).astype(dt)
    ref = a.astype(np.float64) @ b
    tol = dict(rtol=2e-4, atol=2e-4 * N) if dt == np.float32 else dict(rtol=1e-10, atol=1e-9)
    calls0, team0 = team_calls()
    if available_cpus() < 2:
        pytest.skip("one CPU: no team of 2")
    with fw.num_threads(2):
        np.testing.assert_allclose(ops.matmul(a, b), ref, **tol)
    calls1, team1 = team_calls()
    assert calls1 == calls0 + 1 and team1 == team0 + 1
    # off: the column split over the two copies, no threaded call
    _matmul.set_wide_team(0)
    with fw.num_threads(2):
        np.testing.assert_allclose(ops.matmul(a, b), ref, **tol)
    assert team_calls() == (calls1, team1)
    # below the threshold, and at one thread: no threaded call either
    _matmul.set_wide_team(3)
    with fw.num_threads(2):
        ops.matmul(a[:120, :120], b[:120, :120])  # 120**3 < 2**21, every CPU's threshold
    with fw.num_threads(1):
        np.testing.assert_allclose(ops.matmul(a, b), ref, **tol)
    assert team_calls() == (calls1, team1)


def test_the_copy_is_left_with_the_users_count(team_copy):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    a = np.ones((N, N))
    with threadpoolctl.threadpool_limits(3, user_api="blas"):
        with fw.num_threads(2):
            np.testing.assert_array_equal(ops.matmul(a, a), float(N))
        assert [c for _, _, c in _blas.blas_libraries()] == [3, 3]
        assert all(r["pinned"] == 0 and r["wide"] == 0 for r in _blas.libraries())


def test_forked_products_split_and_are_right(team_copy):
    """Matmuls in forked tasks never take the one-GEMM path (its threads wait
    on each other, and other tasks' threads would stall them): they split,
    and every result is right, several at once."""
    if available_cpus() < 2:
        pytest.skip("one CPU: no team of 2")
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((N, N)) for _ in range(6)]
    calls0 = team_calls()
    with fw.num_threads(2):
        futs = [fw.fork(ops.matmul, xs[i], xs[i - 1]) for i in range(6)]
        for i, r in enumerate(fw.wait_all(futs)):
            np.testing.assert_allclose(r, xs[i] @ xs[i - 1], rtol=1e-10, atol=1e-9)
        assert team_calls() == calls0
        # the same product outside any task takes it
        np.testing.assert_allclose(ops.matmul(xs[0], xs[5]), xs[0] @ xs[5], rtol=1e-10,
                                   atol=1e-9)
    assert team_calls()[1] == calls0[1] + 1
    assert all(r["pinned"] == 0 and r["wide"] == 0 for r in _blas.libraries())


@pytest.mark.parametrize("nested", [False, True], ids=["team", "inside-a-parallel-region"])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 70])
def test_jobs_that_wait_for_each_other_all_run(n, nested):
    """The callback's contract: every job runs at the same time as the
    others (each waits here until all n have started, as OpenBLAS's level-3
    jobs wait for each other's panels), on the team or, where the team cannot
    be had (inside a parallel region), on threads started for them."""
    calls0, team0 = team_calls()
    assert _blas._test_team_callback(n, nested) == n
    calls1, team1 = team_calls()
    assert calls1 == calls0 + 1
    assert team1 == team0 + (1 if n > 1 and not nested else 0)


@needs_fork
def test_a_fork_child_after_a_team_product_multiplies(team_copy):
    """The parent's main thread ran the copy's jobs on its OpenMP team; the
    child's main thread (GCC bug 60035: that team is broken there) gets
    products right, without hanging."""
    if available_cpus() < 2:
        pytest.skip("one CPU: no team of 2")
    a = np.random.default_rng(9).standard_normal((N, N))
    with fw.num_threads(2):
        ops.matmul(a, a)

    def in_child():
        with fw.num_threads(2):
            return np.allclose(ops.matmul(a, a), a @ a), _blas._test_team_callback(2, False)

    child = in_fork_child(in_child, timeout=20)  # a hang (the broken team) is killed
    assert child.ok, child.error
    assert child.value == (True, 2)
