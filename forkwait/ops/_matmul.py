"""matmul: NumPy's OpenBLAS (a second copy beside it), over the team."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forkwait._native import _blas, _matmul, pool
from forkwait.ops._checks import (
    SPEC,
    as_array,
    check_out,
    float_dtype,
    is_int,
    unsupported,
)

__all__ = ["matmul"]

GRAIN_MATMUL = 1 << 20  # serial below this many multiply-adds (docs/performance.md)

MATMUL_FN = {dt: _matmul.matmul[s] for dt, s in SPEC.items()}
# the common case (two plain 2-D arrays of one float type), checked in C; None:
# not taken. While forkwait.profile() records, MATMUL_FN holds recording
# wrappers (forkwait/ops/_profiling.py) and the fast path, which would bypass
# them, is off.
_fast = _matmul.fast_matmul
_KEY = next(iter(MATMUL_FN))
_PLAIN_FIRST = MATMUL_FN[_KEY]
# The libraries are looked up (and loaded: scipy-openblas64's, or SciPy's
# where that one is missing) here, when forkwait.ops is imported, so that no
# task finds them half-loaded (concurrent first matmuls would race for them).
_blas.load_blas()


def matmul(a: ArrayLike, b: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Matrix product of 2-D arrays, or of batches of them (3-D).

    Shapes ``(m, k) @ (k, n)``, ``(B, m, k) @ (B, k, n)``, and a 2-D operand
    with a 3-D one (the matrix is used for every batch entry; a batch of 1
    broadcasts too). The product is split over the threads (blocks of
    columns; of rows for batches), each block a single-threaded GEMM of
    NumPy's OpenBLAS or, where that one is busy with another block or
    matmul, a second copy (the scipy-openblas64 package's, else SciPy's).
    A large product of one matrix on a team, outside forked tasks, is one
    GEMM of that second copy instead, its jobs run on forkwait's own OpenMP
    team (docs/ops.md). While forkwait matmuls run, the libraries' own
    thread counts are set for them; the user's counts are restored when the
    last one ends.

    Parameters
    ----------
    a, b : array_like
        2-D or 3-D, float32 or float64 (mixed dtypes promote as NumPy does;
        any byte order; integer-only inputs are multiplied by NumPy). Masked
        arrays are refused.
    out : numpy.ndarray, optional
        C-contiguous, writable, of the result's shape and dtype.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    TypeError
        If a dtype is not supported or an input is a masked array.
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
    if MATMUL_FN[_KEY] is _PLAIN_FIRST:
        res = _fast(a, b, out, GRAIN_MATMUL)
        if res is not None:
            return res
    a = as_array("matmul", a)
    b = as_array("matmul", b)
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(
            f"forkwait.ops.matmul: needs 2-D or 3-D arrays, got {a.ndim}-D and {b.ndim}-D "
            "(reshape a vector to (1, n) or (n, 1))"
        )
    for x in (a, b):
        if x.dtype not in SPEC and not is_int(x.dtype):
            float_dtype("matmul", x.dtype)  # TypeError unless a float32/float64 byte order
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
    if is_int(dt):
        if out is None:
            return np.matmul(a, b)
        np.matmul(a, b, out=check_out("matmul", out, shape, dt))
        return out
    dt = float_dtype("matmul", dt)
    if dt not in SPEC:
        raise unsupported("matmul", dt)
    if max(m, n, k) >= 2**31:
        raise ValueError("forkwait.ops.matmul: each dimension must be below 2**31")
    a = np.ascontiguousarray(a, dtype=dt)
    b = np.ascontiguousarray(b, dtype=dt)
    if out is None:
        res = np.empty(shape, dt)
    else:
        res = check_out("matmul", out, shape, dt)
        if np.may_share_memory(a, res):
            a = a.copy()
        if np.may_share_memory(b, res):
            b = b.copy()
    if res.size and k == 0:
        res[...] = 0
    elif res.size:
        MATMUL_FN[dt](
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
    return res if out is None else out


# fork(ops.matmul, a, b[, out]) of the common case (the fast path's) is a
# GIL-free task: checked at fork, run and completed by a worker without the
# GIL (docs/guide.md, "Forked kernels"); any other call is an ordinary task.
_matmul.set_gil_free_grain(GRAIN_MATMUL)
pool._register_gil_free(matmul, _matmul.gil_free_call)
