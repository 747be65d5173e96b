"""Argument checks shared by every family of ops: dtypes, ``out=``, axes.

The native layer never sees bad input: every op checks its arguments here
first and raises a clear Python exception (DESIGN.md, "Data flows one way").
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.ma import MaskedArray

ndarray = np.ndarray
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
INTP = np.dtype(np.intp)
#: the dtypes the kernels run natively -> the fused-type specialisation name
SPEC = {F32: "float", F64: "double"}
SUPPORTED = "supported: float32 and float64 (integer and bool inputs are promoted as NumPy does)"
PY_SCALARS = (float, int, bool)


def unsupported(name: str, dt: Any) -> TypeError:
    return TypeError(f"forkwait.ops.{name}: unsupported dtype {dt}; {SUPPORTED}")


def refuse_masked(name: str, x: Any) -> None:
    """Masked arrays are refused: the kernels would silently use the masked values."""
    if isinstance(x, MaskedArray):
        raise TypeError(
            f"forkwait.ops.{name}: masked arrays are not supported (the mask would be "
            "ignored); pass x.filled(value) or x.compressed(), or use numpy.ma"
        )


def as_array(name: str, x: Any) -> np.ndarray:
    """x as an ndarray (a view where it is one already); masked arrays refused."""
    if type(x) is ndarray:
        return x
    refuse_masked(name, x)
    return np.asarray(x)


def float_dtype(name: str, dt: np.dtype) -> np.dtype:
    """The native float dtype an op that returns floats computes in, for input
    dtype ``dt`` (non-native byte order included); TypeError if unsupported."""
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return F64 if dt.itemsize == 8 else F32
    if dt.kind in "biu":
        res = np.promote_types(dt, np.float16)
        return F32 if res.itemsize < 4 else res
    raise unsupported(name, dt)


def is_int(dt: np.dtype) -> bool:
    return dt.kind in "biu"


def check_out(name: str, out: Any, shape: tuple, dt: np.dtype) -> np.ndarray:
    """The ndarray to write the result into: ``out`` itself, or a base-class
    view of it for an ndarray subclass (np.matrix, ...); the op returns the
    ``out`` it was given."""
    if not isinstance(out, ndarray):
        raise TypeError(
            f"forkwait.ops.{name}: out must be a numpy.ndarray, got {type(out).__name__}"
        )
    refuse_masked(name, out)
    if out.shape != shape:
        raise ValueError(f"forkwait.ops.{name}: out has shape {out.shape}, the result has {shape}")
    if out.dtype != dt:
        raise ValueError(f"forkwait.ops.{name}: out has dtype {out.dtype}, the result is {dt}")
    flags = out.flags
    if not flags.c_contiguous:
        raise ValueError(f"forkwait.ops.{name}: out must be C-contiguous")
    if not flags.writeable:
        raise ValueError(f"forkwait.ops.{name}: out is read-only")
    return out if type(out) is ndarray else out.view(ndarray)


def unalias(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
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


def flat(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 1 else x.reshape(-1)


def axis_arg(name: str, axis: Any, dim: Any, default: Any) -> Any:
    """The axis from ``axis=`` or its torch spelling ``dim=``; both at once
    (``axis`` not left at its default) is a TypeError."""
    if dim is None:
        return axis
    if axis is not default and not (default is not None and axis == default):
        raise TypeError(f"forkwait.ops.{name}: pass axis= or dim= (the same thing), not both")
    return dim


def normalize_axis(name: str, axis: Any, ndim: int) -> int:
    """``axis`` as an index in [0, ndim); bools are refused (``axis=True``)."""
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"forkwait.ops.{name}: axis must be an int or None, got a bool")
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(
            f"forkwait.ops.{name}: axis must be an int or None, got {type(axis).__name__}"
        ) from None
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(ax, ndim)
    return ax % ndim
