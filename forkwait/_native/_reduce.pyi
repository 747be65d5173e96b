# Type stub for forkwait/_native/_reduce.pyx (reductions).
from typing import Any

REDUCE: dict[str, int]

# fused (float32/float64) Cython functions; index with "float" or "double"
reduce_all: Any
reduce_axis: Any
