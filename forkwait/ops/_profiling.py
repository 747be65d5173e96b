"""Kernel records for forkwait.profile(): recording wrappers in the kernel tables.

While forkwait.profile() records, each family's kernel tables hold recording
wrappers; otherwise the plain kernels (so recording off costs nothing).
forkwait._profile calls :func:`_set_profiling`; every wrapper calls
``forkwait._profile.record_kernel(op, shape, dtype, team, start, end)``.
"""

from __future__ import annotations

from typing import Any

from forkwait._native import _elementwise, _reduce, _rows, _team, pool
from forkwait.ops import _elementwise as ew
from forkwait.ops import _matmul as mm
from forkwait.ops import _reductions as red
from forkwait.ops import _rows as rows


def _names(codes: dict) -> dict:
    return {v: k for k, v in codes.items()}


def _describers() -> dict:
    un, bi = _names(_elementwise.UNARY), _names(_elementwise.BINARY)
    rd, rw = _names(_reduce.REDUCE), _names(_rows.ROWS)
    return {
        "unary": lambda a: (un[a[0]], (len(a[1]),)),
        "binary": lambda a: (bi[a[0]], (len(a[3]),)),
        "scalar": lambda a: (bi[a[0]], (len(a[1]),)),
        "reduce_all": lambda a: (rd[a[0]], (len(a[1]),)),
        "reduce_axis": lambda a: ("mean" if a[7] else rd[a[0]], (a[2], a[3], a[4])),
        "rows": lambda a: (rw[a[0]], (a[3], a[4])),
        "layer_norm": lambda a: ("layer_norm", (a[2], a[3])),
        "matmul": lambda a: ("matmul", (a[3], a[4], a[5], a[6])),
    }


_TABLES: dict[str, dict[Any, Any]] = {
    "unary": ew.UNARY_FN,
    "binary": ew.BINARY_FN,
    "scalar": ew.SCALAR_FN,
    "reduce_all": red.REDUCE_ALL_FN,
    "reduce_axis": red.REDUCE_AXIS_FN,
    "rows": rows.SOFTMAX_FN,
    "layer_norm": rows.LAYER_NORM_FN,
    "matmul": mm.MATMUL_FN,
}
_PLAIN = {kind: dict(table) for kind, table in _TABLES.items()}


def _traced(kernel: Any, describe: Any, dtype: str) -> Any:
    from forkwait._profile import record_kernel

    now = pool._now

    def traced(*args: Any) -> Any:
        t0 = now()
        result = kernel(*args)
        t1 = now()
        op, shape = describe(args)
        record_kernel(op, shape, dtype, _team._last_team(), t0, t1)
        return result

    return traced


def _set_profiling(on: bool) -> None:
    """Swap recording wrappers into the kernel tables (forkwait.profile)."""
    describers = _describers()
    _elementwise._set_fast(not on)  # the fast path bypasses the tables
    for kind, table in _TABLES.items():
        for dt, kernel in _PLAIN[kind].items():
            table[dt] = _traced(kernel, describers[kind], dt.name) if on else kernel
