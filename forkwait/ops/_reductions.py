"""Reductions: sum, mean, max, min, argmax; bitwise reproducible for any thread count."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forkwait._native import _reduce
from forkwait.ops._checks import (
    F64,
    INTP,
    SPEC,
    as_array,
    axis_arg,
    check_out,
    flat,
    float_dtype,
    is_int,
    normalize_axis,
    unalias,
)

__all__ = ["argmax", "max", "mean", "min", "sum"]

GRAIN_REDUCE = 1 << 15  # serial below (see docs/performance.md, "Grain sizes")

REDUCE_ALL_FN = {dt: _reduce.reduce_all[s] for dt, s in SPEC.items()}
REDUCE_AXIS_FN = {dt: _reduce.reduce_axis[s] for dt, s in SPEC.items()}
_R = _reduce.REDUCE
_NO_INDEX = np.zeros(1, dtype=np.intp)  # never written: only argmax writes indices
_NUMPY = {"sum": np.sum, "max": np.max, "min": np.min, "argmax": np.argmax}


def _reduction(name: str, x: Any, axis: Any, out: Any, keepdims: bool) -> Any:
    x = as_array(name, x)
    dt = x.dtype
    if axis is not None:
        normalize_axis(name, axis, x.ndim)  # (also for the NumPy paths: no axis=True)
    if dt not in SPEC:
        if name == "mean" and is_int(dt):
            dt = F64  # NumPy's mean of integers is float64
        elif is_int(dt):
            return _NUMPY[name](x, axis=axis, out=out, keepdims=keepdims)
        else:
            dt = float_dtype(name, dt)
        x = np.asarray(x, dtype=dt)
    code = _R["sum" if name == "mean" else name]
    ndim = x.ndim
    res_dt = INTP if name == "argmax" else dt
    if axis is not None:
        ax = normalize_axis(name, axis, ndim)
    if axis is None or ndim == 1:
        shape: tuple = (1,) * ndim if keepdims else ()
        n = x.size
        if n == 0:
            _empty_check(name)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        value, index = REDUCE_ALL_FN[dt](code, flat(x), GRAIN_REDUCE)
        if name == "argmax":
            result = np.intp(index)
        elif name == "mean":
            if n == 0:
                warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=3)
            result = dt.type(value) / n if n else dt.type(np.nan)
        else:
            result = dt.type(value)
        if out is not None:
            check_out(name, out, shape, res_dt)[...] = result
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
        res = check_out(name, out, rshape, res_dt)
        x = unalias(x, res)
    if k == 0:
        _empty_check(name)
        res[...] = 0 if name == "sum" else np.nan
        return res if out is None else out
    if res.size == 0:
        return res if out is None else out
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    if name == "argmax":
        vals = np.empty(outer * inner, dt)
        REDUCE_AXIS_FN[dt](code, flat(x), outer, k, inner, vals, res.reshape(-1), 0, GRAIN_REDUCE)
    else:
        REDUCE_AXIS_FN[dt](
            code,
            flat(x),
            outer,
            k,
            inner,
            res.reshape(-1),
            _NO_INDEX,
            k if name == "mean" else 0,
            GRAIN_REDUCE,
        )
    return res if out is None else out


def _empty_check(name: str) -> None:
    if name in ("max", "min"):
        np_name = "maximum" if name == "max" else "minimum"
        raise ValueError(f"zero-size array to reduction operation {np_name} which has no identity")
    if name == "argmax":
        raise ValueError("attempt to get argmax of an empty sequence")


def sum(
    x: ArrayLike,
    axis: int | None = None,
    out: NDArray[Any] | None = None,
    keepdims: bool = False,
    *,
    dim: int | None = None,
) -> Any:  # noqa: A001
    """The sum (pairwise: float32 sums keep float32 precision), over all elements or along one axis.

    Reproducible: bitwise the same result for any number of threads.

    Parameters
    ----------
    x : array_like
        Float32 or float64 (integers and bools as NumPy does; any byte order).
        Masked arrays are refused.
    axis : int, optional
        The axis to reduce (negative counts from the end); None: all elements.
    out : numpy.ndarray, optional
        C-contiguous and writable, of the result's shape and dtype (0-d when
        `axis` is None).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    dim : int, optional
        Another name for `axis` (torch's); give one of the two.

    Returns
    -------
    numpy scalar or numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported, `x` is a masked array, `axis` is not an
        int (a bool is not), or both `axis` and `dim` are given.
    ValueError
        If `axis` is out of range (``numpy.exceptions.AxisError``), `out` is
        not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> x = np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    >>> ops.sum(x)
    np.float64(21.0)
    >>> ops.sum(x, axis=1)
    array([ 9., 12.])
    """
    return _reduction("sum", x, axis_arg("sum", axis, dim, None), out, keepdims)


def mean(
    x: ArrayLike,
    axis: int | None = None,
    out: NDArray[Any] | None = None,
    keepdims: bool = False,
    *,
    dim: int | None = None,
) -> Any:
    """The arithmetic mean, over all elements or along one axis.

    Reproducible: bitwise the same result for any number of threads.

    Parameters
    ----------
    x : array_like
        Float32 or float64 (integers and bools as NumPy does; any byte order).
        Masked arrays are refused.
    axis : int, optional
        The axis to reduce (negative counts from the end); None: all elements.
    out : numpy.ndarray, optional
        C-contiguous and writable, of the result's shape and dtype (0-d when
        `axis` is None).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    dim : int, optional
        Another name for `axis` (torch's); give one of the two.

    Returns
    -------
    numpy scalar or numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported, `x` is a masked array, `axis` is not an
        int (a bool is not), or both `axis` and `dim` are given.
    ValueError
        If `axis` is out of range (``numpy.exceptions.AxisError``), `out` is
        not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> x = np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    >>> ops.mean(x)
    np.float64(3.5)
    >>> ops.mean(x, axis=1)
    array([3., 4.])
    """
    return _reduction("mean", x, axis_arg("mean", axis, dim, None), out, keepdims)


def max(
    x: ArrayLike,
    axis: int | None = None,
    out: NDArray[Any] | None = None,
    keepdims: bool = False,
    *,
    dim: int | None = None,
) -> Any:  # noqa: A001
    """The largest element (NaN propagates), over all elements or along one axis.

    Reproducible: bitwise the same result for any number of threads.

    Parameters
    ----------
    x : array_like
        Float32 or float64 (integers and bools as NumPy does; any byte order).
        Masked arrays are refused.
    axis : int, optional
        The axis to reduce (negative counts from the end); None: all elements.
    out : numpy.ndarray, optional
        C-contiguous and writable, of the result's shape and dtype (0-d when
        `axis` is None).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    dim : int, optional
        Another name for `axis` (torch's); give one of the two.

    Returns
    -------
    numpy scalar or numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported, `x` is a masked array, `axis` is not an
        int (a bool is not), or both `axis` and `dim` are given.
    ValueError
        If `axis` is out of range (``numpy.exceptions.AxisError``), `out` is
        not suitable, or the array is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> x = np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    >>> ops.max(x)
    np.float64(6.0)
    >>> ops.max(x, axis=1)
    array([5., 6.])
    """
    return _reduction("max", x, axis_arg("max", axis, dim, None), out, keepdims)


def min(
    x: ArrayLike,
    axis: int | None = None,
    out: NDArray[Any] | None = None,
    keepdims: bool = False,
    *,
    dim: int | None = None,
) -> Any:  # noqa: A001
    """The smallest element (NaN propagates), over all elements or along one axis.

    Reproducible: bitwise the same result for any number of threads.

    Parameters
    ----------
    x : array_like
        Float32 or float64 (integers and bools as NumPy does; any byte order).
        Masked arrays are refused.
    axis : int, optional
        The axis to reduce (negative counts from the end); None: all elements.
    out : numpy.ndarray, optional
        C-contiguous and writable, of the result's shape and dtype (0-d when
        `axis` is None).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    dim : int, optional
        Another name for `axis` (torch's); give one of the two.

    Returns
    -------
    numpy scalar or numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported, `x` is a masked array, `axis` is not an
        int (a bool is not), or both `axis` and `dim` are given.
    ValueError
        If `axis` is out of range (``numpy.exceptions.AxisError``), `out` is
        not suitable, or the array is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> x = np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    >>> ops.min(x)
    np.float64(1.0)
    >>> ops.min(x, axis=1)
    array([1., 2.])
    """
    return _reduction("min", x, axis_arg("min", axis, dim, None), out, keepdims)


def argmax(
    x: ArrayLike,
    axis: int | None = None,
    out: NDArray[Any] | None = None,
    keepdims: bool = False,
    *,
    dim: int | None = None,
) -> Any:
    """Index of the first largest element (the first NaN if any), overall or along an axis.

    Reproducible: bitwise the same result for any number of threads.
    With ``axis=None`` the index is into the flattened array.

    Parameters
    ----------
    x : array_like
        Float32 or float64 (integers and bools as NumPy does; any byte order).
        Masked arrays are refused.
    axis : int, optional
        The axis to reduce (negative counts from the end); None: all elements.
    out : numpy.ndarray, optional
        C-contiguous and writable, of the result's shape and dtype (0-d when
        `axis` is None).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    dim : int, optional
        Another name for `axis` (torch's); give one of the two.

    Returns
    -------
    numpy scalar or numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported, `x` is a masked array, `axis` is not an
        int (a bool is not), or both `axis` and `dim` are given.
    ValueError
        If `axis` is out of range (``numpy.exceptions.AxisError``), `out` is
        not suitable, or the array is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> x = np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    >>> ops.argmax(x)
    np.int64(5)
    >>> ops.argmax(x, axis=1)
    array([1, 2])
    """
    return _reduction("argmax", x, axis_arg("argmax", axis, dim, None), out, keepdims)
