"""Row ops: softmax, log_softmax (along any axis), layer_norm (the last axis)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forkwait._native import _rows
from forkwait.ops._checks import (
    SPEC,
    as_array,
    axis_arg,
    check_out,
    float_dtype,
    is_int,
    normalize_axis,
    unalias,
    unsupported,
)

__all__ = ["layer_norm", "log_softmax", "softmax"]

GRAIN_ROWS = 1 << 12  # serial below (see docs/performance.md, "Grain sizes")

SOFTMAX_FN = {dt: _rows.softmax_rows[s] for dt, s in SPEC.items()}
LAYER_NORM_FN = {dt: _rows.layer_norm_rows[s] for dt, s in SPEC.items()}


def _softmax(name: str, x: Any, axis: Any, out: Any) -> Any:
    x = as_array(name, x)
    if x.ndim == 0:
        raise ValueError(f"forkwait.ops.{name}: needs an array with at least one dimension")
    ax = normalize_axis(name, axis, x.ndim)
    dt = x.dtype
    if dt not in SPEC:
        dt = float_dtype(name, dt)
        x = np.asarray(x, dtype=dt)
    if out is None:
        res = np.empty(x.shape, dt)
    else:
        res = check_out(name, out, x.shape, dt)
        x = unalias(x, res)
    if x.size == 0:
        return res if out is None else out
    last = ax == x.ndim - 1
    xs = np.ascontiguousarray(x if last else np.moveaxis(x, ax, -1))
    target = res if last else np.empty(xs.shape, dt)
    d = xs.shape[-1]
    SOFTMAX_FN[dt](
        _rows.ROWS[name], xs.reshape(-1), target.reshape(-1), xs.size // d, d, GRAIN_ROWS
    )
    if not last:
        res[...] = np.moveaxis(target, -1, ax)
    return res if out is None else out


def softmax(
    x: ArrayLike, axis: int = -1, out: NDArray[Any] | None = None, *, dim: int | None = None
) -> NDArray[Any]:
    """Softmax along an axis: ``exp(x - max) / sum(exp(x - max))``.

    Rows along the last axis run in place in cache; another `axis` is
    transposed to the last one first. NaN and inf follow the formula (a row
    with NaN or +inf gives NaN, as in NumPy/SciPy).

    Parameters
    ----------
    x : array_like
        At least 1-D; float32 or float64 (integers promoted to float; any byte
        order). Masked arrays are refused.
    axis : int, optional
        The axis to normalise; default the last.
    out : numpy.ndarray, optional
        C-contiguous, writable, of `x`'s shape and float dtype; may be `x`.
    dim : int, optional
        Another name for `axis` (torch's); give one of the two.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported, `x` is a masked array, `axis` is not an
        int, or both `axis` and `dim` are given.
    ValueError
        If `x` is 0-d, `axis` is out of range, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> ops.softmax(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    """
    return _softmax("softmax", x, axis_arg("softmax", axis, dim, -1), out)


def log_softmax(
    x: ArrayLike, axis: int = -1, out: NDArray[Any] | None = None, *, dim: int | None = None
) -> NDArray[Any]:
    """Log of the softmax along an axis: ``x - max - log(sum(exp(x - max)))``.

    Parameters
    ----------
    x : array_like
        At least 1-D; float32 or float64 (integers promoted to float; any byte
        order). Masked arrays are refused.
    axis : int, optional
        The axis to normalise; default the last.
    out : numpy.ndarray, optional
        C-contiguous, writable, of `x`'s shape and float dtype; may be `x`.
    dim : int, optional
        Another name for `axis` (torch's); give one of the two.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If the dtype is not supported, `x` is a masked array, `axis` is not an
        int, or both `axis` and `dim` are given.
    ValueError
        If `x` is 0-d, `axis` is out of range, or `out` is not suitable.

    Examples
    --------
    >>> import numpy as np
    >>> from forkwait import ops
    >>> np.exp(ops.log_softmax(np.array([0.0, np.log(3.0)])))
    array([0.25, 0.75])
    """
    return _softmax("log_softmax", x, axis_arg("log_softmax", axis, dim, -1), out)


def layer_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    out: NDArray[Any] | None = None,
) -> NDArray[Any]:
    """Layer normalisation over the last axis, as ``torch.nn.functional.layer_norm``.

    ``(x - mean) / sqrt(var + eps) * weight + bias`` with the biased
    variance of each row.

    Parameters
    ----------
    x : array_like
        At least 1-D; float32 or float64 (mixed dtypes promote as NumPy does;
        any byte order). Masked arrays are refused.
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
        If a dtype is not supported or an input is a masked array.
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
    x = as_array("layer_norm", x)
    if x.ndim == 0:
        raise ValueError("forkwait.ops.layer_norm: needs an array with at least one dimension")
    d = x.shape[-1]
    parts = [x]
    for label, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        p = as_array("layer_norm", p)
        if p.shape != (d,):
            raise ValueError(
                f"forkwait.ops.layer_norm: {label} must have shape ({d},), got {p.shape}"
            )
        parts.append(p)
    natives = []
    for p in parts:
        if not is_int(p.dtype) and p.dtype.kind != "f":
            raise unsupported("layer_norm", p.dtype)
        natives.append(p.dtype if is_int(p.dtype) else float_dtype("layer_norm", p.dtype))
    dt = float_dtype("layer_norm", np.result_type(*natives))
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"forkwait.ops.layer_norm: eps must be >= 0, got {eps}")
    w = None if weight is None else np.ascontiguousarray(parts[1], dtype=dt)
    b = None if bias is None else np.ascontiguousarray(parts[-1], dtype=dt)
    x = np.ascontiguousarray(x, dtype=dt)
    if out is None:
        res = np.empty(x.shape, dt)
    else:
        res = check_out("layer_norm", out, x.shape, dt)
        x = unalias(x, res)
        w = None if w is None else unalias(w, res)
        b = None if b is None else unalias(b, res)
    if x.size:
        LAYER_NORM_FN[dt](x.reshape(-1), res.reshape(-1), x.size // d, d, w, b, eps, GRAIN_ROWS)
    return res if out is None else out
