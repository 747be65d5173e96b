from typing import Any

def load_blas() -> str: ...
def use_own_kernel(own: bool) -> None: ...

# fused (float32/float64) Cython function; index with "float" or "double"
matmul: Any
