"""Kernel records for forkwait.profile(): recording wrappers in the kernel tables.

While a profiler hook is set (:func:`_set_profiler`, as ``pool._set_profiler``
for tasks), each family's kernel tables hold recording wrappers; otherwise
the plain kernels (so recording off costs nothing). After each kernel call a
wrapper calls ``hook.on_kernel(op=, shape=, dtype=, team=, start=, end=,
thread=, task=)`` in the thread that ran it (the fields of
``forkwait._profile.KernelRecord``). forkwait.profile() installs its hook
here; this module never looks up the profiler.

A kernel is called with its arguments by position (as its ``def`` in
``forkwait/_native/*.pyx`` lists them); the wrapper names them with one
NamedTuple per kernel below and reads them by name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from forkwait._native import _elementwise, _reduce, _rows, _team, pool
from forkwait.ops import _elementwise as ew
from forkwait.ops import _matmul as mm
from forkwait.ops import _reductions as red
from forkwait.ops import _rows as rows

# -- the kernels' arguments, named (as in their .pyx signatures) --------------------


class UnaryArgs(NamedTuple):
    """``_elementwise.unary``."""

    op: int
    x: Any
    out: Any
    grain: int


class BinaryArgs(NamedTuple):
    """``_elementwise.binary``."""

    op: int
    a: Any
    b: Any
    out: Any
    grain: int


class ScalarArgs(NamedTuple):
    """``_elementwise.binary_scalar``."""

    op: int
    a: Any
    s: float
    left: bool
    out: Any
    grain: int


class ReduceAllArgs(NamedTuple):
    """``_reduce.reduce_all``."""

    op: int
    x: Any
    grain: int


class ReduceAxisArgs(NamedTuple):
    """``_reduce.reduce_axis``."""

    op: int
    x: Any
    outer: int
    k: int
    inner: int
    out: Any
    idx: Any
    divisor: int  # > 0: the results are divided by it (mean)
    grain: int


class SoftmaxArgs(NamedTuple):
    """``_rows.softmax_rows``."""

    op: int
    x: Any
    out: Any
    rows: int
    d: int
    grain: int


class LayerNormArgs(NamedTuple):
    """``_rows.layer_norm_rows``."""

    x: Any
    out: Any
    rows: int
    d: int
    weight: Any
    bias: Any
    eps: float
    grain: int


class MatmulArgs(NamedTuple):
    """``_matmul.matmul``."""

    a: Any
    b: Any
    out: Any
    batch: int
    m: int
    n: int
    k: int
    a_batched: bool
    b_batched: bool
    grain: int


def _names(codes: dict[str, int]) -> dict[int, str]:
    return {v: k for k, v in codes.items()}


_UN, _BI = _names(_elementwise.UNARY), _names(_elementwise.BINARY)
_RD, _RW = _names(_reduce.REDUCE), _names(_rows.ROWS)


class _Family(NamedTuple):
    """A kernel table, the names of its kernels' arguments, and what a call
    is in the profile: (op, shape)."""

    table: dict[Any, Any]
    args: Callable[..., Any]
    describe: Callable[[Any], tuple[str, tuple]]


_FAMILIES: dict[str, _Family] = {
    "unary": _Family(ew.UNARY_FN, UnaryArgs, lambda a: (_UN[a.op], (len(a.x),))),
    "binary": _Family(ew.BINARY_FN, BinaryArgs, lambda a: (_BI[a.op], (len(a.out),))),
    "scalar": _Family(ew.SCALAR_FN, ScalarArgs, lambda a: (_BI[a.op], (len(a.a),))),
    "reduce_all": _Family(red.REDUCE_ALL_FN, ReduceAllArgs,
                          lambda a: (_RD[a.op], (len(a.x),))),
    "reduce_axis": _Family(red.REDUCE_AXIS_FN, ReduceAxisArgs,
                           lambda a: ("mean" if a.divisor else _RD[a.op],
                                      (a.outer, a.k, a.inner))),
    "rows": _Family(rows.SOFTMAX_FN, SoftmaxArgs, lambda a: (_RW[a.op], (a.rows, a.d))),
    "layer_norm": _Family(rows.LAYER_NORM_FN, LayerNormArgs,
                          lambda a: ("layer_norm", (a.rows, a.d))),
    "matmul": _Family(mm.MATMUL_FN, MatmulArgs, lambda a: ("matmul", (a.batch, a.m, a.n, a.k))),
}
_PLAIN = {kind: dict(family.table) for kind, family in _FAMILIES.items()}

# The hook of the profile that records (None: not recording). A wrapper reads
# it after each call, so that a call still running when recording stops is
# not recorded (as the pool does with its hook).
_hook: Any = None


def _traced(kernel: Any, family: _Family, dtype: str) -> Any:
    now = pool._now
    last_team = _team._last_team
    args_of, describe = family.args, family.describe

    def traced(*args: Any) -> Any:
        t0 = now()
        result = kernel(*args)
        t1 = now()
        hook = _hook
        if hook is not None:
            op, shape = describe(args_of(*args))
            hook.on_kernel(op=op, shape=shape, dtype=dtype, team=last_team(), start=t0,
                           end=t1, thread=threading.get_ident(), task=pool._current_task())
        return result

    return traced


def _set_profiler(hook: Any) -> Any:
    """Start calling `hook.on_kernel(...)` after each kernel call (None
    stops); returns the old hook.

    While a hook is set the kernel tables hold recording wrappers and the
    element-wise fast path, which would bypass them, is off.
    """
    global _hook
    old, _hook = _hook, hook
    on = hook is not None
    _elementwise._set_fast(not on)
    for kind, family in _FAMILIES.items():
        for dt, kernel in _PLAIN[kind].items():
            family.table[dt] = _traced(kernel, family, dt.name) if on else kernel
    return old
