"""Accuracy of the vectorised exp/tanh/sigmoid/gelu over dense sweeps, in ulp."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from forkwait import ops


def ulp_error(got, ref64, dt):
    ref = ref64.astype(dt)
    ok = np.isfinite(ref) & (np.abs(ref) >= np.finfo(dt).tiny)
    err = np.abs(got[ok].astype(np.float64) - ref64[ok]) / np.spacing(np.abs(ref[ok])).astype(
        np.float64
    )
    return err.max() if err.size else 0.0


def sweep(dt, lo, hi, n=400_001):
    return np.linspace(lo, hi, n).astype(dt)


REFS = {
    "exp": lambda x: np.exp(x.astype(np.longdouble)).astype(np.float64),
    "tanh": lambda x: np.tanh(x.astype(np.longdouble)).astype(np.float64),
    "sigmoid": lambda x: scipy.special.expit(x.astype(np.float64)),
}
# max ulp allowed: float32, float64
LIMITS = {"exp": (2, 2), "tanh": (3, 3), "sigmoid": (3, 3)}
RANGES = {"exp": (-110, 90, -750, 712), "tanh": (-12, 12, -25, 25), "sigmoid": (-100, 40, -740, 40)}


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_max_ulp_error(name, dt):
    lo32, hi32, lo64, hi64 = RANGES[name]
    lo, hi = (lo32, hi32) if dt == np.float32 else (lo64, hi64)
    for x in (sweep(dt, lo, hi), sweep(dt, -1, 1)):
        with np.errstate(all="ignore"):
            err = ulp_error(getattr(ops, name)(x), REFS[name](x), dt)
        assert err <= LIMITS[name][dt == np.float64], err


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_gelu_accuracy(dt):
    x = sweep(dt, -12, 12)
    xd = x.astype(np.float64)
    ref = 0.5 * xd * scipy.special.erfc(-xd / np.sqrt(2))
    got = ops.gelu(x).astype(np.float64)
    if dt == np.float32:  # torch's float32 formula: absolute error near 1e-6 at most
        assert np.max(np.abs(got - ref)) < 2e-6
        assert np.max(np.abs(got - ref)[xd > -1] / np.abs(ref[xd > -1]).clip(1e-30)) < 5e-6
    else:
        rel = np.abs(got - ref) / np.abs(ref).clip(1e-300)
        assert np.max(rel[np.abs(xd) < 5]) < 1e-14


def test_exp_overflow_underflow_boundaries():
    for dt in (np.float32, np.float64):
        fi = np.finfo(dt)
        big = np.log(fi.max)
        x = np.array(
            [
                big * 0.9999999,
                big * 1.0000001,
                np.log(fi.smallest_subnormal) * 0.999,
                np.log(fi.smallest_subnormal) * 1.01,
            ],
            dt,
        )
        with np.errstate(all="ignore"):
            ref = np.exp(x.astype(np.longdouble)).astype(dt)
        got = ops.exp(x)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        np.testing.assert_array_equal(got == 0, ref == 0)
