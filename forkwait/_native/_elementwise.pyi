from typing import Any

UNARY: dict[str, int]
BINARY: dict[str, int]
PROBE_OP: int

# fused (float32/float64) Cython functions; index with "float" or "double"
unary: Any
binary: Any
binary_scalar: Any

# the small-array fast path: the result, or None where the general path must run
def fast_unary(op: int, x: Any, out: Any, grain: int) -> Any: ...
def fast_binary(op: int, a: Any, b: Any, out: Any, grain: int) -> Any: ...
def _set_fast(on: bool) -> None: ...
