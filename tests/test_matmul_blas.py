"""Which OpenBLAS ops.matmul calls, and its wide calls (the whole product at
the team's thread count), through the BLAS limiter.

Behaviour only: results against NumPy, the library found and the fallback,
the thread count while and after, the limiter's rules for wide pins.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _child import in_fork_child, needs_fork

import forkwait as fw
from forkwait import ops
from forkwait._native import _blas, _matmul, _team

USER = 3  # a BLAS count no default gives, so a restore is visible


def tol(dt, k):
    return (
        dict(rtol=1e-4, atol=1e-4 * (k + 1))
        if dt == np.float32
        else dict(rtol=1e-11, atol=1e-11 * (k + 1))
    )


@pytest.fixture
def restore_blas():
    """Put the default library and the default wide rule back afterwards."""
    old_wide = _matmul.set_wide(3)
    _matmul.set_wide(old_wide)
    yield
    _matmul.set_wide(old_wide)
    _blas.select_blas()


def lib_record():
    """The limiter's record of the library ops.matmul calls."""
    path = _blas.blas_info()[1]
    recs = [r for r in _blas.libraries() if r["path"] == path]
    assert len(recs) == 1
    return recs[0]


def needs_openblas():
    if _blas.blas_info()[0] not in _blas.BLAS_NAMES.values():
        pytest.skip("needs an OpenBLAS")


def select(lib):
    """Load `lib` alone (skip where it is not installed)."""
    if lib == "openblas64" and _blas._openblas64_path() is None:
        pytest.skip("scipy-openblas64 is not installed")
    assert _blas.select_blas(lib) == _blas.BLAS_NAMES[lib]


def test_default_is_the_openblas_numpy_calls():
    """NumPy's own library (found through NumPy's C core), the same file
    threadpoolctl reports for NumPy."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    backend, path, _ = _blas.blas_info()
    assert backend == "numpy-openblas"
    numpy_libs = [
        p["filepath"]
        for p in threadpoolctl.threadpool_info()
        if p["user_api"] == "blas" and "numpy" in p["filepath"]
    ]
    assert numpy_libs and os.path.realpath(path) == os.path.realpath(numpy_libs[0])


@pytest.mark.parametrize("lib", ["numpy", "openblas64", "scipy"])
@pytest.mark.parametrize("wide", [0, 3])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_each_library_and_both_team_paths_match_numpy(restore_blas, lib, wide, dt):
    select(lib)
    _matmul.set_wide(wide)
    rng = np.random.default_rng(5)
    shapes = [(1, 1, 1), (7, 5, 3), (130, 70, 300), (257, 301, 263)]
    for m, k, n in shapes:
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        ref = a.astype(np.float64) @ b
        for nt in (1, 2, 3):
            with fw.num_threads(nt):
                np.testing.assert_allclose(ops.matmul(a, b), ref, **tol(dt, k))
                # the general path (a view) and a team even below the grain
                np.testing.assert_allclose(
                    ops.matmul(a[:, :], np.asfortranarray(b)), ref, **tol(dt, k)
                )
                res = _matmul.fast_matmul(a, b, None, 1)
                np.testing.assert_allclose(res, ref, **tol(dt, k))
    a3 = rng.standard_normal((4, 40, 33)).astype(dt)
    b3 = rng.standard_normal((4, 33, 70)).astype(dt)
    with fw.num_threads(2):
        np.testing.assert_allclose(ops.matmul(a3, b3), a3 @ b3, **tol(dt, 33))


def test_fallback_to_scipy_when_numpys_blas_is_not_found(restore_blas):
    a = np.random.default_rng(1).standard_normal((300, 300))
    # a file that is not loaded, and one that is loaded but carries no BLAS
    for probe in ("/nonexistent/_multiarray_umath.so", _team.__file__):
        assert _blas.select_blas("numpy", "scipy", numpy_module=probe) == "scipy-openblas"
        assert "scipy" in os.path.basename(_blas.blas_info()[1])
        with fw.num_threads(2):
            np.testing.assert_allclose(ops.matmul(a, a), a @ a, rtol=1e-11, atol=1e-9)
        # neither: forkwait's own kernel, still correct
        assert _blas.select_blas("numpy", numpy_module=probe) == "own"
        assert _blas.blas_info() == ("own", None, None)
        np.testing.assert_allclose(ops.matmul(a, a), a @ a, rtol=1e-11, atol=1e-9)
    with pytest.raises(ValueError, match="unknown BLAS"):
        _blas.select_blas("mkl")


def test_second_library_is_scipys_where_scipy_openblas64_is_missing(restore_blas):
    """The default order with no scipy-openblas64 (not installed, or a path
    that is no library): NumPy's copy and SciPy's, both used."""
    for missing in (None, "/nonexistent/libscipy_openblas64_.so", _team.__file__):
        assert _blas.select_blas(openblas64_path=missing) == "numpy-openblas"
        assert [n for n, _, _ in _blas.blas_libraries()] == ["numpy-openblas", "scipy-openblas"]
        a = np.random.default_rng(3).standard_normal((300, 300)).astype(np.float32)
        with fw.num_threads(2):
            futs = [fw.fork(ops.matmul, a, a.T) for _ in range(4)]
            for r in fw.wait_all(futs):
                np.testing.assert_allclose(r, a.astype(np.float64) @ a.T, **tol(np.float32, 300))


@pytest.mark.parametrize("lib", ["numpy", "openblas64", "scipy"])
def test_wide_and_split_calls_leave_the_users_count(restore_blas, lib):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    select(lib)
    needs_openblas()
    a = np.ones((300, 300), np.float32)
    with threadpoolctl.threadpool_limits(USER, user_api="blas"):
        for wide in (3, 0):
            _matmul.set_wide(wide)
            for nt in (1, 2):
                with fw.num_threads(nt):
                    np.testing.assert_array_equal(ops.matmul(a, a), 300.0)
                assert _blas.blas_info()[2] == USER
                rec = lib_record()
                assert rec["pinned"] == 0 and rec["wide"] == 0 and not rec["limited"]
        with fw.num_threads(2):  # forked matmuls, some at once
            fw.wait_all([fw.fork(ops.matmul, a, a) for _ in range(6)])
        assert _blas.blas_info()[2] == USER


def test_wide_pin_only_when_alone_and_the_count_comes_back():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    needs_openblas()
    lib = _blas.blas_index()
    with threadpoolctl.threadpool_limits(USER, user_api="blas"):
        assert _blas._test_pin_wide(lib, 2) == 2
        assert _blas.blas_info()[2] == 2  # forkwait's team size, not the user's 3
        assert _blas._test_pin_wide(lib, 2) == 0  # one wide call at a time
        _blas._test_pin(lib, 1)  # a 1-thread matmul meanwhile: 1 wins
        assert _blas.blas_info()[2] == 1
        _blas._test_unpin_wide(lib)
        assert _blas.blas_info()[2] == 1
        assert _blas._test_pin_wide(lib, 2) == 0  # refused while a 1-thread pin is held
        _blas._test_pin(lib, -1)
        assert _blas.blas_info()[2] == USER
        assert _blas._test_pin_wide(lib, 1) == 0  # one thread is no wide call
        assert _blas.blas_info()[2] == USER


def test_wide_pin_stays_within_the_budget(interop):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    needs_openblas()
    lib = _blas.blas_index()
    was = fw.get_blas_budget()
    import threading

    fw.set_num_interop_threads(max(fw.get_num_interop_threads(), 2))
    barrier = threading.Barrier(2, timeout=10)

    def task(i):
        barrier.wait()
        got = _blas._test_pin_wide(lib, 4) if i == 0 else None
        seen = _blas.blas_info()[2]
        barrier.wait()
        if got:
            _blas._test_unpin_wide(lib)
        return got, seen

    try:
        with threadpoolctl.threadpool_limits(USER, user_api="blas"):
            _blas.set_budget(True, 4)  # two tasks running: at most 4 // 2 = 2 each
            res = fw.wait_all([fw.fork(task, i) for i in range(2)], timeout=30)
            assert res[0] == (2, 2)
            _blas.set_budget(False, 1)
            assert _blas.blas_info()[2] == USER
    finally:
        fw.set_blas_budget(was)


@needs_fork
def test_fork_child_drops_a_wide_pin():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    needs_openblas()
    lib = _blas.blas_index()
    with threadpoolctl.threadpool_limits(USER, user_api="blas"):
        assert _blas._test_pin_wide(lib, 2) == 2
        # the child: no pin left, and the library left alone at the count the
        # fork found (a wide call may have been inside it: "stranded", see
        # tests/test_fork_child_blas.py)
        child = in_fork_child(
            lambda: (lib_record()["wide"], lib_record()["stranded"], lib_record()["num_threads"])
        )
        _blas._test_unpin_wide(lib)
        assert child.ok, child.error
        assert child.value == (0, True, 2)
        assert _blas.blas_info()[2] == USER


def test_both_libraries_are_used_and_left_as_found():
    """NumPy's OpenBLAS and a second copy (scipy-openblas64's, else SciPy's);
    each 1-thread GEMM pins the one least used now; both counts come back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    libs = _blas.blas_libraries()
    names = [name for name, _, _ in libs]
    assert names[0] == "numpy-openblas"
    if len(libs) < 2:
        pytest.skip("one OpenBLAS only")
    assert names[1] in ("scipy-openblas64", "scipy-openblas") and libs[0][1] != libs[1][1]
    idx = _blas.blas_indices()
    with threadpoolctl.threadpool_limits(USER, user_api="blas"):
        assert _blas._test_pin_least(idx) == 0  # both free: the first
        assert _blas._test_pin_least(idx) == 1  # the first busy: the second
        assert _blas._test_pin_least(idx) == 0  # a tie again: the first
        assert [c for _, _, c in _blas.blas_libraries()] == [1, 1]
        for i in (0, 0, 1):
            _blas._test_pin(idx[i], -1)
        assert [c for _, _, c in _blas.blas_libraries()] == [USER, USER]
        assert _blas._test_pin_wide(idx[0], 2) == 2  # a wide call weighs its threads
        assert _blas._test_pin_least(idx) == 1
        _blas._test_pin(idx[1], -1)
        _blas._test_unpin_wide(idx[0])
        a = np.random.default_rng(2).standard_normal((200, 300)).astype(np.float32)
        with fw.num_threads(2):
            futs = [fw.fork(ops.matmul, a, a.T) for _ in range(8)]
            for r in fw.wait_all(futs):
                np.testing.assert_allclose(r, a.astype(np.float64) @ a.T, **tol(np.float32, 300))
        assert [c for _, _, c in _blas.blas_libraries()] == [USER, USER]
        assert all(r["pinned"] == 0 and r["wide"] == 0 for r in _blas.libraries())
