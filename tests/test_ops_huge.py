"""Arrays of more than 2**31 elements: indices and sizes are Py_ssize_t.

The reductions read an array of 2**31 + 37 float32 zeros that NumPy gets from
calloc: pages that are only read are the kernel's shared zero page, so the
8.6 GB array costs a few pages of memory (the ones written below), and the
test runs in the default suite on a shared machine. An element-wise op writes
every element, so it holds the whole 8.6 GB: that one runs only in the long
run (FORKWAIT_STRESS=long, see docs/reliability.md) and with the memory free.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from forkwait import ops

N = 2**31 + 38  # float32: 8.6 GB of address space; even, for the (2, N // 2) view
LONG = os.environ.get("FORKWAIT_STRESS", "").strip().lower() == "long"


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _zeros_with_marks() -> np.ndarray:
    x = np.zeros(N, np.float32)  # calloc: no page is in memory until written
    x[N - 5] = 1.0  # past 2**31
    x[3] = -2.0
    return x


@pytest.mark.slow
def test_reductions_over_more_than_2_31_elements():
    x = _zeros_with_marks()
    assert ops.argmax(x) == N - 5
    assert ops.max(x) == 1.0 and ops.min(x) == -2.0
    assert ops.sum(x) == -1.0
    # along an axis: one long row (the whole team on it), and rows of 2**30 + 19
    assert ops.argmax(x.reshape(1, N), axis=1).tolist() == [N - 5]
    assert ops.sum(x.reshape(1, N), axis=1).tolist() == [-1.0]
    halves = x.reshape(2, N // 2)
    assert ops.argmax(halves, axis=1).tolist() == [0, N // 2 - 5]
    assert ops.min(halves, axis=1).tolist() == [-2.0, 0.0]


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="writes 8.6 GB: FORKWAIT_STRESS=long")
@pytest.mark.skipif(_mem_available() < 4 * N + (3 << 30), reason="needs ~12 GB of free memory")
def test_element_wise_over_more_than_2_31_elements():
    x = _zeros_with_marks()
    ops.add(x, 1.0, out=x)  # in place, element-wise across the whole range
    assert x[N - 1] == 1.0 and x[N - 5] == 2.0 and x[3] == -1.0
    assert ops.argmax(x) == N - 5
    ops.mul(x, x, out=x)
    assert x[N - 5] == 4.0 and x[N - 1] == 1.0
    del x
