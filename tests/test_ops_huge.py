"""Arrays of more than 2**31 elements: indices and sizes are Py_ssize_t."""

from __future__ import annotations

import numpy as np
import pytest

from forkwait import ops

N = 2**31 + 37  # float32: 8.6 GB


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
@pytest.mark.skipif(_mem_available() < 4 * N + (3 << 30), reason="needs ~12 GB of free memory")
def test_more_than_2_31_elements():
    x = np.zeros(N, np.float32)  # calloc: pages appear as the kernels touch them
    x[N - 5] = 1.0
    x[3] = -2.0
    assert ops.argmax(x) == N - 5
    assert ops.max(x) == 1.0 and ops.min(x) == -2.0
    assert ops.sum(x) == -1.0
    ops.add(x, 1.0, out=x)  # in place, element-wise across the whole range
    assert x[N - 1] == 1.0 and x[N - 5] == 2.0 and x[3] == -1.0
    assert ops.argmax(x) == N - 5
    ops.mul(x, x, out=x)
    assert x[N - 5] == 4.0 and x[N - 1] == 1.0
    del x
