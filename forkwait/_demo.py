"""`python -m forkwait demo`: a small multi-branch workload, run serially,
with fork/wait, and with a few thread settings, timed on this machine."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

import forkwait as fw
from forkwait._threads import available_cpus


def _blas_single_thread():
    """Limit NumPy's BLAS to one thread when threadpoolctl is there, so that
    the only parallelism is forkwait's (returns a context manager)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _ops():
    try:
        from forkwait import ops  # the OpenMP kernels, when built
    except ImportError:
        return None
    return ops


def make_branch(x: np.ndarray, w: np.ndarray, steps: int) -> Callable[[], np.ndarray]:
    """One branch of the model: `steps` of (matmul, activation)."""
    ops = _ops()
    tanh = ops.tanh if ops is not None else np.tanh

    def branch() -> np.ndarray:
        h = x
        for _ in range(steps):
            h = tanh(h @ w)
        return h

    return branch


def run_serial(branches):
    return [b() for b in branches]


def run_forked(branches):
    return fw.wait_all([fw.fork(b) for b in branches])


def demo(
    branches: int = 4, size: int = 256, steps: int = 12, rounds: int = 5, out=print
) -> list[tuple[str, float, float]]:
    """Time the workload under several settings; print and return the table."""
    rng = np.random.default_rng(0)
    work = [
        make_branch(
            rng.standard_normal((size, size)).astype(np.float32),
            (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32),
            steps,
        )
        for _ in range(branches)
    ]
    ncpu = available_cpus()
    interops = sorted({1, 2, ncpu} & set(range(1, ncpu + 1)))
    settings: list[tuple[str, Callable, int, int]] = [
        ("serial (no fork), 1 intra-op thread", run_serial, 1, 1),
        (f"serial (no fork), {ncpu} intra-op threads", run_serial, 1, ncpu),
    ]
    for k in interops:
        settings.append((f"fork/wait, {k} inter-op x 1 intra-op", run_forked, k, 1))
    settings.append((f"fork/wait, {ncpu} inter-op x {ncpu} intra-op", run_forked, ncpu, ncpu))
    saved = (fw.get_num_interop_threads(), fw.get_num_threads())
    times: dict[str, list[float]] = {name: [] for name, *_ in settings}
    reference = run_serial(work)
    try:
        with _blas_single_thread():
            for _ in range(rounds):  # interleaved: every setting once per round
                for name, runner, inter, intra in settings:
                    fw.set_num_interop_threads(inter)
                    fw.set_num_threads(intra)
                    t0 = time.perf_counter()
                    result = runner(work)
                    times[name].append(time.perf_counter() - t0)
                    pairs = zip(result, reference, strict=True)
                    if not all(np.allclose(a, b, atol=1e-4) for a, b in pairs):
                        raise AssertionError(f"{name}: results differ from the serial run")
    finally:
        fw.set_num_interop_threads(saved[0])
        fw.set_num_threads(saved[1])
    base = statistics.median(times[settings[0][0]])
    table = [
        (name, statistics.median(ts), base / statistics.median(ts)) for name, ts in times.items()
    ]
    width = max(len(name) for name, *_ in table)
    out(
        f"forkwait demo: {branches} independent branches of {steps} x (matmul {size}x{size} "
        f"+ tanh), float32, BLAS at 1 thread; median of {rounds} rounds; {ncpu} CPUs"
    )
    out(f"{'setting':<{width}}  {'time (ms)':>10}  {'speed-up':>8}")
    for name, t, s in table:
        out(f"{name:<{width}}  {t * 1e3:>10.1f}  {s:>7.2f}x")
    best = max(table, key=lambda row: row[2])
    out(
        "Speed-up is against the first row. Forking the independent branches lets "
        f"them run at once on the inter-op pool; best here: {best[0]} ({best[2]:.2f}x)."
    )
    out(
        "(The thread that waits also runs queued branches, so even 1 inter-op thread "
        "runs two branches at once: the pool thread and the waiting main thread.)"
    )
    return table
