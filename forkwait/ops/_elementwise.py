"""Element-wise ops: unary math and binary arithmetic with broadcasting."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forkwait._native import _elementwise
from forkwait._native import pool as _pool
from forkwait.ops._checks import (
    F64,
    PY_SCALARS,
    SPEC,
    as_array,
    check_out,
    flat,
    float_dtype,
    is_int,
    ndarray,
    unalias,
    unsupported,
)

__all__ = [
    "abs", "add", "div", "exp", "gelu", "log", "maximum", "minimum", "mul", "neg",
    "relu", "sigmoid", "sqrt", "sub", "tanh",
]

# Serial below these many elements: see bench/ops_ratios.py grain and
# docs/performance.md ("Grain sizes") for the measurement that chose them.
GRAIN_CHEAP = 1 << 15  # memory-bound element-wise ops
GRAIN_MATH = 1 << 12  # exp, tanh, sigmoid, gelu, log, sqrt

# kernel tables by dtype (forkwait.ops._profiling swaps recording wrappers in)
UNARY_FN = {dt: _elementwise.unary[s] for dt, s in SPEC.items()}
BINARY_FN = {dt: _elementwise.binary[s] for dt, s in SPEC.items()}
SCALAR_FN = {dt: _elementwise.binary_scalar[s] for dt, s in SPEC.items()}

_U = _elementwise.UNARY
_B = _elementwise.BINARY
# The small-array fast path (plain float arrays, checked in C); None: not taken.
_fast_unary = _elementwise.fast_unary
_fast_binary = _elementwise.fast_binary
_MATH_OPS = frozenset(("exp", "log", "sqrt", "tanh", "sigmoid", "gelu"))


def _grain(name: str) -> int:
    return GRAIN_MATH if name in _MATH_OPS else GRAIN_CHEAP


def _unary(name: str, x: Any, out: Any, numpy_fn: Any = None) -> Any:
    grain = _grain(name)
    res = _fast_unary(_U[name], x, out, grain)
    if res is not None:
        return res
    x = as_array(name, x)
    dt = x.dtype
    fn = UNARY_FN.get(dt)
    if fn is None:
        if numpy_fn is not None and is_int(dt):  # integer result: NumPy's own
            if out is None:
                return numpy_fn(x)
            numpy_fn(x, out=check_out(name, out, x.shape, dt))
            return out
        dt = float_dtype(name, dt)
        fn = UNARY_FN[dt]
        x = np.asarray(x, dtype=dt, order="C")  # (ascontiguousarray makes 0-d 1-d)
    elif not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    if out is None:
        res = np.empty(x.shape, dt)
    else:
        res = check_out(name, out, x.shape, dt)
        x = unalias(x, res)
    if x.size:
        fn(_U[name], flat(x), flat(res), grain)
    return res if out is None else out


def _relu_numpy(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(x, 0, out=out) if out is not None else np.maximum(x, 0).astype(x.dtype)


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
    if ta is ndarray:
        dt = a.dtype
        if tb is ndarray:
            if b.dtype is dt and a.shape == b.shape and dt in BINARY_FN and out is None:
                res = np.empty(a.shape, dt)
                if not a.flags.c_contiguous:
                    a = np.ascontiguousarray(a)
                if not b.flags.c_contiguous:
                    b = np.ascontiguousarray(b)
                if a.size:
                    BINARY_FN[dt](code, flat(a), flat(b), flat(res), GRAIN_CHEAP)
                return res
        elif (tb is float or tb is int) and dt in SCALAR_FN:
            return _with_scalar(name, code, dt, a, b, False, out)
    elif tb is ndarray and (ta is float or ta is int) and b.dtype in SCALAR_FN:
        return _with_scalar(name, code, b.dtype, b, a, True, out)
    return _binary_general(name, code, a, b, out, numpy_fn)


def _with_scalar(
    name: str, code: int, dt: np.dtype, a: np.ndarray, s: Any, left: bool, out: Any
) -> Any:
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    if out is None:
        res = np.empty(a.shape, dt)
    else:
        res = check_out(name, out, a.shape, dt)
        a = unalias(a, res)
    if a.size:
        SCALAR_FN[dt](code, flat(a), float(s), left, flat(res), GRAIN_CHEAP)
    return res if out is None else out


def _binary_general(name: str, code: int, a: Any, b: Any, out: Any, numpy_fn: Any) -> Any:
    # Python scalars stay "weak" for the promotion (NEP 50), as in NumPy
    wa = a if type(a) in PY_SCALARS else as_array(name, a)
    wb = b if type(b) in PY_SCALARS else as_array(name, b)
    for w in (wa, wb):
        if not isinstance(w, PY_SCALARS) and not is_int(w.dtype):
            float_dtype(name, w.dtype)  # raises TypeError for complex, float16, ...
    dt = np.result_type(wa, wb)
    if dt.kind == "f" and dt not in SPEC:
        dt = float_dtype(name, dt)
    if is_int(dt):
        if name != "div":  # integer result: NumPy computes it
            if out is None:
                return numpy_fn(wa, wb)
            shape = np.broadcast_shapes(np.shape(wa), np.shape(wb))
            numpy_fn(wa, wb, out=check_out(name, out, shape, dt))
            return out
        dt = F64
    if dt not in SPEC:
        raise unsupported(name, dt)
    a = np.asarray(wa, dtype=dt, order="C")  # C-contiguous; 0-d stays 0-d
    b = np.asarray(wb, dtype=dt, order="C")
    sa, sb = a.shape, b.shape
    shape = sa if sa == sb else np.broadcast_shapes(sa, sb)
    if out is None:
        res = np.empty(shape, dt)
    else:
        res = check_out(name, out, shape, dt)
        a = unalias(a, res)
        b = unalias(b, res)
    if res.size == 0:
        return res if out is None else out
    # the kernel takes each operand as the full shape, one element, or a row
    # repeated over a full-shape other operand; anything else is materialised
    if a.shape != shape and a.size != 1 and not (b.shape == shape and _trailing(sa, shape)):
        a = np.ascontiguousarray(np.broadcast_to(a, shape))
    if b.shape != shape and b.size != 1 and not (a.shape == shape and _trailing(sb, shape)):
        b = np.ascontiguousarray(np.broadcast_to(b, shape))
    BINARY_FN[dt](code, a.reshape(-1), b.reshape(-1), res.reshape(-1), GRAIN_CHEAP)
    return res if out is None else out


def neg(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """-x, element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.neg(np.array([1.0, -2.0]))
    array([-1.,  2.])
    """
    return _unary("neg", x, out, np.negative)


def abs(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:  # noqa: A001 - mirrors numpy.abs
    """|x|, element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.abs(np.array([1.0, -2.0]))
    array([1., 2.])
    """
    return _unary("abs", x, out, np.absolute)


def exp(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """e**x (within 1 ulp; see docs/ops.md), element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.exp(np.array([0.0, 1.0]))
    array([1.        , 2.71828183])
    """
    return _unary("exp", x, out)


def log(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The natural logarithm (libm's log), element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.log(np.array([1.0, np.e]))
    array([0., 1.])
    """
    return _unary("log", x, out)


def sqrt(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The square root (correctly rounded), element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.sqrt(np.array([4.0, 9.0]))
    array([2., 3.])
    """
    return _unary("sqrt", x, out)


def tanh(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The hyperbolic tangent, element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.tanh(np.array([0.0, 1.0]))
    array([0.        , 0.76159416])
    """
    return _unary("tanh", x, out)


def sigmoid(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The logistic function 1 / (1 + e**-x), element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.sigmoid(np.array([0.0, 2.0]))
    array([0.5       , 0.88079708])
    """
    return _unary("sigmoid", x, out)


def relu(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """max(x, 0), NaN staying NaN, element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    """
    return _unary("relu", x, out, _relu_numpy)


def gelu(x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """x/2 (1 + erf(x/sqrt(2))), the exact GELU (torch's default), element-wise.

    Parameters
    ----------
    x : array_like
        Input; float32 or float64 (integers and bools are promoted as NumPy does;
        any byte order). Masked arrays are refused.
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
        If the dtype is not supported (complex, float16, object, ...) or `x`
        is a masked array.
    ValueError
        If `out` has the wrong shape or dtype, is not C-contiguous or not writable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.gelu(np.array([-1.0, 1.0]))
    array([-0.15865525,  0.84134475])
    """
    return _unary("gelu", x, out)


def add(a: ArrayLike, b: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """a + b, element-wise, with NumPy broadcasting.

    Same shapes, an array with a scalar, and a row over the last axis
    (``(N, D)`` with ``(D,)``) run at full speed; other broadcasts are
    materialised first.

    Parameters
    ----------
    a, b : array_like or scalar
        Float32 or float64; other real inputs are promoted as NumPy does
        (Python scalars are "weak", NEP 50). Masked arrays are refused.
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be one
        of the inputs (in place).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported or an input is a masked array.
    ValueError
        If the shapes do not broadcast, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.add(np.array([[1.0, 4.0], [3.0, 2.0]]), np.array([2.0, 2.0]))
    array([[3., 6.],
           [5., 4.]])
    """
    return _binary("add", a, b, out, np.add)


def sub(a: ArrayLike, b: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """a - b, element-wise, with NumPy broadcasting.

    Same shapes, an array with a scalar, and a row over the last axis
    (``(N, D)`` with ``(D,)``) run at full speed; other broadcasts are
    materialised first.

    Parameters
    ----------
    a, b : array_like or scalar
        Float32 or float64; other real inputs are promoted as NumPy does
        (Python scalars are "weak", NEP 50). Masked arrays are refused.
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be one
        of the inputs (in place).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported or an input is a masked array.
    ValueError
        If the shapes do not broadcast, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.sub(np.array([[1.0, 4.0], [3.0, 2.0]]), np.array([2.0, 2.0]))
    array([[-1.,  2.],
           [ 1.,  0.]])
    """
    return _binary("sub", a, b, out, np.subtract)


def mul(a: ArrayLike, b: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """a * b, element-wise, with NumPy broadcasting.

    Same shapes, an array with a scalar, and a row over the last axis
    (``(N, D)`` with ``(D,)``) run at full speed; other broadcasts are
    materialised first.

    Parameters
    ----------
    a, b : array_like or scalar
        Float32 or float64; other real inputs are promoted as NumPy does
        (Python scalars are "weak", NEP 50). Masked arrays are refused.
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be one
        of the inputs (in place).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported or an input is a masked array.
    ValueError
        If the shapes do not broadcast, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.mul(np.array([[1.0, 4.0], [3.0, 2.0]]), np.array([2.0, 2.0]))
    array([[2., 8.],
           [6., 4.]])
    """
    return _binary("mul", a, b, out, np.multiply)


def div(a: ArrayLike, b: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """a / b (true division), element-wise, with NumPy broadcasting.

    Same shapes, an array with a scalar, and a row over the last axis
    (``(N, D)`` with ``(D,)``) run at full speed; other broadcasts are
    materialised first.

    Parameters
    ----------
    a, b : array_like or scalar
        Float32 or float64; other real inputs are promoted as NumPy does
        (Python scalars are "weak", NEP 50). Masked arrays are refused.
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be one
        of the inputs (in place).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported or an input is a masked array.
    ValueError
        If the shapes do not broadcast, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.div(np.array([[1.0, 4.0], [3.0, 2.0]]), np.array([2.0, 2.0]))
    array([[0.5, 2. ],
           [1.5, 1. ]])
    """
    return _binary("div", a, b, out, np.true_divide)


def maximum(a: ArrayLike, b: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The larger of a and b (NaN propagates), element-wise, with NumPy broadcasting.

    Same shapes, an array with a scalar, and a row over the last axis
    (``(N, D)`` with ``(D,)``) run at full speed; other broadcasts are
    materialised first.

    Parameters
    ----------
    a, b : array_like or scalar
        Float32 or float64; other real inputs are promoted as NumPy does
        (Python scalars are "weak", NEP 50). Masked arrays are refused.
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be one
        of the inputs (in place).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported or an input is a masked array.
    ValueError
        If the shapes do not broadcast, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.maximum(np.array([[1.0, 4.0], [3.0, 2.0]]), np.array([2.0, 2.0]))
    array([[2., 4.],
           [3., 2.]])
    """
    return _binary("maximum", a, b, out, np.maximum)


def minimum(a: ArrayLike, b: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The smaller of a and b (NaN propagates), element-wise, with NumPy broadcasting.

    Same shapes, an array with a scalar, and a row over the last axis
    (``(N, D)`` with ``(D,)``) run at full speed; other broadcasts are
    materialised first.

    Parameters
    ----------
    a, b : array_like or scalar
        Float32 or float64; other real inputs are promoted as NumPy does
        (Python scalars are "weak", NEP 50). Masked arrays are refused.
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype; may be one
        of the inputs (in place).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported or an input is a masked array.
    ValueError
        If the shapes do not broadcast, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.minimum(np.array([[1.0, 4.0], [3.0, 2.0]]), np.array([2.0, 2.0]))
    array([[1., 2.],
           [2., 2.]])
    """
    return _binary("minimum", a, b, out, np.minimum)


# fork(ops.exp, x[, out]) (and the other unary ops) of fast_unary's case is a
# GIL-free task: checked at fork, run and completed by a worker without the
# GIL (docs/guide.md, "Forked kernels run without the GIL").
_GIL_FREE_UNARY = ("neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu")
for _name in _GIL_FREE_UNARY:
    _pool._register_gil_free(globals()[_name], _elementwise.GilFreeUnary(_U[_name], _grain(_name)))
del _name
