"""Every op against NumPy under Hypothesis fuzzing (bad input and memory
safety): shapes (empty, 1, odd, huge), strides (slices, transposes), dtypes,
NaN/inf, read-only inputs, ``out=`` (fresh, in place, overlapping the input)
and team sizes 1..4. No wrong result, no crash.

CI runs ``FUZZ_EXAMPLES`` examples per test; ``FORKWAIT_STRESS=long`` runs
many more. Skips cleanly while ``forkwait.ops`` (or an op) is missing.
"""

import os
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
import _ops_helpers  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import forkwait as fw  # noqa: E402

ops = pytest.importorskip("forkwait.ops")

LONG = os.environ.get("FORKWAIT_STRESS", "").strip().lower() == "long"
FUZZ_EXAMPLES = 3000 if LONG else 100
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=not LONG,  # CI: the same examples every run
    suppress_health_check=list(HealthCheck),
    database=None,
)
TRIED = {"examples": 0}

pytestmark = pytest.mark.slow


def need(*names):
    missing = [n for n in names if not hasattr(ops, n)]
    if missing:
        pytest.skip(f"forkwait.ops lacks {missing}")


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\nFIGURES fuzz: examples={TRIED['examples']} (max {FUZZ_EXAMPLES} per test)")


# ---------------------------------------------------------------- strategies

DTYPES = st.sampled_from([np.float32, np.float64])
TEAMS = st.sampled_from([1, 2, 3, 4])


def elements(dtype, finite=False, bound=None):
    width = 32 if dtype == np.float32 else 64
    if bound is not None:
        bound = float(dtype(bound))  # representable in the dtype
        return st.floats(-bound, bound, width=width, allow_nan=False)
    return st.floats(width=width, allow_nan=not finite, allow_infinity=not finite,
                     allow_subnormal=True)


@st.composite
def arrays(draw, dtype=None, min_dims=0, max_dims=3, finite=False, bound=None,
           shape=None, huge=True):
    """An array as a user might pass it: any layout, maybe read-only."""
    dtype = draw(DTYPES) if dtype is None else dtype
    if huge and shape is None and draw(st.integers(0, 19)) == 0:
        # huge: more than any grain size, an odd length, from a seed
        n = draw(st.sampled_from([(1 << 17) + 3, (1 << 18) - 1, 300_001]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        scale = 1.0 if bound is None else bound
        x = (rng.standard_normal(n) * scale * 3).astype(dtype)
        if bound is not None:
            x = np.clip(x, -bound, bound)
        if not finite and bound is None:
            x[rng.integers(0, n, 5)] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
        if min_dims >= 2:
            x = x[: (n // 7) * 7].reshape(-1, 7)
        return x
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0,
                                      max_side=9))
    x = draw(hnp.arrays(dtype, shape, elements=elements(dtype, finite, bound)))
    layout = draw(st.integers(0, 3))
    if layout == 1 and x.ndim >= 1:  # a strided view of a bigger array
        big = np.repeat(x, 2, axis=-1)
        x = big[..., ::2]
    elif layout == 2 and x.ndim >= 2:  # a transposed view
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    elif layout == 3:
        x = x.copy()
        x.flags.writeable = False
    return x


def close(got, ref, dtype, rtol=None, atol=None):
    """NumPy's result up to rounding: NaN where NumPy has NaN, the same infs."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if rtol is None:
        rtol = 2e-5 if dtype == np.float32 else 1e-12
    if atol is None:
        atol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(np.isposinf(got), np.isposinf(ref))
    assert np.array_equal(np.isneginf(got), np.isneginf(ref))


def numpy_quiet(fn, *args, **kwargs):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# the same float64 references as the ops tests (scipy.special for erf/expit)
UNARY_REF = _ops_helpers.UNARY_REF


# tolerances where the reference is computed differently (float32 via float64)
UNARY_TOL = {"sigmoid": (5e-6, 1e-6), "gelu": (5e-6, 1e-6)}

BINARY_REF = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
}


def out_variant(draw, x, dtype):
    """None, a fresh out, x itself (in place), or an out overlapping x."""
    kind = draw(st.sampled_from(["none", "fresh", "inplace", "overlap"]))
    if kind == "fresh":
        return kind, np.empty(x.shape, dtype), x
    if kind == "inplace":
        x = np.array(x, dtype=dtype, order="C")  # writable, contiguous
        return kind, x, x
    if kind == "overlap" and x.ndim == 1 and x.size >= 2:
        buf = np.empty(x.size + 1, dtype)
        buf[1:] = x
        return kind, buf[:-1], buf[1:]  # out starts one element before the input
    return "none", None, x


# ---------------------------------------------------------------- element-wise


@pytest.mark.parametrize("name", list(UNARY_REF))
@FUZZ
@given(data=st.data(), team=TEAMS)
def test_unary_matches_numpy(name, data, team):
    need(name)
    dtype = data.draw(DTYPES)
    x = data.draw(arrays(dtype=dtype))
    kind, out, x = out_variant(data.draw, x, dtype)
    ref = numpy_quiet(UNARY_REF[name], np.array(x)).astype(dtype)
    with fw.num_threads(team), np.errstate(all="ignore"):
        got = getattr(ops, name)(x, out=out) if out is not None else getattr(ops, name)(x)
    TRIED["examples"] += 1
    assert np.asarray(got).dtype == dtype
    if out is not None:
        assert got is out
    rtol, atol = UNARY_TOL.get(name, (None, None))
    close(got, ref, dtype, rtol, atol)


@pytest.mark.parametrize("name", list(BINARY_REF))
@FUZZ
@given(data=st.data(), team=TEAMS)
def test_binary_matches_numpy(name, data, team):
    need(name)
    dtype = data.draw(DTYPES)
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_side=0,
                                                        max_side=7, max_dims=3))
    a = data.draw(arrays(dtype=dtype, shape=shapes.input_shapes[0]))
    if data.draw(st.booleans()):
        b = data.draw(arrays(dtype=dtype, shape=shapes.input_shapes[1]))
    else:  # a Python scalar, or the same array twice
        b = data.draw(st.one_of(st.floats(allow_nan=True, width=32), st.just(a)))
    ref = numpy_quiet(BINARY_REF[name], a, b)
    if isinstance(ref, np.ndarray) or np.ndim(ref):
        ref = np.asarray(ref)
    inplace = (data.draw(st.booleans()) and np.shape(ref) == a.shape
               and np.asarray(ref).dtype == dtype)
    with fw.num_threads(team), np.errstate(all="ignore"):
        if inplace:
            a = np.array(a, order="C")
            got = getattr(ops, name)(a, b if b is not a else a, out=a)
            assert got is a
        else:
            got = getattr(ops, name)(a, b)
    TRIED["examples"] += 1
    close(got, ref, dtype)


def test_binary_out_0d():
    # found by this fuzzing (a 0-d out= was refused); NumPy accepts it
    need("add")
    a, b = np.array(2.0), np.array(3.0)
    got = ops.add(a, b, out=a)
    assert got is a and float(a) == 5.0


def test_huge_binary_with_broadcast_row():
    need("add", "mul")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2049, 257))
    row = rng.standard_normal(257)
    for team in (1, 2, 4):
        with fw.num_threads(team):
            close(ops.add(a, row), a + row, np.float64)
            close(ops.mul(a.astype(np.float32), np.float32(3)), a.astype(np.float32) * 3,
                  np.float32)


# ---------------------------------------------------------------- reductions


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "argmax"])
@FUZZ
@given(data=st.data(), team=TEAMS)
def test_reductions_match_numpy(name, data, team):
    need(name)
    dtype = data.draw(DTYPES)
    # values bounded so that no order of summation overflows where another does not
    bound = 1e30 if dtype == np.float32 else 1e300
    finite = data.draw(st.booleans())
    x = data.draw(arrays(dtype=dtype, finite=finite, bound=bound if finite else None))
    if not finite and name in ("sum", "mean"):
        with np.errstate(all="ignore"):
            x = np.where(np.abs(x) > bound, np.sign(x) * np.inf, x).astype(dtype)
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1))) if x.ndim else None
    keepdims = data.draw(st.booleans())
    np_fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min,
             "argmax": np.argmax}[name]
    try:
        ref = numpy_quiet(np_fn, x, axis=axis, keepdims=keepdims)
    except ValueError:
        with pytest.raises(ValueError), fw.num_threads(team):
            getattr(ops, name)(x, axis=axis, keepdims=keepdims)
        TRIED["examples"] += 1
        return
    with fw.num_threads(team), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = getattr(ops, name)(x, axis=axis, keepdims=keepdims)
    TRIED["examples"] += 1
    if name == "argmax":
        assert np.array_equal(np.asarray(got), np.asarray(ref))
        return
    if name in ("sum", "mean"):
        # the error of a sum is relative to the sum of magnitudes
        mag = numpy_quiet(np.sum, np.abs(x.astype(np.float64)), axis=axis, keepdims=keepdims)
        if name == "mean":
            n = x.size if axis is None else x.shape[axis]
            mag = mag / max(n, 1)
        eps = 1e-5 if dtype == np.float32 else 1e-12
        got64 = np.asarray(got, dtype=np.float64)
        ref64 = np.asarray(ref, dtype=np.float64)
        assert got64.shape == ref64.shape
        both_nan = np.isnan(got64) & np.isnan(ref64)
        same_inf = np.isinf(ref64) & (got64 == ref64)
        ok = both_nan | same_inf | (np.abs(got64 - ref64) <= eps * np.nan_to_num(mag) + 1e-30)
        assert ok.all(), (x, axis, got, ref)
        return
    close(got, ref, dtype, rtol=0, atol=0)  # max/min are exact


# ---------------------------------------------------------------- rows


def _softmax_ref(x, axis, log=False):
    x = x.astype(np.float64)
    if x.size == 0:
        return x
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    s = np.sum(np.exp(z), axis=axis, keepdims=True)
    return z - np.log(s) if log else np.exp(z) / s


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@FUZZ
@given(data=st.data(), team=TEAMS)
def test_softmax_matches_reference(name, data, team):
    need(name)
    dtype = data.draw(DTYPES)
    x = data.draw(arrays(dtype=dtype, min_dims=1, bound=50.0 if data.draw(st.booleans())
                         else None, finite=False))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    ref = numpy_quiet(_softmax_ref, x, axis, name == "log_softmax").astype(dtype)
    inplace = data.draw(st.booleans())
    with fw.num_threads(team), np.errstate(all="ignore"):
        if inplace:
            buf = np.array(x, order="C")
            got = getattr(ops, name)(buf, axis=axis, out=buf)
            assert got is buf
        else:
            got = getattr(ops, name)(x, axis=axis)
    TRIED["examples"] += 1
    if np.isfinite(x).all():
        close(got, ref, dtype, rtol=1e-4 if dtype == np.float32 else 1e-10,
              atol=1e-6 if dtype == np.float32 else 1e-12)
    else:  # rows with NaN/inf: NaN where the formula gives NaN, else as finite
        got = np.asarray(got)
        assert got.shape == ref.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))


@FUZZ
@given(data=st.data(), team=TEAMS)
def test_layer_norm_matches_reference(data, team):
    need("layer_norm")
    dtype = data.draw(DTYPES)
    x = data.draw(arrays(dtype=dtype, min_dims=1, finite=True, bound=1e3))
    d = x.shape[-1]
    w = data.draw(st.one_of(st.none(), arrays(dtype=dtype, shape=(d,), finite=True, bound=10)))
    b = data.draw(st.one_of(st.none(), arrays(dtype=dtype, shape=(d,), finite=True, bound=10)))
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 1.0]))
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=-1, keepdims=True) if d else x64
    var = ((x64 - mu) ** 2).mean(axis=-1, keepdims=True) if d else x64
    ref = (x64 - mu) / np.sqrt(var + eps)
    if w is not None:
        ref = ref * w
    if b is not None:
        ref = ref + b
    inplace = data.draw(st.booleans())
    with fw.num_threads(team), np.errstate(all="ignore"):
        if inplace:
            buf = np.array(x, order="C")
            got = ops.layer_norm(buf, w, b, eps=eps, out=buf)
            assert got is buf
        else:
            got = ops.layer_norm(x, w, b, eps=eps)
    TRIED["examples"] += 1
    scale = 1.0 if w is None else max(1.0, float(np.abs(w).max(initial=0)))
    close(got, ref.astype(dtype), dtype, rtol=1e-3 if dtype == np.float32 else 1e-8,
          atol=(1e-3 if dtype == np.float32 else 1e-8) * scale)


# ---------------------------------------------------------------- matmul


@FUZZ
@given(data=st.data(), team=TEAMS)
def test_matmul_matches_numpy(data, team):
    need("matmul")
    dtype = data.draw(DTYPES)
    m, k, n = (data.draw(st.integers(0, 33)) for _ in range(3))
    if data.draw(st.integers(0, 9)) == 0:
        m, k, n = 130, 257, 67  # bigger than a tile, odd
    a = data.draw(arrays(dtype=dtype, shape=(m, k), finite=True, bound=100, huge=False))
    b = data.draw(arrays(dtype=dtype, shape=(k, n), finite=True, bound=100, huge=False))
    if data.draw(st.integers(0, 3)) == 0:  # a batch (3-D on both sides)
        a = np.stack([a, a * 0.5, -a])
        b = np.stack([b, -b, b * 2])
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    use_out = data.draw(st.booleans())
    with fw.num_threads(team):
        if use_out:
            out = np.full(np.shape(ref), np.nan, dtype)
            got = ops.matmul(a, b, out=out)
            assert got is out
        else:
            got = ops.matmul(a, b)
    TRIED["examples"] += 1
    mag = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))
    eps = 1e-5 if dtype == np.float32 else 1e-12
    assert np.asarray(got).shape == ref.shape
    assert (np.abs(np.asarray(got, np.float64) - ref) <= eps * mag + 1e-30).all()


@pytest.mark.parametrize("name", ["exp", "add", "sum", "softmax", "matmul"])
def test_bad_input_raises_cleanly(name):
    """Unsupported dtypes, wrong out=, bad axes: exceptions, never a crash."""
    need(name)
    fn = getattr(ops, name)
    x = np.ones((3, 4))
    bad = [
        lambda: fn(x.astype(np.complex128), *([x] if name in ("add", "matmul") else [])),
        lambda: fn(x.astype(object), *([x] if name in ("add", "matmul") else [])),
    ]
    if name in ("exp", "add", "softmax"):
        args = (x, x) if name == "add" else (x,)
        bad += [
            lambda: fn(*args, out=np.empty((4, 3))),
            lambda: fn(*args, out=np.empty((3, 4), np.float32)),
            lambda: fn(*args, out=np.empty((4, 3)).T),
            lambda: fn(*args, out=[0.0] * 12),
        ]
        ro = np.empty((3, 4))
        ro.flags.writeable = False
        bad.append(lambda: fn(*args, out=ro))
    if name in ("sum", "softmax"):
        bad.append(lambda: fn(x, axis=5))
        bad.append(lambda: fn(x, axis=1.5))
    if name == "matmul":
        bad.append(lambda: fn(x, x))
    for call in bad:
        with pytest.raises((TypeError, ValueError)):
            call()
