"""BLAS inside forked tasks: with the BLAS budget and without (issue 10).

    python bench/blas_budget.py [--rounds 7] [--sizes 256 512 1024] [--settle 0.3]

Each branch is a chain of NumPy matmuls (``c = a @ b`` repeated; the chain
length is chosen so a branch takes tens of milliseconds). For 1, 2 and 4
branches, float32 and float64, three peers run interleaved in the same
process, round by round:

- ``serial``: the branches one after the other on the calling thread, BLAS at
  its default thread count (what a program does without forkwait);
- ``fork``: the branches forked (``fw.fork`` + ``fw.wait_all``), budget off:
  every task's BLAS calls use the default thread count (oversubscription);
- ``budget``: the same with ``fw.set_blas_budget(True)``: while r tasks run,
  BLAS runs at most max(1, cpus // r) threads.

Before every timed call the process sleeps ``--settle`` seconds, so that
OpenBLAS's own threads, which spin for a while after each multi-threaded call,
are asleep again and do not land in the next peer's time (``--settle 0``
shows that effect: it hits the budget, which runs right after a multi-threaded
call, hardest). Prints one Markdown row per case: the serial time and the
medians of fork/serial, budget/serial and budget/fork (below 1: faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import loadavg, median_ratio  # noqa: E402
from sched_ratios import cpu_model  # noqa: E402

import forkwait as fw  # noqa: E402

#: chain lengths: about the same work per branch for every size
CHAIN = {128: 200, 256: 40, 512: 8, 1024: 2}


def chain(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    c = a
    for _ in range(k):
        c = a @ b
    return c


def case(n: int, dtype: type, branches: int, rounds: int, settle: float) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    k = CHAIN.get(n, max(1, int(CHAIN[512] * (512 / n) ** 3)))

    def serial() -> None:
        for _ in range(branches):
            chain(a, b, k)

    def forked() -> None:
        fw.wait_all([fw.fork(chain, a, b, k) for _ in range(branches)])

    def budget() -> None:
        fw.set_blas_budget(True)
        try:
            fw.wait_all([fw.fork(chain, a, b, k) for _ in range(branches)])
        finally:
            fw.set_blas_budget(False)

    peers = {"serial": serial, "fork": forked, "budget": budget}
    for fn in peers.values():  # warm-up: OpenBLAS has run multi-threaded
        fn()
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(rounds):
        for name, fn in peers.items():
            time.sleep(settle)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--branches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--settle", type=float, default=0.3)
    args = ap.parse_args()
    was = fw.get_blas_budget()
    fw.set_blas_budget(False)
    print(f"load before: {loadavg()}; {cpu_model()}; CPUs {len(os.sched_getaffinity(0))}; "
          f"inter-op threads {fw.get_num_interop_threads()}; settle {args.settle} s")
    print()
    print("| size | dtype | branches | serial ms | fork/serial | budget/serial | budget/fork |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sizes:
        for dtype in (np.float32, np.float64):
            for nb in args.branches:
                t = case(n, dtype, nb, args.rounds, args.settle)
                print(f"| {n} | {np.dtype(dtype).name} | {nb} "
                      f"| {statistics.median(t['serial']) * 1e3:.1f} "
                      f"| {median_ratio(t['fork'], t['serial']):.3f} "
                      f"| {median_ratio(t['budget'], t['serial']):.3f} "
                      f"| {median_ratio(t['budget'], t['fork']):.3f} |", flush=True)
    print()
    print(f"load after: {loadavg()}")
    fw.set_blas_budget(was)


if __name__ == "__main__":
    main()
