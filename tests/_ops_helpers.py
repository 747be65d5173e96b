"""Shared strategies and references for the forkwait.ops tests."""

from __future__ import annotations

import numpy as np
import scipy.special
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOATS = [np.float32, np.float64]

# rtol/atol per dtype for transcendental results compared to float64 references
TOL = {
    np.dtype(np.float32): dict(rtol=3e-6, atol=1e-37),
    np.dtype(np.float64): dict(rtol=1e-13, atol=1e-300),
}


def shapes(min_dims=0, max_dims=3, max_side=9):
    """Shapes with 0, 1, odd and prime lengths."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side)


def arrays(dtype, shape, special=True, lo=-50.0, hi=50.0):
    elements = st.floats(
        lo, hi, width=np.dtype(dtype).itemsize * 8, allow_nan=False, allow_infinity=False
    )
    if special:
        elements = st.one_of(elements, st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]))
    return hnp.arrays(dtype, shape, elements=elements)


def variants(x):
    """The array, a read-only copy and a non-contiguous view with the same values."""
    ro = x.copy()
    ro.flags.writeable = False
    big = np.empty(x.shape + (2,), x.dtype)
    big[..., 0] = x
    return [x, ro, big[..., 0]]


def gelu_ref(x):
    xd = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        y = 0.5 * xd * scipy.special.erfc(-xd / np.sqrt(2.0))
    return np.where(xd == -np.inf, -0.0, y)


def sigmoid_ref(x):
    return scipy.special.expit(np.asarray(x, np.float64))


UNARY_REF = {
    "neg": np.negative,
    "abs": np.abs,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "tanh": np.tanh,
    "sigmoid": sigmoid_ref,
    "relu": lambda x: np.maximum(x, 0),
    "gelu": gelu_ref,
}

BINARY_REF = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
}


def softmax_ref(x, axis=-1):
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis=-1):
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        s = x - x.max(axis=axis, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def layer_norm_ref(x, w=None, b=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        y = (x - m) / np.sqrt(v + eps)
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
    return y


# ------------------------------------------------ accuracy over whole ranges


def all_float32(step=1021):
    """Every ``step``-th float32 bit pattern that is finite (both signs, every
    binade: the whole range, tails and subnormals included)."""
    bits = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


def float64_samples(n=200_000, seed=0):
    """Random float64 bit patterns (every binade, both signs) plus a dense
    sweep of [-40, 40]."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**63, n, dtype=np.uint64).view(np.float64)
    x = np.concatenate([x, -x, np.linspace(-40, 40, n)])
    return x[np.isfinite(x)]


def _gelu_mpmath(x):
    import mpmath

    mpmath.mp.dps = 40
    return np.array(
        [float(0.5 * mpmath.mpf(v) * mpmath.erfc(-mpmath.mpf(v) / mpmath.sqrt(2))) for v in x]
    )


def accuracy_reference(name, x):
    """A reference for ``name`` at x, as float64 (float32 x) or as
    np.longdouble / mpmath values (float64 x), far more accurate than x's dtype."""
    ld = np.longdouble
    with np.errstate(all="ignore"):
        if x.dtype == np.float32:
            xd = x.astype(np.float64)
            return {
                "exp": lambda: np.exp(xd),
                "log": lambda: np.log(xd),
                "tanh": lambda: np.tanh(xd),
                "sigmoid": lambda: scipy.special.expit(xd),
                "gelu": lambda: gelu_ref(xd),
            }.get(name, lambda: UNARY_REF[name](xd))()
        if name == "gelu":
            return _gelu_mpmath(x)
        xl = x.astype(ld)
        return {
            "exp": lambda: np.exp(xl),
            "log": lambda: np.log(xl),
            "tanh": lambda: np.tanh(xl),
            "sigmoid": lambda: 1 / (1 + np.exp(-xl)),
        }.get(name, lambda: UNARY_REF[name](x).astype(ld))()


def ulp_error(got, ref, dt):
    """(worst error in ulp of dt, the x index where it is, count of wrong
    non-finite results) of ``got`` against the accurate ``ref``; the ulp of a
    subnormal result is the smallest subnormal."""
    dt = np.dtype(dt)
    with np.errstate(all="ignore"):
        r = np.asarray(ref).astype(dt)
    fin = np.isfinite(r)
    wrong = int(np.sum(~fin & ~((np.isnan(r) & np.isnan(got)) | (r == got))))
    ulp = np.spacing(np.abs(r[fin])).astype(np.longdouble)
    with np.errstate(all="ignore"):
        err = np.abs(got[fin].astype(np.longdouble) - np.asarray(ref)[fin].astype(np.longdouble))
        err = (err / ulp).astype(np.float64)
    err[~np.isfinite(got[fin])] = np.inf
    if not err.size:
        return 0.0, 0, wrong
    i = int(np.argmax(err))
    return float(err[i]), int(np.flatnonzero(fin)[i]), wrong
