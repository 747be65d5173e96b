from typing import Any

REDUCE: dict[str, int]
ROWS: dict[str, int]

# fused (float32/float64) Cython functions; index with "float" or "double"
reduce_all: Any
reduce_axis: Any
softmax_rows: Any
layer_norm_rows: Any
