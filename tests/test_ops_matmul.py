"""matmul against NumPy: 2-D, batches, dtypes, both backends."""

from __future__ import annotations

import numpy as np
import pytest

import forkwait as fw
from forkwait import ops
from forkwait._native import _matmul


@pytest.fixture(params=["blas", "own"])
def backend(request):
    _matmul.use_own_kernel(request.param == "own")
    yield request.param
    _matmul.use_own_kernel(False)


def tol(dt, k):
    return (
        dict(rtol=1e-4, atol=1e-4 * (k + 1))
        if dt == np.float32
        else dict(rtol=1e-11, atol=1e-11 * (k + 1))
    )


# (the Hypothesis suite of matmul is tests/test_reliability_fuzz.py's; this grid
# covers the batch broadcasts and both backends)
@pytest.mark.parametrize("m,n,k", [(0, 3, 4), (1, 1, 1), (5, 0, 2), (7, 13, 0), (17, 31, 64),
                                   (64, 17, 31), (13, 7, 5)])
@pytest.mark.parametrize("batch,bcast", [(None, "none"), (1, "none"), (3, "none"), (3, "a"),
                                         (3, "b"), (1, "a")])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_matmul_matches_numpy(m, n, k, batch, dt, bcast, transpose):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    ash = (m, k) if batch is None or bcast == "a" else (batch, m, k)
    bsh = (k, n) if batch is None or bcast == "b" else (batch, k, n)
    a = rng.standard_normal(ash).astype(dt)
    b = rng.standard_normal(bsh).astype(dt)
    if transpose and a.ndim == 2:
        a = np.ascontiguousarray(a.T).T  # non-contiguous view with the same values
    for own in (False, True):
        _matmul.use_own_kernel(own)
        try:
            got = ops.matmul(a, b)
        finally:
            _matmul.use_own_kernel(False)
        ref = np.matmul(a, b)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, **tol(dt, k))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_matmul_large_threads(backend, dt):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((257, 301)).astype(dt)
    b = rng.standard_normal((301, 263)).astype(dt)
    ref = a.astype(np.float64) @ b
    for n in (1, 2, 3):
        with fw.num_threads(n):
            np.testing.assert_allclose(ops.matmul(a, b), ref, **tol(dt, 301))
    a3 = rng.standard_normal((5, 64, 33)).astype(dt)
    b3 = rng.standard_normal((5, 33, 70)).astype(dt)
    np.testing.assert_allclose(ops.matmul(a3, b3), a3 @ b3, **tol(dt, 33))


def test_matmul_promotion_out_and_errors():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 2), np.float64)
    assert ops.matmul(a, b).dtype == np.float64
    ai = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(ops.matmul(ai, ai.T), ai @ ai.T)
    out = np.empty((3, 2))
    assert ops.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, 4.0)
    with pytest.raises(ValueError, match="align"):
        ops.matmul(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        ops.matmul(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="batch"):
        ops.matmul(np.ones((2, 3, 4)), np.ones((3, 4, 2)))
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.matmul(np.ones((2, 2), np.complex64), np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        ops.matmul(a, b, out=np.empty((2, 3)))
    assert ops.matmul(np.ones((3, 0)), np.ones((0, 2))).tolist() == [[0, 0]] * 3
    x = np.ones((4, 4))
    ops.matmul(x, x, out=x)  # out aliasing an input: inputs are copied first
    np.testing.assert_array_equal(x, 4.0)


def _blas_threads():
    return _matmul.blas_info()[2]


@pytest.mark.parametrize("n", [8, 300])
def test_matmul_leaves_the_blas_thread_count_as_it_found_it(n):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _matmul.blas_info()[0] != "scipy-openblas":
        pytest.skip("needs SciPy's OpenBLAS")
    a = np.ones((n, n))
    with threadpoolctl.threadpool_limits(3, user_api="blas"):
        assert _blas_threads() == 3
        ops.matmul(a, a)
        assert _blas_threads() == 3  # not pinned to 1 for good
        with fw.num_threads(2):
            futs = [fw.fork(ops.matmul, a, a) for _ in range(6)]
            fw.wait_all(futs)
        assert _blas_threads() == 3


def test_scipy_blas_is_loaded_with_forkwait_ops():
    from conftest import run_python

    code = (
        "import sys, forkwait.ops; from forkwait._native import _matmul;"
        "print('scipy.linalg.cython_blas' in sys.modules, _matmul.blas_info()[0])"
    )
    out = run_python(code).stdout.split()
    assert out == ["True", "scipy-openblas"]


def test_parallel_info_names_the_blas_behind_matmul():
    assert "BLAS behind ops.matmul: scipy-openblas" in fw.parallel_info()
