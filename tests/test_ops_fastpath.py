"""The small-array C fast path (fast_unary / fast_binary) and the vectorised
reductions: the same results and errors as the general path."""

from __future__ import annotations

import numpy as np
import pytest
from _ops_helpers import BINARY_REF as BINARY
from _ops_helpers import UNARY_REF

import forkwait as fw
from forkwait import ops
from forkwait._native import _elementwise

UNARY = list(UNARY_REF)
NP_UNARY = {"neg": np.negative, "abs": np.abs, "sqrt": np.sqrt}  # exact in both


def _x(dt, shape=(7, 5)):
    rng = np.random.default_rng(11)
    return rng.uniform(0.1, 3.0, shape).astype(dt)


def _general(fn):
    """Run fn with the fast path off (the general Python path)."""
    _elementwise._set_fast(False)
    try:
        return fn()
    finally:
        _elementwise._set_fast(True)


def test_fast_path_is_taken_for_plain_arrays_only():
    x = _x(np.float64)
    code = _elementwise.UNARY["sqrt"]
    assert _elementwise.fast_unary(code, x, None, 1 << 12) is not None
    assert _elementwise.fast_unary(code, x.astype(np.float32), None, 1 << 12) is not None
    ro = x.copy()
    ro.flags.writeable = False
    assert _elementwise.fast_unary(code, ro, None, 1 << 12) is not None
    for other in (
        x.T,  # not C-contiguous
        x.astype(">f8"),  # byte-swapped
        x.astype(np.int64),
        x.astype(np.float16),
        x.view(np.matrix) if x.ndim == 2 else x,  # a subclass
        x.tolist(),
        2.0,
    ):
        assert _elementwise.fast_unary(code, other, None, 1 << 12) is None
    add = _elementwise.BINARY["add"]
    assert _elementwise.fast_binary(add, x, x, None, 1 << 15) is not None
    assert _elementwise.fast_binary(add, x, 2.0, None, 1 << 15) is not None
    assert _elementwise.fast_binary(add, 2, x, None, 1 << 15) is not None
    for a, b in (
        (x, x.astype(np.float32)),  # mixed dtypes
        (x, x[0]),  # broadcasting
        (x, True),  # bool scalar
        (x, np.float64(2.0)),  # NumPy scalar (strong type)
        (x, x.T),
        (1.0, 2.0),
    ):
        assert _elementwise.fast_binary(add, a, b, None, 1 << 15) is None


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNARY)
def test_unary_fast_path_matches_general_path(name, dt):
    f = getattr(ops, name)
    x = _x(dt) - dt(1.0)  # negative values too (log, sqrt: NaN)
    x.flat[3] = np.nan
    x.flat[4] = np.inf
    x.flat[5] = -0.0
    with np.errstate(all="ignore"):
        got = f(x)
        ref = _general(lambda: f(x))
    assert got.dtype == ref.dtype == dt and got.shape == x.shape
    np.testing.assert_array_equal(got, ref)
    if name in NP_UNARY:
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(got, NP_UNARY[name](x))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_sqrt_is_correctly_rounded_for_every_length(dt):
    rng = np.random.default_rng(3)
    for n in (0, 1, 3, 4, 7, 8, 9, 31, 1000, 5003):
        x = rng.uniform(0, 1e6, n).astype(dt)
        np.testing.assert_array_equal(ops.sqrt(x), np.sqrt(x))
        y = x.copy()
        assert ops.sqrt(y, out=y) is y
        np.testing.assert_array_equal(y, np.sqrt(x))
    with np.errstate(invalid="ignore"):
        assert np.isnan(ops.sqrt(np.array([-1.0, -np.inf, np.nan]))).all()
    assert ops.sqrt(np.array([np.inf, -0.0]))[0] == np.inf
    assert np.signbit(ops.sqrt(np.array([-0.0] * 9, dt))).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_fast_path_matches_numpy(name, dt):
    f, ref = getattr(ops, name), BINARY[name]
    a = _x(dt)
    b = _x(dt)[::-1].copy()
    a.flat[2] = np.nan
    b.flat[6] = np.nan
    with np.errstate(all="ignore"):
        for args in ((a, b), (a, 2.5), (2.5, a), (a, 3), (-3, a), (a, 2**70)):
            got = f(*args)
            want = ref(*args)
            assert got.dtype == want.dtype == dt
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, _general(lambda args=args: f(*args)))


@pytest.mark.parametrize("name", ["add", "mul", "sqrt", "exp"])
def test_fast_path_out_and_in_place(name):
    f = getattr(ops, name)
    binary = name in BINARY
    x = _x(np.float64)
    y = _x(np.float64) + 1.0
    args = (x, y) if binary else (x,)
    want = f(*args)
    out = np.empty_like(x)
    assert f(*args, out=out) is out
    np.testing.assert_array_equal(out, want)
    # in place, into either input
    x1 = x.copy()
    assert f(x1, y, out=x1) is x1 if binary else f(x1, out=x1) is x1
    np.testing.assert_array_equal(x1, want)
    if binary:
        y1 = y.copy()
        assert f(x, y1, out=y1) is y1
        np.testing.assert_array_equal(y1, want)
        x2 = x.copy()
        assert f(x2, 2.0, out=x2) is x2
        np.testing.assert_array_equal(x2, f(x, 2.0))
        x3 = x.copy()
        f(x3, x3, out=x3)
        np.testing.assert_array_equal(x3, f(x, x))
    # read-only input, writable out
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(f(ro, y) if binary else f(ro), want)
    # non-contiguous input (the general path)
    big = np.empty((x.shape[0], x.shape[1] * 2))
    big[:, ::2] = x
    nc = big[:, ::2]
    np.testing.assert_array_equal(f(nc, y) if binary else f(nc), want)
    # out of an ndarray subclass: the general path, into it
    m = np.empty_like(x).view(_Sub)
    assert f(*args, out=m) is m
    np.testing.assert_array_equal(m, want)


class _Sub(np.ndarray):
    pass


def test_fast_path_partial_overlap_is_copied():
    x = np.arange(1000.0)
    ref = x[1:] + x[:-1]
    ops.add(x[1:], x[:-1], out=x[:-1])
    np.testing.assert_array_equal(x[:-1], ref)
    z = np.arange(1000.0)
    ref = np.sqrt(z[:-1])
    ops.sqrt(z[:-1], out=z[1:])
    np.testing.assert_array_equal(z[1:], ref)
    w = np.arange(1000.0)
    ref = w[:-1] * 3.0
    ops.mul(w[:-1], 3.0, out=w[1:])
    np.testing.assert_array_equal(w[1:], ref)


def test_fast_path_errors_are_those_of_the_general_path():
    x = np.ones((4, 5))
    x32 = x.astype(np.float32)
    with pytest.raises(ValueError, match="out has shape"):
        ops.sqrt(x, out=np.empty((5, 4)))
    with pytest.raises(ValueError, match="out has shape"):
        ops.add(x, x, out=np.empty(20))
    with pytest.raises(ValueError, match="out has dtype"):
        ops.sqrt(x, out=np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match="out has dtype"):
        ops.add(x32, 1.0, out=np.empty((4, 5)))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.add(x, x, out=np.empty((5, 4)).T)
    ro = np.empty((4, 5))
    ro.flags.writeable = False
    for call in (
        lambda: ops.sqrt(x, out=ro),
        lambda: ops.add(x, x, out=ro),
        lambda: ops.mul(x, 2.0, out=ro),
        lambda: ops.mul(2.0, x, out=ro),
    ):
        with pytest.raises(ValueError, match="read-only"):
            call()
    with pytest.raises(TypeError, match="out must be"):
        ops.add(x, x, out=[0.0])
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.sqrt(np.ones(3, np.complex128))
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.add(np.ones(3, np.float16), np.ones(3, np.float16))
    with pytest.raises(OverflowError):
        ops.add(x, 10**400)
    with pytest.raises(ValueError):
        ops.add(np.ones(3), np.ones(4))


def test_fast_path_zero_size_zero_dim_and_promotion():
    for shape in [(0,), (3, 0), ()]:
        for dt in (np.float32, np.float64):
            x = np.ones(shape, dt)
            for got in (ops.sqrt(x), ops.add(x, x), ops.mul(x, 2.0), ops.sub(1, x)):
                assert type(got) is np.ndarray
                assert got.shape == shape and got.dtype == dt
    z = np.array(4.0)
    assert ops.sqrt(z).shape == () and ops.sqrt(z)[()] == 2.0
    o = np.empty(())
    assert ops.add(z, 1.0, out=o) is o and o == 5.0
    # mixed dtypes and integers: NumPy's promotion (the general path)
    a32 = np.ones(4, np.float32)
    assert ops.add(a32, np.ones(4)).dtype == np.float64
    assert ops.add(a32, 2).dtype == np.float32
    assert ops.add(a32, 2.5).dtype == np.float32
    assert ops.add(np.ones(4, np.int32), 2).dtype == np.int32
    assert ops.sqrt(np.arange(4)).dtype == np.float64
    assert ops.div(np.arange(4), 2).dtype == np.float64


def test_fast_path_parallel_sizes_match():
    rng = np.random.default_rng(8)
    x = rng.uniform(0.1, 2.0, 300_001)
    y = rng.uniform(0.1, 2.0, 300_001)
    with fw.num_threads(2):
        np.testing.assert_array_equal(ops.sqrt(x), np.sqrt(x))
        np.testing.assert_array_equal(ops.add(x, y), x + y)
        np.testing.assert_array_equal(ops.mul(2.0, y), 2.0 * y)


def test_profiling_turns_the_fast_path_off_and_on():
    x = np.ones(10)
    code = _elementwise.UNARY["sqrt"]
    with fw.profile() as prof:
        assert _elementwise.fast_unary(code, x, None, 1) is None
        ops.sqrt(x)
        ops.add(x, x)
        ops.mul(x, 2.0)
    assert [k.op for k in prof.kernels] == ["sqrt", "add", "mul"]
    assert _elementwise.fast_unary(code, x, None, 1) is not None


# ------------------------------------------------------------- reductions


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 31, 32, 63, 64, 65, 257, 4095, 4096, 4097, 20_000, 100_003])
def test_reductions_match_numpy_for_lengths(dt, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dt)
    for name in ("max", "min", "argmax"):
        assert getattr(ops, name)(x) == getattr(np, name)(x)
    np.testing.assert_allclose(ops.sum(x), np.sum(x), rtol=1e-5 if dt == np.float32 else 1e-12)
    # the extreme in every position class of the lanes and the tail
    for i in {0, n // 3, n - 1}:
        y = x.copy()
        y[i] = 100.0
        assert ops.argmax(y) == i and ops.max(y) == 100.0
        y[i] = -100.0
        assert ops.min(y) == -100.0


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_reductions_nan_inf_and_signed_zero(dt):
    n = 30_011
    x = np.random.default_rng(9).standard_normal(n).astype(dt)
    for pos in ([7], [4096 + 5], [n - 1], [9000, 12], [100, 20_000]):
        y = x.copy()
        y[pos] = np.nan
        assert np.isnan(ops.max(y)) and np.isnan(ops.min(y)) and np.isnan(ops.sum(y))
        assert ops.argmax(y) == np.argmax(y) == min(pos)
    y = x.copy()
    y[[5, 17_000]] = np.inf
    assert ops.max(y) == np.inf and ops.argmax(y) == 5 and ops.sum(y) == np.inf
    y[99] = -np.inf
    assert ops.min(y) == -np.inf and np.isnan(ops.sum(y))
    z = np.full(n, -0.0, dt)
    assert ops.sum(z) == 0 and not np.signbit(ops.sum(z))  # as NumPy: +0.0
    assert not np.signbit(np.sum(z))
    assert ops.max(z) == 0 and ops.min(z) == 0 and ops.argmax(z) == 0
    z[12_345] = 0.0
    assert ops.argmax(z) == np.argmax(z) == 0
    assert ops.max(np.full(3, -np.inf, dt)) == -np.inf


def test_reductions_of_empty_arrays():
    for dt in (np.float32, np.float64):
        e = np.ones(0, dt)
        assert ops.sum(e) == 0 and ops.sum(e).dtype == dt
        for name in ("max", "min", "argmax"):
            with pytest.raises(ValueError):
                getattr(ops, name)(e)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_reductions_bitwise_same_for_1_to_8_threads_with_zeros_and_nans(dt):
    rng = np.random.default_rng(12)
    n = 4096 * 37 + 123
    x = (rng.standard_normal(n) * 1e3).astype(dt)
    zeros = np.zeros(n, dt)
    zeros[rng.integers(0, n, 5000)] = -0.0
    zeros[::7] = -1.0
    zeros[4096 * 20 + 3] = 0.0  # +0.0 late, -0.0 early: the sign depends on the order
    zeros[5] = -0.0
    nans = x.copy()
    nans[[4096 * 30 + 1, 4096 * 2 + 9]] = np.nan
    old = fw.get_intra_op_mode()
    fw.set_intra_op_mode("fixed")
    results = []
    try:
        for t in range(1, 9):
            with fw.num_threads(t):
                r = []
                for v in (x, zeros, -zeros, nans):
                    r += [ops.sum(v), ops.max(v), ops.min(v), ops.argmax(v)]
                r.append(ops.max(x.reshape(37, -1) if n % 37 == 0 else x[: 4096 * 37], axis=None))
                r.append(ops.sum(np.stack([x, x]), axis=1))
                r.append(ops.max(np.stack([zeros, x]), axis=1))
                results.append([np.asarray(v).tobytes() for v in r])
    finally:
        fw.set_intra_op_mode(old)
    for r in results[1:]:
        assert r == results[0]
    with np.errstate(invalid="ignore"):
        assert ops.argmax(nans) == np.argmax(nans) == 4096 * 2 + 9
    assert ops.max(zeros) == np.max(zeros) and ops.min(zeros) == -1.0


def test_float32_sum_accuracy_at_every_scale():
    rng = np.random.default_rng(13)
    for n in (1000, 4096 * 3 + 17, 1_000_003):
        x = rng.random(n, dtype=np.float32)
        exact = x.astype(np.float64).sum()
        err = abs(float(ops.sum(x)) - exact)
        np_err = abs(float(np.sum(x)) - exact)
        assert err <= 4 * np.spacing(np.float32(exact)) + 2 * np_err


def test_zero_dim_through_the_general_path_stays_zero_dim():
    # promotion (int, mixed dtypes) takes the general path: 0-d in, 0-d out
    assert ops.sqrt(np.array(4)).shape == ()
    assert ops.add(np.array(2), np.array(3.0)).shape == ()
    assert ops.add(np.array(2.0, np.float32), np.array(3.0)).shape == ()
    b = np.array(2.0)
    assert ops.add(b, np.array(3.0, np.float32), out=b) is b and b == 5.0
    a = np.array(2.0)
    assert ops.add(a, np.array(3.0), out=a) is a and a == 5.0  # the fast path
    x = np.arange(12).reshape(3, 4)[:, ::2]  # non-contiguous ints
    np.testing.assert_array_equal(ops.sqrt(x), np.sqrt(x))
    np.testing.assert_array_equal(ops.div(x, x.T[:, :1].T), x / x.T[:, :1].T)
