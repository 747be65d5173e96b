"""Element-wise ops against NumPy: values, dtypes, broadcasting, out=, errors."""

from __future__ import annotations

import numpy as np
import pytest
from _ops_helpers import BINARY_REF, FLOATS, TOL, UNARY_REF

from forkwait import ops

# (the Hypothesis suite of these ops is tests/test_ops_fuzz.py's)
UNARY = sorted(UNARY_REF)
BINARY = sorted(BINARY_REF)
EXACT_UNARY = {"neg", "abs", "relu", "sqrt"}


def check_unary(name, x):
    got = getattr(ops, name)(x)
    with np.errstate(all="ignore"):
        ref = UNARY_REF[name](x.astype(np.float64))
    assert got.dtype == x.dtype and got.shape == x.shape
    if name in EXACT_UNARY:
        np.testing.assert_array_equal(got, ref.astype(x.dtype))
    elif name == "log":  # libm, correctly rounded or nearly
        np.testing.assert_allclose(got, ref, equal_nan=True, **TOL[x.dtype])
    elif name == "gelu" and x.dtype == np.float32:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-6, equal_nan=True)
    elif name == "gelu":
        # gelu's condition number grows like x**2 in the negative tail: the
        # rounding of x/sqrt(2) alone (also in the reference) costs x**2 ulp
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(got[np.isinf(ref)], ref[np.isinf(ref)])
        np.testing.assert_array_equal(got[np.isinf(x)], ref[np.isinf(x)])
        ok = np.isfinite(ref) & np.isfinite(x)
        xd = x[ok].astype(np.float64)
        err = np.abs(got[ok] - ref[ok])
        assert np.all(err <= 2e-15 * (1 + xd * xd) * np.abs(ref[ok]) + 1e-300)
    else:
        np.testing.assert_allclose(got, ref, equal_nan=True, **TOL[x.dtype])


@pytest.mark.parametrize("name", UNARY)
def test_unary_large_and_odd_sizes(name):
    rng = np.random.default_rng(1)
    for n in (1, 7, 4099, 1_000_003):
        x = rng.uniform(0.1 if name in ("log", "sqrt") else -20, 20, n)
        check_unary(name, x)
        check_unary(name, x.astype(np.float32))


@pytest.mark.parametrize("name", UNARY)
def test_unary_special_values(name):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310, 800.0, -800.0, 89.0, -104.0])
    for dt in FLOATS:
        xd = x.astype(dt)
        with np.errstate(all="ignore"):
            got = getattr(ops, name)(xd)
            ref = UNARY_REF[name](xd.astype(np.float64)).astype(dt)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(got[np.isinf(ref)], ref[np.isinf(ref)])


@pytest.mark.parametrize("name", UNARY)
def test_unary_in_place_and_out(name):
    x = np.linspace(0.5, 3, 50_001)
    ref = getattr(ops, name)(x)
    out = np.empty_like(x)
    assert getattr(ops, name)(x, out=out) is out
    np.testing.assert_array_equal(out, ref)
    y = x.copy()
    assert getattr(ops, name)(y, out=y) is y
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("name", BINARY)
def test_binary_fast_paths_large(name):
    rng = np.random.default_rng(2)
    for dt in FLOATS:
        a = rng.uniform(-3, 3, (1001, 257)).astype(dt)
        b = rng.uniform(0.5, 3, (1001, 257)).astype(dt)
        row = rng.uniform(0.5, 3, 257).astype(dt)
        f, ref = getattr(ops, name), BINARY_REF[name]
        np.testing.assert_array_equal(f(a, b), ref(a, b))
        np.testing.assert_array_equal(f(a, row), ref(a, row))
        np.testing.assert_array_equal(f(row, a), ref(row, a))
        np.testing.assert_array_equal(f(a, 1.5), ref(a, 1.5))
        np.testing.assert_array_equal(f(2.5, a), ref(2.5, a))
        np.testing.assert_array_equal(f(a, a[:, :1]), ref(a, a[:, :1]))  # column: general


@pytest.mark.parametrize("name", BINARY)
def test_binary_nan_propagates(name):
    a = np.array([np.nan, 1.0, np.nan, -np.inf, 2.0])
    b = np.array([1.0, np.nan, np.nan, np.inf, 2.0])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(getattr(ops, name)(a, b), BINARY_REF[name](a, b))
        np.testing.assert_array_equal(getattr(ops, name)(a, np.nan), BINARY_REF[name](a, np.nan))


@pytest.mark.parametrize(
    "a, b",
    [
        (np.ones(3, np.float32), np.ones(3, np.float64)),
        (np.ones(3, np.float32), 2.0),
        (np.ones(3, np.float32), np.float64(2.0)),
        (np.ones(3, np.int32), np.ones(3, np.float32)),
        (np.ones(3, np.int64), 2.5),
        (np.arange(3), np.arange(3)),
        (np.arange(3, dtype=np.int8), 3),
        (np.ones(3, np.bool_), np.ones(3, np.float32)),
        ([1.0, 2.0], 3),
        (np.ones(3, ">f8"), np.ones(3)),
    ],
)
@pytest.mark.parametrize("name", BINARY)
def test_binary_promotion_follows_numpy(name, a, b):
    got = getattr(ops, name)(a, b)
    ref = BINARY_REF[name](a, b)
    assert got.dtype == ref.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dt", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_])
def test_unary_integer_inputs(dt):
    x = np.arange(5).astype(dt)
    for name in ("exp", "sqrt", "tanh", "sigmoid", "gelu", "log"):
        got = getattr(ops, name)(x)
        ref_dt = np.promote_types(dt, np.float16)
        assert got.dtype == (np.float32 if ref_dt == np.float16 else ref_dt)
    if dt is not np.bool_:
        for name in ("neg", "abs", "relu"):
            got = getattr(ops, name)(x)
            assert got.dtype == x.dtype
            np.testing.assert_array_equal(got, UNARY_REF[name](x))


@pytest.mark.parametrize("bad", [np.complex128, np.float16, object, np.longdouble, "U3"])
def test_unsupported_dtypes_raise_type_error(bad):
    x = np.ones(3, dtype=bad) if bad != "U3" else np.array(["a", "b", "c"])
    if np.dtype(x.dtype) == np.float64:  # longdouble is float64 on some platforms
        pytest.skip("longdouble is float64 here")
    for f in (ops.exp, ops.neg):
        with pytest.raises(TypeError, match="float32 and float64"):
            f(x)
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.add(x, np.ones(3))


def test_out_errors():
    x = np.ones((4, 5))
    with pytest.raises(ValueError, match="shape"):
        ops.exp(x, out=np.empty((5, 4)))
    with pytest.raises(ValueError, match="dtype"):
        ops.exp(x, out=np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.exp(x, out=np.empty((5, 4)).T)
    ro = np.empty((4, 5))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.add(x, x, out=ro)
    with pytest.raises(TypeError, match="out must be"):
        ops.exp(x, out=[0.0])
    with pytest.raises(ValueError):
        ops.add(np.ones(3), np.ones(4))


def test_binary_out_overlapping_input_is_correct():
    x = np.arange(10.0)
    ref = x[1:] + x[:-1]
    ops.add(x[1:], x[:-1], out=x[:-1])
    np.testing.assert_array_equal(x[:-1], ref)
    y = np.arange(6.0)
    ops.mul(y, y, out=y)
    np.testing.assert_array_equal(y, np.arange(6.0) ** 2)


def test_zero_size_and_zero_dim():
    for shape in [(0,), (3, 0), ()]:
        x = np.ones(shape)
        assert ops.exp(x).shape == shape
        assert ops.add(x, x).shape == shape
        assert ops.add(x, 1.0).shape == shape
