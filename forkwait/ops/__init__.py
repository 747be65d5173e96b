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
number of threads (fixed blocks combined in a fixed order), and every op gives
the same bits whichever CPU variant of the kernels runs (docs/ops.md).

Bad input raises: masked arrays (the mask would be ignored), unsupported
dtypes (complex, float16, object), ``axis=True``. ``dim=`` is accepted as
torch's name for ``axis=``. The families live in private submodules
(``_elementwise``, ``_reductions``, ``_rows``, ``_matmul``; argument checks in
``_checks``); this package exports only the ops.

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

from forkwait.ops._elementwise import (
    abs,
    add,
    div,
    exp,
    gelu,
    log,
    maximum,
    minimum,
    mul,
    neg,
    relu,
    sigmoid,
    sqrt,
    sub,
    tanh,
)
from forkwait.ops._matmul import matmul
from forkwait.ops._reductions import argmax, max, mean, min, sum
from forkwait.ops._rows import layer_norm, log_softmax, softmax

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
