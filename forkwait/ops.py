"""Intra-op kernels: NumPy arrays in, NumPy arrays out.

Every op checks its arguments here (dtype, shape, broadcasting, ``out=``),
allocates the result, and calls a ``nogil`` OpenMP kernel in
``forkwait._native`` with the team size read at call time (see
:func:`forkwait.set_num_threads` and :func:`forkwait.num_threads`).

Dtypes: float32 and float64 run natively. Mixed inputs and integer or bool
inputs are promoted as NumPy promotes them; an op whose NumPy result is an
integer (``add`` of two int arrays, ``sum`` of ints, ...) is computed by NumPy
itself. Where NumPy would return float16 (``exp`` of int8, say) forkwait
returns float32. Other dtypes (complex, float16, object, ...) raise
``TypeError``.

Reductions are reproducible: the result is bitwise the same whatever the
number of threads (fixed blocks combined in a fixed order).

Examples
--------
>>> import numpy as np
>>> import forkwait as fw
>>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
>>> fw.ops.sum(fw.ops.mul(x, x), axis=1)
array([ 5., 25.])
>>> with fw.num_threads(1):
...     fw.ops.softmax(np.zeros((1, 4)))
array([[0.25, 0.25, 0.25, 0.25]])
"""

from __future__ import annotations

import builtins
import operator
import warnings
from typing import Any

import numpy as np

from forkwait._native import _elementwise, _matmul, _reduce, _rows

__all__ = [
    "abs",
    "add",
    "argmax",
    "div",
    "exp",
    "gelu",
    "layer_norm",
    "log",
    "log_softmax",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "mul",
    "neg",
    "relu",
    "sigmoid",
    "softmax",
    "sqrt",
    "sub",
    "sum",
    "tanh",
]

_ndarray = np.ndarray
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_INTP = np.dtype(np.intp)
_SPEC = {_F32: "float", _F64: "double"}
_SUPPORTED = "supported: float32 and float64 (integer and bool inputs are promoted as NumPy does)"

# Serial below these many elements (flops for matmul): see bench/ops_ratios.py
# grain and docs/performance.md ("Grain sizes") for the measurement that chose them.
GRAIN_CHEAP = 1 << 15  # memory-bound element-wise ops
GRAIN_MATH = 1 << 12  # exp, tanh, sigmoid, gelu, log, sqrt
GRAIN_REDUCE = 1 << 15
GRAIN_ROWS = 1 << 12
GRAIN_MATMUL = 1 << 18

_UNARY_FN = {dt: _elementwise.unary[s] for dt, s in _SPEC.items()}
_BINARY_FN = {dt: _elementwise.binary[s] for dt, s in _SPEC.items()}
_SCALAR_FN = {dt: _elementwise.binary_scalar[s] for dt, s in _SPEC.items()}
_REDUCE_ALL_FN = {dt: _reduce.reduce_all[s] for dt, s in _SPEC.items()}
_REDUCE_AXIS_FN = {dt: _reduce.reduce_axis[s] for dt, s in _SPEC.items()}
_SOFTMAX_FN = {dt: _rows.softmax_rows[s] for dt, s in _SPEC.items()}
_LAYER_NORM_FN = {dt: _rows.layer_norm_rows[s] for dt, s in _SPEC.items()}
_MATMUL_FN = {dt: _matmul.matmul[s] for dt, s in _SPEC.items()}
_NO_INDEX = np.zeros(1, dtype=np.intp)  # never written: only argmax writes indices

_U = _elementwise.UNARY
# The small-array fast path (plain float arrays, checked in C); None: not taken.
_fast_unary = _elementwise.fast_unary
_fast_binary = _elementwise.fast_binary
_B = _elementwise.BINARY
_R = _reduce.REDUCE
_MATH_OPS = frozenset(("exp", "log", "sqrt", "tanh", "sigmoid", "gelu"))


# ------------------------------------------------------------------ checks


def _unsupported(name: str, dt: Any) -> TypeError:
    return TypeError(f"forkwait.ops.{name}: unsupported dtype {dt}; {_SUPPORTED}")


def _as_array(x: Any) -> np.ndarray:
    return x if type(x) is _ndarray else np.asarray(x)


def _float_dtype(name: str, dt: np.dtype) -> np.dtype:
    """The float dtype an op that returns floats computes in, for input dtype dt."""
    if dt.kind == "f" and dt.itemsize in (4, 8):  # also non-native byte order
        return _F64 if dt.itemsize == 8 else _F32
    if dt.kind in "biu":
        res = np.promote_types(dt, np.float16)
        return _F32 if res.itemsize < 4 else res
    raise _unsupported(name, dt)


def _is_int(dt: np.dtype) -> bool:
    return dt.kind in "biu"


def _check_out(name: str, out: Any, shape: tuple, dt: np.dtype) -> np.ndarray:
    if type(out) is not _ndarray and not isinstance(out, _ndarray):
        raise TypeError(
            f"forkwait.ops.{name}: out must be a numpy.ndarray, got {type(out).__name__}"
        )
    if out.shape != shape:
        raise ValueError(f"forkwait.ops.{name}: out has shape {out.shape}, the result has {shape}")
    if out.dtype != dt:
        raise ValueError(f"forkwait.ops.{name}: out has dtype {out.dtype}, the result is {dt}")
    flags = out.flags
    if not flags.c_contiguous:
        raise ValueError(f"forkwait.ops.{name}: out must be C-contiguous")
    if not flags.writeable:
        raise ValueError(f"forkwait.ops.{name}: out is read-only")
    return out


def _unalias(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """x, or a copy of it where it overlaps ``out`` other than exactly (in place)."""
    if out is None or x is out or not np.may_share_memory(x, out):
        return x
    if (
        x.shape == out.shape
        and x.strides == out.strides
        and x.__array_interface__["data"][0] == out.__array_interface__["data"][0]
    ):
        return x
    return x.copy()


def _flat(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 1 else x.reshape(-1)


def _axis(name: str, axis: Any, ndim: int) -> int:
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(
            f"forkwait.ops.{name}: axis must be an int or None, got {type(axis).__name__}"
        ) from None
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(ax, ndim)
    return ax % ndim


# -------------------------------------------------------------- element-wise


def _unary(name: str, x: Any, out: Any, numpy_fn: Any = None) -> Any:
    res = _fast_unary(_U[name], x, out, GRAIN_MATH if name in _MATH_OPS else GRAIN_CHEAP)
    if res is not None:
        return res
    if type(x) is not _ndarray:
        x = np.asarray(x)
    dt = x.dtype
    fn = _UNARY_FN.get(dt)
    if fn is None:
        if numpy_fn is not None and _is_int(dt):  # integer result: NumPy's own
            return (
                numpy_fn(x) if out is None else numpy_fn(x, out=_check_out(name, out, x.shape, dt))
            )
        dt = _float_dtype(name, dt)
        fn = _UNARY_FN[dt]
        x = np.asarray(x, dtype=dt, order="C")  # (ascontiguousarray makes 0-d 1-d)
    elif not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty(x.shape, dt)
    else:
        _check_out(name, out, x.shape, dt)
        x = _unalias(x, out)
    if x.size:
        if x.ndim != 1:
            fn(
                _U[name],
                x.reshape(-1),
                out.reshape(-1),
                GRAIN_MATH if name in _MATH_OPS else GRAIN_CHEAP,
            )
        else:
            fn(_U[name], x, out, GRAIN_MATH if name in _MATH_OPS else GRAIN_CHEAP)
    return out


def _relu_numpy(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(x, 0, out=out) if out is not None else np.maximum(x, 0).astype(x.dtype)


_PY_SCALARS = (float, int, bool)


def _trailing(small: tuple, full: tuple) -> bool:
    """small, without leading 1s, is a trailing block of full (a repeated row)."""
    i = 0
    while i < len(small) and small[i] == 1:
        i += 1
    s = small[i:]
    return len(s) <= len(full) and full[len(full) - len(s) :] == s


def _binary(name: str, a: Any, b: Any, out: Any, numpy_fn: Any) -> Any:
    code = _B[name]
    res = _fast_binary(code, a, b, out, GRAIN_CHEAP)
    if res is not None:
        return res
    ta = type(a)
    tb = type(b)
    # fast paths: same dtype arrays of the same shape; array with Python scalar
    if ta is _ndarray:
        dt = a.dtype
        if tb is _ndarray:
            if b.dtype is dt and a.shape == b.shape and dt in _BINARY_FN:
                if out is None:
                    out = np.empty(a.shape, dt)
                    if not a.flags.c_contiguous:
                        a = np.ascontiguousarray(a)
                    if not b.flags.c_contiguous:
                        b = np.ascontiguousarray(b)
                    if a.size:
                        if a.ndim == 1:
                            _BINARY_FN[dt](code, a, b, out, GRAIN_CHEAP)
                        else:
                            _BINARY_FN[dt](
                                code, a.reshape(-1), b.reshape(-1), out.reshape(-1), GRAIN_CHEAP
                            )
                    return out
        elif (tb is float or tb is int) and dt in _SCALAR_FN:
            return _with_scalar(name, code, dt, a, b, False, out)
    elif tb is _ndarray and (ta is float or ta is int) and b.dtype in _SCALAR_FN:
        return _with_scalar(name, code, b.dtype, b, a, True, out)
    return _binary_general(name, code, a, b, out, numpy_fn)


def _with_scalar(
    name: str, code: int, dt: np.dtype, a: np.ndarray, s: Any, left: bool, out: Any
) -> np.ndarray:
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    if out is None:
        out = np.empty(a.shape, dt)
    else:
        _check_out(name, out, a.shape, dt)
        a = _unalias(a, out)
    if a.size:
        _SCALAR_FN[dt](code, _flat(a), float(s), left, _flat(out), GRAIN_CHEAP)
    return out


def _binary_general(name: str, code: int, a: Any, b: Any, out: Any, numpy_fn: Any) -> Any:
    # Python scalars stay "weak" for the promotion (NEP 50), as in NumPy
    wa = a if type(a) in _PY_SCALARS else _as_array(a)
    wb = b if type(b) in _PY_SCALARS else _as_array(b)
    for w in (wa, wb):
        if not isinstance(w, _PY_SCALARS) and not _is_int(w.dtype):
            _float_dtype(name, w.dtype)  # raises TypeError for complex, float16, ...
    dt = np.result_type(wa, wb)
    if dt.kind == "f" and dt not in _SPEC:
        dt = _float_dtype(name, dt)
    if _is_int(dt):
        if name != "div":  # integer result: NumPy computes it
            if out is None:
                return numpy_fn(wa, wb)
            shape = np.broadcast_shapes(np.shape(wa), np.shape(wb))
            return numpy_fn(wa, wb, out=_check_out(name, out, shape, dt))
        dt = _F64
    if dt not in _SPEC:
        raise _unsupported(name, dt)
    a = np.asarray(wa, dtype=dt, order="C")  # C-contiguous; 0-d stays 0-d
    b = np.asarray(wb, dtype=dt, order="C")
    sa, sb = a.shape, b.shape
    shape = sa if sa == sb else np.broadcast_shapes(sa, sb)
    if out is None:
        out = np.empty(shape, dt)
    else:
        _check_out(name, out, shape, dt)
        a = _unalias(a, out)
        b = _unalias(b, out)
    if out.size == 0:
        return out
    # the kernel takes each operand as the full shape, one element, or a row
    # repeated over a full-shape other operand; anything else is materialised
    if a.shape != shape and a.size != 1 and not (b.shape == shape and _trailing(sa, shape)):
        a = np.ascontiguousarray(np.broadcast_to(a, shape))
    if b.shape != shape and b.size != 1 and not (a.shape == shape and _trailing(sb, shape)):
        b = np.ascontiguousarray(np.broadcast_to(b, shape))
    _BINARY_FN[dt](code, a.reshape(-1), b.reshape(-1), out.reshape(-1), GRAIN_CHEAP)
    return out


# ---------------------------------------------------------------- reductions


def _reduction(name: str, x: Any, axis: Any, out: Any, keepdims: bool) -> Any:
    if type(x) is not _ndarray:
        x = np.asarray(x)
    dt = x.dtype
    if dt not in _SPEC:
        if name == "mean" and _is_int(dt):
            dt = _F64  # NumPy's mean of integers is float64
        elif _is_int(dt):
            fn: Any = {"sum": np.sum, "max": np.max, "min": np.min}.get(name)
            if fn is not None:
                return fn(x, axis=axis, out=out, keepdims=keepdims)
            return np.argmax(x, axis=axis, out=out, keepdims=keepdims)
        else:
            dt = _float_dtype(name, dt)
        x = np.asarray(x, dtype=dt)
    code = _R["sum" if name == "mean" else name]
    ndim = x.ndim
    res_dt = _INTP if name == "argmax" else dt
    if axis is not None:
        ax = _axis(name, axis, ndim)
    if axis is None or ndim == 1:
        shape: tuple = (1,) * ndim if keepdims else ()
        n = x.size
        if n == 0:
            _empty_check(name, x, None)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        value, index = _REDUCE_ALL_FN[dt](code, _flat(x), GRAIN_REDUCE)
        if name == "argmax":
            result = np.intp(index)
        elif name == "mean":
            if n == 0:
                warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=3)
            result = dt.type(value) / n if n else dt.type(np.nan)
        else:
            result = dt.type(value)
        if out is not None:
            _check_out(name, out, shape, res_dt)
            out[...] = result
            return out
        return np.full(shape, result, res_dt) if shape else result
    shp = x.shape
    k = shp[ax]
    outer = int(np.prod(shp[:ax], dtype=np.int64))
    inner = int(np.prod(shp[ax + 1 :], dtype=np.int64))
    rshape = shp[:ax] + ((1,) if keepdims else ()) + shp[ax + 1 :]
    if out is None:
        res = np.empty(rshape, res_dt)
    else:
        res = _check_out(name, out, rshape, res_dt)
        x = _unalias(x, res)
    if k == 0:
        _empty_check(name, x, ax)
        res[...] = 0 if name == "sum" else np.nan
        return res
    if res.size == 0:
        return res
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    if name == "argmax":
        vals = np.empty(outer * inner, dt)
        _REDUCE_AXIS_FN[dt](code, _flat(x), outer, k, inner, vals, res.reshape(-1), 0, GRAIN_REDUCE)
    else:
        _REDUCE_AXIS_FN[dt](
            code,
            _flat(x),
            outer,
            k,
            inner,
            res.reshape(-1),
            _NO_INDEX,
            k if name == "mean" else 0,
            GRAIN_REDUCE,
        )
    return res


def _empty_check(name: str, x: np.ndarray, axis: int | None) -> None:
    if name in ("max", "min"):
        np_name = "maximum" if name == "max" else "minimum"
        raise ValueError(f"zero-size array to reduction operation {np_name} which has no identity")
    if name == "argmax":
        raise ValueError("attempt to get argmax of an empty sequence")


# ------------------------------------------------------------------ row ops


def _rows_input(name: str, x: Any, axis: Any) -> tuple[np.ndarray, int]:
    x = _as_array(x)
    if x.ndim == 0:
        raise ValueError(f"forkwait.ops.{name}: needs an array with at least one dimension")
    dt = x.dtype
    if dt not in _SPEC:
        dt = _float_dtype(name, dt)
        x = np.asarray(x, dtype=dt)
    return x, _axis(name, axis, x.ndim)


def _softmax(name: str, x: Any, axis: Any, out: Any) -> np.ndarray:
    x, ax = _rows_input(name, x, axis)
    dt = x.dtype
    if out is None:
        res = np.empty(x.shape, dt)
    else:
        res = _check_out(name, out, x.shape, dt)
        x = _unalias(x, res)
    if x.size == 0:
        return res
    last = ax == x.ndim - 1
    xs = np.ascontiguousarray(x if last else np.moveaxis(x, ax, -1))
    target = res if last else np.empty(xs.shape, dt)
    d = xs.shape[-1]
    _SOFTMAX_FN[dt](
        _rows.ROWS[name], xs.reshape(-1), target.reshape(-1), xs.size // d, d, GRAIN_ROWS
    )
    if not last:
        res[...] = np.moveaxis(target, -1, ax)
    return res


# ------------------------------------------------------------------ the ops


def _unary_doc(name: str, what: str, example: str, result: str) -> str:
    return f"""{what}, element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does).
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be `x`
        itself (in place).

    Returns
    -------
    numpy.ndarray
        The result, of `x`'s float dtype (`out` when given).

    Raises
    ------
    TypeError
        If the dtype is not supported (complex, float16, object, ...).
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.{name}(np.array({example}))
    {result}
    """


def neg(x: Any, out: Any = None) -> np.ndarray:
    return _unary("neg", x, out, np.negative)


def abs(x: Any, out: Any = None) -> np.ndarray:  # noqa: A001 - mirrors numpy.abs
    return _unary("abs", x, out, np.absolute)


def exp(x: Any, out: Any = None) -> np.ndarray:
    return _unary("exp", x, out)


def log(x: Any, out: Any = None) -> np.ndarray:
    return _unary("log", x, out)


def sqrt(x: Any, out: Any = None) -> np.ndarray:
    return _unary("sqrt", x, out)


def tanh(x: Any, out: Any = None) -> np.ndarray:
    return _unary("tanh", x, out)


def sigmoid(x: Any, out: Any = None) -> np.ndarray:
    return _unary("sigmoid", x, out)


def relu(x: Any, out: Any = None) -> np.ndarray:
    return _unary("relu", x, out, _relu_numpy)


def gelu(x: Any, out: Any = None) -> np.ndarray:
    return _unary("gelu", x, out)


neg.__doc__ = _unary_doc("neg", "-x", "[1.0, -2.0]", "array([-1.,  2.])")
abs.__doc__ = _unary_doc("abs", "|x|", "[1.0, -2.0]", "array([1., 2.])")
exp.__doc__ = _unary_doc(
    "exp", "e**x (within 2 ulp of libm)", "[0.0, 1.0]", "array([1.        , 2.71828183])"
)
log.__doc__ = _unary_doc("log", "The natural logarithm", "[1.0, np.e]", "array([0., 1.])")
sqrt.__doc__ = _unary_doc("sqrt", "The square root", "[4.0, 9.0]", "array([2., 3.])")
tanh.__doc__ = _unary_doc(
    "tanh", "The hyperbolic tangent", "[0.0, 1.0]", "array([0.        , 0.76159416])"
)
sigmoid.__doc__ = _unary_doc(
    "sigmoid",
    "The logistic function 1 / (1 + e**-x)",
    "[0.0, 2.0]",
    "array([0.5       , 0.88079708])",
)
relu.__doc__ = _unary_doc("relu", "max(x, 0), NaN staying NaN", "[-1.0, 2.0]", "array([0., 2.])")
gelu.__doc__ = _unary_doc(
    "gelu",
    "x/2 (1 + erf(x/sqrt(2))), the exact GELU (torch's default)",
    "[-1.0, 1.0]",
    "array([-0.15865525,  0.84134475])",
)


def _binary_doc(name: str, what: str, result: str) -> str:
    return f"""{what}, element-wise, with NumPy broadcasting.

    Same shapes, an array with a scalar, and a row over the last axis
    (``(N, D)`` with ``(D,)``) run at full speed; other broadcasts are
    materialised first.

    Parameters
    ----------
    a, b : array_like or scalar
        Float32 or float64; other real inputs are promoted as NumPy does
        (Python scalars are "weak", NEP 50).
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be one
        of the inputs (in place).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported.
    ValueError
        If the shapes do not broadcast, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.{name}(np.array([[1.0, 4.0], [3.0, 2.0]]), np.array([2.0, 2.0]))
    {result}
    """


def add(a: Any, b: Any, out: Any = None) -> np.ndarray:
    return _binary("add", a, b, out, np.add)


def sub(a: Any, b: Any, out: Any = None) -> np.ndarray:
    return _binary("sub", a, b, out, np.subtract)


def mul(a: Any, b: Any, out: Any = None) -> np.ndarray:
    return _binary("mul", a, b, out, np.multiply)


def div(a: Any, b: Any, out: Any = None) -> np.ndarray:
    return _binary("div", a, b, out, np.true_divide)


def maximum(a: Any, b: Any, out: Any = None) -> np.ndarray:
    return _binary("maximum", a, b, out, np.maximum)


def minimum(a: Any, b: Any, out: Any = None) -> np.ndarray:
    return _binary("minimum", a, b, out, np.minimum)


add.__doc__ = _binary_doc("add", "a + b", "array([[3., 6.],\n           [5., 4.]])")
sub.__doc__ = _binary_doc("sub", "a - b", "array([[-1.,  2.],\n           [ 1.,  0.]])")
mul.__doc__ = _binary_doc("mul", "a * b", "array([[2., 8.],\n           [6., 4.]])")
div.__doc__ = _binary_doc(
    "div", "a / b (true division)", "array([[0.5, 2. ],\n           [1.5, 1. ]])"
)
maximum.__doc__ = _binary_doc(
    "maximum", "The larger of a and b (NaN propagates)", "array([[2., 4.],\n           [3., 2.]])"
)
minimum.__doc__ = _binary_doc(
    "minimum", "The smaller of a and b (NaN propagates)", "array([[1., 2.],\n           [2., 2.]])"
)


def _reduce_doc(name: str, what: str, result_all: str, result_axis: str, extra: str = "") -> str:
    return f"""{what}, over all elements or along one axis.

    Reproducible: bitwise the same result for any number of threads.{extra}

    Parameters
    ----------
    x : array_like
        Float32 or float64 (integers and bools as NumPy does).
    axis : int, optional
        The axis to reduce (negative counts from the end); None: all elements.
    out : numpy.ndarray, optional
        C-contiguous and writable, of the result's shape and dtype (0-d when
        `axis` is None).
    keepdims : bool, optional
        Keep the reduced axis with length 1.

    Returns
    -------
    numpy scalar or numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported.
    ValueError
        If `axis` is out of range (``numpy.exceptions.AxisError``), `out` is
        not suitable{", or the array is empty" if name in ("max", "min", "argmax") else ""}.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> x = np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    >>> ops.{name}(x)
    {result_all}
    >>> ops.{name}(x, axis=1)
    {result_axis}
    """


def sum(x: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    return _reduction("sum", x, axis, out, keepdims)


def mean(x: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    return _reduction("mean", x, axis, out, keepdims)


def max(x: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    return _reduction("max", x, axis, out, keepdims)


def min(x: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    return _reduction("min", x, axis, out, keepdims)


def argmax(x: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    return _reduction("argmax", x, axis, out, keepdims)


sum.__doc__ = _reduce_doc(
    "sum",
    "The sum (pairwise: float32 sums keep float32 precision)",
    "np.float64(21.0)",
    "array([ 9., 12.])",
)
mean.__doc__ = _reduce_doc("mean", "The arithmetic mean", "np.float64(3.5)", "array([3., 4.])")
max.__doc__ = _reduce_doc(
    "max", "The largest element (NaN propagates)", "np.float64(6.0)", "array([5., 6.])"
)
min.__doc__ = _reduce_doc(
    "min", "The smallest element (NaN propagates)", "np.float64(1.0)", "array([1., 2.])"
)
argmax.__doc__ = _reduce_doc(
    "argmax",
    "The index of the first largest element (of the first NaN if any)",
    "np.int64(5)",
    "array([1, 2])",
    "\n    With ``axis=None`` the index is into the flattened array.",
)


def softmax(x: Any, axis: int = -1, out: Any = None) -> np.ndarray:
    """Softmax along an axis: ``exp(x - max) / sum(exp(x - max))``.

    Rows along the last axis run in place in cache; another `axis` is
    transposed to the last one first. NaN and inf follow the formula (a row
    with NaN or +inf gives NaN, as in NumPy/SciPy).

    Parameters
    ----------
    x : array_like
        At least 1-D; float32 or float64 (integers promoted to float).
    axis : int, optional
        The axis to normalise; default the last.
    out : numpy.ndarray, optional
        C-contiguous, writable, of `x`'s shape and float dtype; may be `x`.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported.
    ValueError
        If `x` is 0-d, `axis` is out of range, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.softmax(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    """
    return _softmax("softmax", x, axis, out)


def log_softmax(x: Any, axis: int = -1, out: Any = None) -> np.ndarray:
    """Log of the softmax along an axis: ``x - max - log(sum(exp(x - max)))``.

    Parameters
    ----------
    x : array_like
        At least 1-D; float32 or float64 (integers promoted to float).
    axis : int, optional
        The axis to normalise; default the last.
    out : numpy.ndarray, optional
        C-contiguous, writable, of `x`'s shape and float dtype; may be `x`.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported.
    ValueError
        If `x` is 0-d, `axis` is out of range, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> np.exp(ops.log_softmax(np.array([0.0, np.log(3.0)])))
    array([0.25, 0.75])
    """
    return _softmax("log_softmax", x, axis, out)


def layer_norm(
    x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5, out: Any = None
) -> np.ndarray:
    """Layer normalisation over the last axis, as ``torch.nn.functional.layer_norm``.

    ``(x - mean) / sqrt(var + eps) * weight + bias`` with the biased
    variance of each row.

    Parameters
    ----------
    x : array_like
        At least 1-D; float32 or float64 (mixed dtypes promote as NumPy does).
    weight, bias : array_like, optional
        Shape ``(x.shape[-1],)``.
    eps : float, optional
        Added to the variance; non-negative.
    out : numpy.ndarray, optional
        C-contiguous, writable, of `x`'s shape and the result dtype; may be `x`.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported.
    ValueError
        If `x` is 0-d, `weight`/`bias` have the wrong shape, `eps` is negative,
        or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.layer_norm(np.array([[1.0, 3.0]]), eps=0.0)
    array([[-1.,  1.]])
    """
    x = _as_array(x)
    if x.ndim == 0:
        raise ValueError("forkwait.ops.layer_norm: needs an array with at least one dimension")
    d = x.shape[-1]
    parts = [x]
    for label, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        p = _as_array(p)
        if p.shape != (d,):
            raise ValueError(
                f"forkwait.ops.layer_norm: {label} must have shape ({d},), got {p.shape}"
            )
        parts.append(p)
    for p in parts:
        if p.dtype not in _SPEC and not _is_int(p.dtype):
            raise _unsupported("layer_norm", p.dtype)
    dt = np.result_type(*parts) if len(parts) > 1 else x.dtype
    dt = _float_dtype("layer_norm", dt)
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"forkwait.ops.layer_norm: eps must be >= 0, got {eps}")
    w = None if weight is None else np.ascontiguousarray(weight, dtype=dt)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=dt)
    x = np.ascontiguousarray(x, dtype=dt)
    if out is None:
        res = np.empty(x.shape, dt)
    else:
        res = _check_out("layer_norm", out, x.shape, dt)
        x = _unalias(x, res)
        w = None if w is None else _unalias(w, res)
        b = None if b is None else _unalias(b, res)
    if x.size:
        _LAYER_NORM_FN[dt](x.reshape(-1), res.reshape(-1), x.size // d, d, w, b, eps, GRAIN_ROWS)
    return res


def matmul(a: Any, b: Any, out: Any = None) -> np.ndarray:
    """Matrix product of 2-D arrays, or of batches of them (3-D).

    Shapes ``(m, k) @ (k, n)``, ``(B, m, k) @ (B, k, n)``, and a 2-D operand
    with a 3-D one (the matrix is used for every batch entry; a batch of 1
    broadcasts too). The rows are split over the threads; each block is a
    single-threaded GEMM (SciPy's OpenBLAS when available, pinned to one
    thread; else forkwait's own blocked kernel).

    Parameters
    ----------
    a, b : array_like
        2-D or 3-D, float32 or float64 (mixed dtypes promote as NumPy does;
        integer-only inputs are multiplied by NumPy).
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported.
    ValueError
        If the arrays are not 2-D/3-D, the inner dimensions or the batch
        sizes differ, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.matmul(np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]]))
    array([[11.]])
    """
    a = _as_array(a)
    b = _as_array(b)
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(
            f"forkwait.ops.matmul: needs 2-D or 3-D arrays, got {a.ndim}-D and {b.ndim}-D "
            "(reshape a vector to (1, n) or (n, 1))"
        )
    for x in (a, b):
        if x.dtype not in _SPEC and not _is_int(x.dtype):
            raise _unsupported("matmul", x.dtype)
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    if k != k2:
        raise ValueError(
            f"forkwait.ops.matmul: shapes {a.shape} and {b.shape} do not align ({k} != {k2})"
        )
    ba = a.shape[0] if a.ndim == 3 else 1
    bb = b.shape[0] if b.ndim == 3 else 1
    if a.ndim == 3 and b.ndim == 3 and ba != bb and 1 not in (ba, bb):
        raise ValueError(
            f"forkwait.ops.matmul: batch sizes {ba} and {bb} differ (and neither is 1)"
        )
    batch = ba if ba != 1 else bb
    shape = (batch, m, n) if 3 in (a.ndim, b.ndim) else (m, n)
    dt = a.dtype if a.dtype is b.dtype else np.result_type(a, b)
    if _is_int(dt):
        return (
            np.matmul(a, b)
            if out is None
            else np.matmul(a, b, out=_check_out("matmul", out, shape, dt))
        )
    if builtins.max(m, n, k) >= 2**31:
        raise ValueError("forkwait.ops.matmul: each dimension must be below 2**31")
    a = np.ascontiguousarray(a, dtype=dt)
    b = np.ascontiguousarray(b, dtype=dt)
    if out is None:
        res = np.empty(shape, dt)
    else:
        res = _check_out("matmul", out, shape, dt)
        if np.may_share_memory(a, res):
            a = a.copy()
        if np.may_share_memory(b, res):
            b = b.copy()
    if res.size == 0:
        return res
    if k == 0:
        res[...] = 0
        return res
    _matmul.load_blas()
    _MATMUL_FN[dt](
        a.reshape(-1),
        b.reshape(-1),
        res.reshape(-1),
        batch,
        m,
        n,
        k,
        a.ndim == 3 and ba == batch and batch > 1,
        b.ndim == 3 and bb == batch and batch > 1,
        GRAIN_MATMUL,
    )
    return res


# ------------------------------------------------------------------ profiling
# While forkwait.profile() records, the kernel tables above hold recording
# wrappers; otherwise the plain kernels (so recording off costs nothing).


def _names(codes: dict) -> dict:
    return {v: k for k, v in codes.items()}


def _describers() -> dict:
    un, bi, red, rows = _names(_U), _names(_B), _names(_R), _names(_rows.ROWS)
    return {
        "unary": lambda a: (un[a[0]], (len(a[1]),)),
        "binary": lambda a: (bi[a[0]], (len(a[3]),)),
        "scalar": lambda a: (bi[a[0]], (len(a[1]),)),
        "reduce_all": lambda a: (red[a[0]], (len(a[1]),)),
        "reduce_axis": lambda a: ("mean" if a[7] else red[a[0]], (a[2], a[3], a[4])),
        "rows": lambda a: (rows[a[0]], (a[3], a[4])),
        "layer_norm": lambda a: ("layer_norm", (a[2], a[3])),
        "matmul": lambda a: ("matmul", (a[3], a[4], a[5], a[6])),
    }


_TABLES: dict[str, dict[Any, Any]] = {
    "unary": _UNARY_FN,
    "binary": _BINARY_FN,
    "scalar": _SCALAR_FN,
    "reduce_all": _REDUCE_ALL_FN,
    "reduce_axis": _REDUCE_AXIS_FN,
    "rows": _SOFTMAX_FN,
    "layer_norm": _LAYER_NORM_FN,
    "matmul": _MATMUL_FN,
}
_PLAIN = {kind: dict(table) for kind, table in _TABLES.items()}


def _traced(kernel: Any, describe: Any, dtype: str) -> Any:
    from forkwait._native import _runtime, pool
    from forkwait._profile import record_kernel

    now = pool._now

    def traced(*args: Any) -> Any:
        t0 = now()
        result = kernel(*args)
        t1 = now()
        op, shape = describe(args)
        record_kernel(op, shape, dtype, _runtime._last_team(), t0, t1)
        return result

    return traced


def _set_profiling(on: bool) -> None:
    """Swap recording wrappers into the kernel tables (forkwait.profile)."""
    describers = _describers()
    _elementwise._set_fast(not on)  # the fast path bypasses the tables
    for kind, table in _TABLES.items():
        for dt, kernel in _PLAIN[kind].items():
            table[dt] = _traced(kernel, describers[kind], dt.name) if on else kernel
