"""Inter-op benchmarks as ratios against peers in the same run.

    python bench/pool_ratios.py [--rounds 15] [--json out.json]

Every figure is the median over rounds of a per-round ratio; the peers of a
row run interleaved in the same process. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as w  # noqa: E402
from _harness import blas_threads, interleaved, loadavg, median_ratio  # noqa: E402

import forkwait as fw  # noqa: E402


def overhead(rounds: int, executor: ThreadPoolExecutor) -> list[tuple[str, str]]:
    rows = []
    n_trip = 2000

    def fw_trip():
        for _ in range(n_trip):
            fw.wait(fw.fork(w.noop))

    def tpe_trip():
        for _ in range(n_trip):
            executor.submit(w.noop).result()

    t = interleaved({"fw": fw_trip, "tpe": tpe_trip}, rounds)
    rows.append(
        (
            "fork+wait round trip of a no-op / ThreadPoolExecutor submit().result() "
            "(target <= 0.25)",
            f"{median_ratio(t['fw'], t['tpe']):.3f}  "
            f"({statistics.median(t['fw']) / n_trip * 1e6:.1f} us vs "
            f"{statistics.median(t['tpe']) / n_trip * 1e6:.1f} us)",
        )
    )
    n_many = 100_000

    def fw_many():
        fw.wait_all([fw.fork(w.noop) for _ in range(n_many)])

    def tpe_many():
        for f in [executor.submit(w.noop) for _ in range(n_many)]:
            f.result()

    t = interleaved({"fw": fw_many, "tpe": tpe_many}, max(3, rounds // 3))
    rows.append(
        (
            "throughput, fork 100k no-ops then wait_all / same with ThreadPoolExecutor "
            "(target >= 5)",
            f"{median_ratio(t['tpe'], t['fw']):.1f}x  "
            f"({n_many / statistics.median(t['fw']) / 1e6:.2f} M tasks/s vs "
            f"{n_many / statistics.median(t['tpe']) / 1e6:.3f} M tasks/s)",
        )
    )
    torch_run = w.torch_fork_peer()
    if torch_run is not None:

        def sleeper():
            time.sleep(0.05)

        peers = {
            "serial": lambda: w.serial([sleeper, sleeper]),
            "torch": lambda: torch_run([sleeper, sleeper]),
            "fw": lambda: w.forkwait_peer([sleeper, sleeper]),
        }
        t = interleaved(peers, 5)
        rows.append(
            (
                "two forked 50 ms sleeps, wall time: eager torch.jit.fork / forkwait",
                f"{statistics.median(t['torch']) * 1e3:.0f} ms / "
                f"{statistics.median(t['fw']) * 1e3:.0f} ms "
                "(torch runs the function inside fork: no overlap)",
            )
        )
    return rows


def branches(rounds: int, executor: ThreadPoolExecutor) -> list[tuple[str, str]]:
    rows = []
    torch_run = w.torch_fork_peer()
    cases = [
        ("2 branches x 6 matmuls 512x512 float64 (out= buffers), BLAS 1 thread",
         w.matmul_branch, {}),
        ("2 branches x 6 matmuls 512x512 float64 (a new array per step), BLAS 1 thread",
         w.matmul_branch, {"preallocated": False}),
        ("2 branches x np.tanh over 48K float64 (in L2)", w.tanh_branch, {}),
        ("2 branches x np.add over 4M float64 (memory-bound)", w.membound_branch, {}),
    ]
    for label, make, kw in cases:
        work = [make(seed=i, **kw) for i in range(2)]
        peers = {
            "serial": lambda work=work: w.serial(work),
            "forkwait": lambda work=work: w.forkwait_peer(work),
            "ThreadPoolExecutor": lambda work=work: w.executor_peer(executor)(work),
        }
        if torch_run is not None:
            peers["torch.jit.fork (eager)"] = lambda work=work: torch_run(work)
        t = interleaved(peers, rounds)
        parts = [
            f"{name} {median_ratio(t['serial'], t[name]):.2f}x"
            for name in peers
            if name != "serial"
        ]
        parts.append(
            "forkwait vs TPE (TPE time / forkwait time) "
            f"{median_ratio(t['ThreadPoolExecutor'], t['forkwait']):.2f}x"
        )
        rows.append((label + ": speed-up over serial", ", ".join(parts)))
    one, two = w.stream_copy(threads=1), w.stream_copy(threads=2)
    t = interleaved({"1": one, "2": two}, rounds)
    bw1 = one.nbytes / statistics.median(t["1"]) / 1e9
    bw2 = two.nbytes / statistics.median(t["2"]) / 1e9
    rows.append(
        (
            "STREAM-style copy of 4M float64, 2 threads vs 1 (what bandwidth allows)",
            f"{median_ratio(t['1'], t['2']):.2f}x  ({bw1:.1f} GB/s -> {bw2:.1f} GB/s)",
        )
    )
    return rows


def profiler_cost(rounds: int) -> list[tuple[str, str]]:
    """What recording costs per event: fork+wait of a no-op (one task event),
    and a small kernel call (one kernel event), with fw.profile() on and off."""
    import numpy as np

    n = 2000
    x = np.ones(1000)

    def trips():
        for _ in range(n):
            fw.wait(fw.fork(w.noop))

    def kernels():
        for _ in range(n):
            fw.ops.exp(x)

    def recorded(fn):
        def run():
            with fw.profile():
                fn()

        return run

    peers = {"trip": trips, "trip+prof": recorded(trips)}
    peers.update({"exp": kernels, "exp+prof": recorded(kernels)})
    t = interleaved(peers, rounds)
    # the same round trips with the only pool thread busy: every task then runs
    # inline in wait(), so the difference is the recording alone, without the
    # change it makes to which thread wins the task
    import threading

    saved = fw.get_num_interop_threads()
    fw.set_num_interop_threads(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, 600)
    while not blocker.running():
        time.sleep(0.001)
    try:
        t.update(interleaved({"inline": trips, "inline+prof": recorded(trips)}, rounds))
    finally:
        gate.set()
        fw.wait(blocker)
        fw.set_num_interop_threads(saved)
    rows = []
    for name, label in (
        ("trip", "fork+wait of a no-op, idle pool"),
        ("inline", "fork+wait of a no-op, busy pool (task runs inline)"),
        ("exp", "ops.exp on 1000 float64"),
    ):
        off = statistics.median(t[name]) / n * 1e6
        on = statistics.median(t[name + "+prof"]) / n * 1e6
        rows.append(
            (
                f"profiler: {label}, recording on vs off (cost per event)",
                f"{median_ratio(t[name + '+prof'], t[name]):.2f}x  "
                f"({off:.2f} us -> {on:.2f} us: +{on - off:.2f} us)",
            )
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    fw.set_num_interop_threads(2)
    fw.set_num_threads(1)
    before = loadavg()
    with ThreadPoolExecutor(2) as executor, blas_threads(1):
        rows = (
            overhead(args.rounds, executor)
            + branches(args.rounds, executor)
            + profiler_cost(args.rounds)
        )
    print(
        f"# inter-op benchmarks: {os.cpu_count()} CPUs, {args.rounds} rounds, "
        f"loadavg before {before}, after {loadavg()}"
    )
    print("| measurement | median ratio |")
    print("| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "loadavg": [before, loadavg()]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
