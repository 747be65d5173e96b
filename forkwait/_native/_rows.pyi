# Type stub for forkwait/_native/_rows.pyx (row ops along the last axis).
from typing import Any

ROWS: dict[str, int]

# fused (float32/float64) Cython functions; index with "float" or "double"
softmax_rows: Any
layer_norm_rows: Any
