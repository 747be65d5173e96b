"""Reductions and row ops against NumPy; accuracy and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from _ops_helpers import FLOATS, layer_norm_ref, log_softmax_ref, softmax_ref

import forkwait as fw
from forkwait import ops

# (the Hypothesis suite of these ops is tests/test_ops_fuzz.py's)
REF = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "argmax": np.argmax}


def check_reduce(name, x, axis):
    f = getattr(ops, name)
    n_reduced = x.size if axis is None else x.shape[axis]
    if n_reduced == 0 and name in ("max", "min", "argmax"):
        with pytest.raises(ValueError):
            f(x, axis=axis)
        return
    with (
        np.errstate(all="ignore"),
        pytest.warns(RuntimeWarning)
        if (name == "mean" and n_reduced == 0 and axis is None)
        else _nullcontext(),
    ):
        got = f(x, axis=axis)
    with np.errstate(all="ignore"), _ignore_warnings():
        ref = REF[name](x, axis=axis)
    assert np.shape(got) == np.shape(ref)
    assert np.asarray(got).dtype == np.asarray(ref).dtype
    if name in ("max", "min", "argmax"):
        np.testing.assert_array_equal(got, ref)
    else:
        tol = 2e-5 if x.dtype == np.float32 else 1e-12
        # sums of values up to 50 with different rounding orders
        scale = np.abs(x.astype(np.float64)).sum(axis=axis)
        with np.errstate(all="ignore"):
            diff = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
            bad = ~(diff <= tol * (scale + 1)) & ~(np.isnan(got) & np.isnan(ref))
            bad &= ~(np.asarray(got) == np.asarray(ref))  # infinities
        assert not np.any(bad), (got, ref)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _ignore_warnings():
    import warnings

    cm = warnings.catch_warnings()
    cm.__enter__()
    warnings.simplefilter("ignore")

    class _C:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            cm.__exit__(*exc)
            return False

    return _C()


@pytest.mark.parametrize("name", sorted(REF))
def test_reductions_large_all_axes(name):
    rng = np.random.default_rng(3)
    for dt in FLOATS:
        x = rng.standard_normal((37, 1031, 29)).astype(dt)
        for axis in (None, 0, 1, 2, -1):
            check_reduce(name, x, axis)
        check_reduce(name, rng.standard_normal((2, 300_007)).astype(dt), 1)


def test_nan_propagates_in_max_min_argmax():
    x = np.arange(100_000, dtype=np.float64)
    x[77_777] = np.nan
    x[88_888] = np.nan
    assert np.isnan(ops.max(x)) and np.isnan(ops.min(x))
    assert ops.argmax(x) == 77_777
    y = np.stack([x, -x])
    np.testing.assert_array_equal(ops.argmax(y, axis=1), np.argmax(y, axis=1))
    np.testing.assert_array_equal(ops.argmax(y.T, axis=0), np.argmax(y.T, axis=0))
    np.testing.assert_array_equal(ops.max(y, axis=0), np.max(y, axis=0))


def test_float32_sum_of_ten_million_matches_numpy_pairwise():
    rng = np.random.default_rng(4)
    x = rng.random(10_000_000, dtype=np.float32)
    exact = x.astype(np.float64).sum()
    got = ops.sum(x)
    assert got.dtype == np.float32
    np_err = abs(float(np.sum(x)) - exact)
    our_err = abs(float(got) - exact)
    # float32 precision: a few ulp of the result, and no worse than NumPy's order of error
    assert our_err <= 4 * np.spacing(np.float32(exact)) + 2 * np_err
    np.testing.assert_allclose(ops.mean(x), x.astype(np.float64).mean(), rtol=1e-6)


@pytest.mark.parametrize("mode", ["fixed", "shared"])
def test_reductions_bitwise_reproducible_for_1_to_8_threads(mode):
    from forkwait._native import _elementwise, _team

    rng = np.random.default_rng(5)
    x32 = (rng.standard_normal(1_000_003) * 1e3).astype(np.float32)
    x64 = rng.standard_normal((3, 333_337)) * 1e3
    cols = rng.standard_normal((5003, 211)).astype(np.float32)
    probe_in = np.zeros(1 << 20)
    old_mode = fw.get_intra_op_mode()
    fw.set_intra_op_mode(mode)
    results = []
    try:
        for n in range(1, 9):
            with fw.num_threads(n):
                probe = np.empty_like(probe_in)
                _elementwise.unary(_elementwise.PROBE_OP, probe_in, probe, 1)
                if mode == "fixed":  # the team really had n threads (1: serial build)
                    assert probe[0] == (n if _team.openmp_info()[0] else 1)
                r = [
                    ops.sum(x32),
                    ops.mean(x32),
                    ops.sum(x64),
                    ops.sum(x64, axis=1),
                    ops.mean(x64, axis=-1),
                    ops.sum(cols, axis=0),
                    ops.max(x32),
                    ops.argmax(x64),
                    ops.argmax(x64, axis=1),
                    ops.softmax(cols),
                    ops.layer_norm(cols),
                ]
                results.append([np.asarray(v).tobytes() for v in r])
    finally:
        fw.set_intra_op_mode(old_mode)
    for r in results[1:]:
        assert r == results[0]


def test_sum_is_the_same_tree_for_a_row_and_the_whole():
    x = np.random.default_rng(6).standard_normal(123_457).astype(np.float32)
    assert ops.sum(x).tobytes() == ops.sum(x.reshape(1, -1), axis=1)[0].tobytes()


def test_reduction_errors_and_out():
    x = np.ones((3, 4))
    with pytest.raises(np.exceptions.AxisError):
        ops.sum(x, axis=2)
    with pytest.raises(np.exceptions.AxisError):
        ops.max(x, axis=-3)
    with pytest.raises(TypeError):
        ops.sum(x, axis=1.5)
    with pytest.raises(ValueError, match="empty"):
        ops.argmax(np.ones((3, 0)), axis=1)
    with pytest.raises(ValueError, match="identity"):
        ops.max(np.ones(0))
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.sum(np.ones(3, np.complex64))
    out = np.empty(4)
    assert ops.sum(x, axis=0, out=out) is out
    np.testing.assert_array_equal(out, [3, 3, 3, 3])
    with pytest.raises(ValueError, match="shape"):
        ops.sum(x, axis=1, out=out)
    with pytest.raises(ValueError, match="dtype"):
        ops.argmax(x, axis=0, out=np.empty(4))
    o0 = np.empty(())
    assert ops.mean(x, out=o0) is o0 and o0 == 1.0
    assert ops.sum(x, axis=1, keepdims=True).shape == (3, 1)
    assert ops.sum(np.ones((3, 0)), axis=1).tolist() == [0, 0, 0]


@pytest.mark.parametrize("dt", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_reductions_follow_numpy(dt):
    x = (np.arange(24) % 5).astype(dt).reshape(4, 6)
    for name in sorted(REF):
        for axis in (None, 0, 1):
            got, ref = getattr(ops, name)(x, axis=axis), REF[name](x, axis=axis)
            assert np.asarray(got).dtype == np.asarray(ref).dtype
            np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------ row ops


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("d", [1, 7, 16, 1000, 4099])
def test_layer_norm_constant_rows_and_large_offsets(dtype, d):
    # a constant row has mean exactly c and variance exactly 0, so the result
    # is exactly b (float32: sums taken in float64; float64: the second pass
    # corrects the rounding of the mean)
    c = np.array([0.1, -3.0e4, 1.0e-3, 12345.678, 3e-39], dtype=dtype)[:, None]
    x = np.broadcast_to(c, (5, d)).copy()
    b = np.linspace(-1, 1, d).astype(dtype)
    np.testing.assert_array_equal(ops.layer_norm(x, None, b), np.broadcast_to(b, x.shape))
    assert not ops.layer_norm(x).any()
    # a large offset with small spread: float32 rows still match float64 math
    rng = np.random.default_rng(d)
    x = (1000 + rng.standard_normal((3, d)) * 1e-2).astype(dtype)
    ref = layer_norm_ref(x.astype(np.float64), None, None, eps=1e-5)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ops.layer_norm(x), ref, **tol)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_rows_of_every_length_around_the_vector_widths(dtype, name):
    # the row kernels work on 4 vectors of 16 float32 / 8 float64 lanes at a
    # time, then whole vectors, then an overlapping last vector; runs of 256
    lengths = list(range(1, 70)) + [127, 128, 129, 255, 256, 257, 511, 513, 1000]
    ref_fn = softmax_ref if name == "softmax" else log_softmax_ref
    # exp(x - max) inherits the rounding of x - max: up to |x - max| = 70 here
    tol = dict(rtol=1e-5, atol=1e-30) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-300)
    if name == "log_softmax":
        tol["atol"] = 2e-6 if dtype == np.float32 else 1e-13
    rng = np.random.default_rng(len(lengths))
    for d in lengths:
        x = (rng.standard_normal((3, d)) * 4).astype(dtype)
        x[1, d // 2] = 60  # a far larger element somewhere in the middle
        x[2, d - 1] = 30  # the largest element in the tail
        got = getattr(ops, name)(x)
        np.testing.assert_allclose(got, ref_fn(x), **tol, err_msg=f"d={d}")
        y = x.copy()
        getattr(ops, name)(y, out=y)
        np.testing.assert_array_equal(y, got, err_msg=f"d={d} in place")


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_rows_with_nan_and_infinities(dtype):
    for d in (1, 5, 17, 64, 300):
        x = np.zeros((4, d), dtype)
        x[0, d - 1] = np.nan  # NaN anywhere: the whole row is NaN
        x[1, :] = -np.inf  # no finite element: NaN (as NumPy's formula and torch)
        x[2, 0] = np.inf
        x[3, : d - 1] = -np.inf  # -inf elements: probability 0
        for name in ("softmax", "log_softmax"):
            with np.errstate(all="ignore"):
                got = getattr(ops, name)(x)
            assert np.isnan(got[:3]).all(), (name, d)
            assert got[3, d - 1] == (1 if name == "softmax" else 0)
            assert (got[3, : d - 1] == (0 if name == "softmax" else -np.inf)).all()


def test_row_ops_large_in_place_and_promotion():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1000, 1001))
    w, b = rng.standard_normal(1001), rng.standard_normal(1001)
    np.testing.assert_allclose(ops.softmax(x), softmax_ref(x), rtol=1e-12)
    np.testing.assert_allclose(ops.log_softmax(x), log_softmax_ref(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        ops.layer_norm(x, w, b), layer_norm_ref(x, w, b), rtol=1e-9, atol=1e-9
    )
    for name in ("softmax", "log_softmax"):
        y = x.copy()
        assert getattr(ops, name)(y, out=y) is y
        np.testing.assert_array_equal(y, getattr(ops, name)(x))
    y = x.copy()
    ops.layer_norm(y, w, b, out=y)
    np.testing.assert_array_equal(y, ops.layer_norm(x, w, b))
    # float32 x with float64 weight promotes to float64, as NumPy would
    assert ops.layer_norm(x.astype(np.float32), w).dtype == np.float64
    assert ops.softmax(np.arange(6).reshape(2, 3)).dtype == np.float64


def test_row_op_errors():
    with pytest.raises(ValueError, match="dimension"):
        ops.softmax(np.float64(1.0))
    with pytest.raises(ValueError, match="shape"):
        ops.layer_norm(np.ones((2, 3)), weight=np.ones(4))
    with pytest.raises(ValueError, match="eps"):
        ops.layer_norm(np.ones((2, 3)), eps=-1.0)
    with pytest.raises(np.exceptions.AxisError):
        ops.softmax(np.ones((2, 3)), axis=2)
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.softmax(np.ones(3, np.complex128))
    with pytest.raises(ValueError, match="dtype"):
        ops.softmax(np.ones(3), out=np.ones(3, np.float32))
    assert ops.softmax(np.ones((0, 3))).shape == (0, 3)
    assert ops.layer_norm(np.ones((2, 0))).shape == (2, 0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_a_nan_sum_is_the_positive_quiet_nan(dt):
    """Which NaN an addition of NaNs (or of inf and -inf) returns follows the
    order of its operands, which the compiler picks: a NaN sum is made the one
    positive quiet NaN, so its bits do not depend on the build or the variant."""
    canonical = np.array(np.nan, dt).tobytes()
    cases = [np.array([1.0, np.inf, -np.inf, 2.0], dt),
             np.array([np.nan, -np.nan, 1.0], dt),
             -np.full(10_000, np.nan, dt)]  # negative NaNs in every block
    for x in cases:
        assert np.asarray(ops.sum(x)).tobytes() == canonical
        cols = ops.sum(np.stack([x, x], axis=1), axis=0)
        assert cols.tobytes() == canonical * 2
        rows = ops.sum(np.stack([x, x]), axis=1)
        assert rows.tobytes() == canonical * 2
