"""matmul against NumPy: 2-D, batches, dtypes, both backends."""

from __future__ import annotations

import numpy as np
import pytest

import forkwait as fw
from forkwait import ops
from forkwait._native import _blas, _matmul


@pytest.fixture(params=["blas", "own"])
def backend(request):
    _blas.use_own_kernel(request.param == "own")
    yield request.param
    _blas.use_own_kernel(False)


def tol(dt, k):
    return (
        dict(rtol=1e-4, atol=1e-4 * (k + 1))
        if dt == np.float32
        else dict(rtol=1e-11, atol=1e-11 * (k + 1))
    )


# (the Hypothesis suite of matmul is tests/test_ops_fuzz.py's; this grid
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
        _blas.use_own_kernel(own)
        try:
            got = ops.matmul(a, b)
        finally:
            _blas.use_own_kernel(False)
        ref = np.matmul(a, b)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, **tol(dt, k))


@pytest.mark.parametrize("ksplit", [0, 1, 2, 3])
def test_matmul_split_over_k_at_two_threads(ksplit):
    # the K split (a switch, off by default) and the column split give
    # NumPy's product, for odd and aligned k, with and without out
    rng = np.random.default_rng(11)
    _matmul.set_ksplit(ksplit)
    try:
        for m, k, n in ((200, 333, 190), (128, 128, 128), (130, 257, 129)):
            for dt in (np.float32, np.float64):
                a = rng.standard_normal((m, k)).astype(dt)
                b = rng.standard_normal((k, n)).astype(dt)
                ref = a.astype(np.float64) @ b
                out = np.full((m, n), np.nan, dt)
                with fw.num_threads(2):
                    got = ops.matmul(a, b)
                    assert ops.matmul(a, b, out=out) is out
                np.testing.assert_allclose(got, ref, **tol(dt, k))
                np.testing.assert_array_equal(out, got)
    finally:
        _matmul.set_ksplit(0)
    with pytest.raises(ValueError, match="0-3"):
        _matmul.set_ksplit(4)


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
    return _blas.blas_info()[2]


@pytest.mark.parametrize("n", [8, 300])
def test_matmul_leaves_the_blas_thread_count_as_it_found_it(n):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _blas.blas_info()[0] not in _blas.BLAS_NAMES.values():
        pytest.skip("needs an OpenBLAS")
    a = np.ones((n, n))
    with threadpoolctl.threadpool_limits(3, user_api="blas"):
        assert _blas_threads() == 3
        ops.matmul(a, a)
        assert _blas_threads() == 3  # not pinned to 1 for good
        with fw.num_threads(2):
            futs = [fw.fork(ops.matmul, a, a) for _ in range(6)]
            fw.wait_all(futs)
        assert _blas_threads() == 3


def test_blas_is_loaded_with_forkwait_ops():
    """NumPy's OpenBLAS (the one np.matmul calls) and the second copy are
    loaded with forkwait.ops: scipy-openblas64's, without importing SciPy;
    SciPy's (through scipy.linalg.cython_blas) where that one is missing."""
    from _child import run_python

    code = (
        "import sys, forkwait.ops; from forkwait._native import _blas;"
        "print('scipy.linalg.cython_blas' in sys.modules, 'scipy_openblas64' in sys.modules,"
        " *[n for n, _, _ in _blas.blas_libraries()])"
    )
    out = run_python(code).stdout.split()
    # scipy_openblas64's own __init__ would load the library RTLD_GLOBAL: the
    # package is found, not imported
    if _blas._openblas64_path() is not None:
        assert out == ["False", "False", "numpy-openblas", "scipy-openblas64"]
    else:
        assert out == ["True", "False", "numpy-openblas", "scipy-openblas"]


def test_parallel_info_names_the_blas_behind_matmul():
    info = fw.parallel_info()
    assert f"BLAS behind ops.matmul: {_blas.blas_info()[0]}" in info
    libs = _blas.blas_libraries()
    if len(libs) > 1:
        assert f"second copy, for concurrent GEMMs: {libs[1][0]}" in info


# ------------------------------------------------ the fast path (plain 2-D arrays)

@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (64, 64, 64), (130, 70, 300)])
def test_fast_path_matches_the_general_path(backend, dt, shape):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k)).astype(dt)
    b = rng.standard_normal((k, n)).astype(dt)
    res = _matmul.fast_matmul(a, b, None, 1)  # grain 1: a team where there are threads
    assert res is not None and res.dtype == dt and res.shape == (m, n)
    ref = a.astype(np.float64) @ b
    np.testing.assert_allclose(res, ref, **tol(dt, k))
    out = np.full((m, n), np.nan, dt)
    assert _matmul.fast_matmul(a, b, out, 1 << 40) is out  # serial
    np.testing.assert_allclose(out, ref, **tol(dt, k))
    for nt in (1, 2, 3):
        with fw.num_threads(nt):
            np.testing.assert_allclose(ops.matmul(a, b), ref, **tol(dt, k))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
def test_fast_path_declines_what_the_general_path_must_handle():
    a = np.ones((4, 3))
    b = np.ones((3, 5))
    fast = _matmul.fast_matmul
    declined = [
        (a.astype(np.float32), b, None),  # mixed dtypes (promotion)
        (a.astype(">f8"), b, None),  # byte order
        (np.asfortranarray(a), b, None),  # not C-contiguous
        (a.T.copy().T, b, None),
        (np.ones((2, 4, 3)), b, None),  # 3-D
        (np.ones(3), b, None),
        (a, np.ones((4, 5)), None),  # inner dimensions differ
        (np.ones((4, 0)), np.ones((0, 5)), None),  # k == 0
        (np.ones((0, 3)), b, None),
        (np.ma.array(a), b, None),  # a subclass
        (a.astype(np.int64), b, None),
        (a, b, np.empty((4, 5), np.float32)),  # out: dtype, shape, flags, aliasing
        (a, b, np.empty((5, 4))),
        (a, b, np.empty((5, 4)).T),
        (a, b, np.matrix(np.empty((4, 5)))),
        (a, b, [[0.0] * 5] * 4),
    ]
    ro = np.empty((4, 5))
    ro.flags.writeable = False
    declined.append((a, b, ro))
    sq = np.ones((4, 4))
    declined.append((sq, sq, sq))  # out is an input
    buf = np.ones(40)
    declined.append((buf[:16].reshape(4, 4), np.ones((4, 4)), buf[8:24].reshape(4, 4)))  # overlap
    for x, y, out in declined:
        assert fast(x, y, out, 1) is None
    # and the public op still does every one of them right, or raises as before
    with pytest.raises(ValueError, match="align"):
        ops.matmul(a, np.ones((4, 5)))
    with pytest.raises(ValueError, match="dtype"):
        ops.matmul(a, b, out=np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.matmul(a, b, out=np.empty((5, 4)).T)
    with pytest.raises(ValueError, match="read-only"):
        ops.matmul(a, b, out=ro)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        ops.matmul(a, b, out=[[0.0] * 5] * 4)
    m = np.matrix(np.zeros((4, 5)))
    assert ops.matmul(a, b, out=m) is m and (np.asarray(m) == 3).all()
    x = np.arange(16.0).reshape(4, 4)
    ref = x @ x
    ops.matmul(x, x, out=x)
    np.testing.assert_array_equal(x, ref)
    buf = np.arange(40.0)
    xa, xo = buf[:16].reshape(4, 4), buf[8:24].reshape(4, 4)
    ref = xa @ np.eye(4)
    ops.matmul(xa, np.eye(4), out=xo)
    np.testing.assert_array_equal(xo, ref)


def test_profiler_records_matmuls_the_fast_path_would_take():
    a = np.ones((8, 8))
    with fw.profile() as prof:
        ops.matmul(a, a)
    assert [(k.op, k.shape) for k in prof.kernels] == [("matmul", (1, 8, 8, 8))]
    ops.matmul(a, a)  # recording off: the fast path again, nothing recorded
    assert len(prof.kernels) == 1
