from typing import Any


UNARY: dict[str, int]
BINARY: dict[str, int]
PROBE_OP: int

# fused (float32/float64) Cython functions; index with "float" or "double"
unary: Any
binary: Any
binary_scalar: Any
