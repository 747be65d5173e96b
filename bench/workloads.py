"""The workloads of the inter-op benchmarks, shared by pytest-benchmark
(bench_pool.py) and the ratio script (pool_ratios.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import forkwait as fw


def noop():
    return None


def matmul_branch(n=512, steps=6, seed=0, preallocated=True):
    """A chain of n x n float64 matmuls (BLAS, releases the GIL).

    With `preallocated` the chain ping-pongs between two output buffers, as
    an inference loop does; without, every step allocates a fresh 2 MiB
    result, and glibc's allocator (page faults, per-thread arenas) then adds
    a few percent that depends on which thread runs the branch.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    b = rng.standard_normal((n, n)) / np.sqrt(n)
    bufs = [np.empty_like(a), np.empty_like(a)]

    def run():
        h = a
        for i in range(steps):
            if preallocated:
                h = np.matmul(h, b, out=bufs[i % 2])
            else:
                h = h @ b
        return h

    return run


def tanh_branch(n=48 * 1024, steps=40, seed=0):
    """np.tanh over a float64 array that fits in one core's L2 (384 KiB)."""
    x = np.random.default_rng(seed).standard_normal(n)
    out = np.empty_like(x)

    def run():
        for _ in range(steps):
            np.tanh(x, out=out)
        return out

    return run


def membound_branch(n=4 * 1024 * 1024, steps=4, seed=0):
    """a + b over 4M float64 (32 MiB per array): limited by memory bandwidth."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    out = np.empty_like(a)

    def run():
        for _ in range(steps):
            np.add(a, b, out=out)
        return out

    return run


def stream_copy(n=4 * 1024 * 1024, threads=1):
    """STREAM-style copy of 4M float64, split over plain threads (no forkwait):
    the speed-up that memory bandwidth allows."""
    src = np.random.default_rng(0).standard_normal(n)
    dst = np.empty_like(src)
    bounds = np.linspace(0, n, threads + 1).astype(int)
    ex = ThreadPoolExecutor(threads) if threads > 1 else None

    def part(i):
        np.copyto(dst[bounds[i] : bounds[i + 1]], src[bounds[i] : bounds[i + 1]])

    def run():
        if ex is None:
            part(0)
        else:
            list(ex.map(part, range(threads)))

    run.nbytes = 2 * src.nbytes  # read + write
    return run


# ---- how each peer runs a list of branches


def serial(branches):
    return [b() for b in branches]


def forkwait_peer(branches):
    return fw.wait_all([fw.fork(b) for b in branches])


def executor_peer(executor):
    def run(branches):
        return [f.result() for f in [executor.submit(b) for b in branches]]

    return run


def torch_fork_peer():
    """Eager torch.jit.fork / torch.jit.wait from plain Python, or None."""
    try:
        import torch
    except ImportError:
        return None

    done = torch.zeros(())

    def as_torch(branch):
        # torch.jit.fork wants a tensor back; the NumPy work is the same
        def call():
            branch()
            return done

        return call

    def run(branches):
        futs = [torch.jit.fork(as_torch(b)) for b in branches]
        return [torch.jit.wait(f) for f in futs]

    return run
