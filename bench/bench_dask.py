"""forkwait's cluster backend against raw Dask, in the same run, on one cluster.

    flock -x /tmp/fw-cpu.lock python bench/bench_dask.py [--rounds 5] [--n 2000]

Starts a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
on the loopback and measures, interleaved round by round (medians):

1. round trip: raw ``client.submit(f, x, pure=False).result()`` against
   ``fw.fork(f, x).wait()`` inside ``fw.backend(client)``;
2. N forks then ``wait_all``: raw N submits + ``client.gather`` against N
   ``fw.fork`` + ``fw.wait_all`` (which side goes first alternates by round),
   in wall time and in the CPU time of this process, which runs the client
   and the scheduler and is what limits the rate here;
3. a fork tree: the top level (one branch per worker) on the cluster, each
   branch forking leaves that run forkwait kernels on the worker's local
   pool; the same program on the local pool alone. Reports each worker's CPU
   time over wall time while its branch ran, and the wall times.

Prints the machine (CPU, load) first; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import forkwait as fw  # noqa: E402


def inc(x):
    return x + 1


def leaf(n, seed):
    """A forkwait kernel call: softmax of an n x n block (GIL released)."""
    a = np.random.default_rng(seed).standard_normal((n, n))
    return float(fw.ops.softmax(a, axis=-1).sum())


def branch(n_leaves, n, seed):
    """One top-level branch: forks its leaves locally, waits, and reports the
    CPU time of this process over the wall time of the branch."""
    t0, c0 = time.perf_counter(), time.process_time()
    total = sum(fw.wait_all([fw.fork(leaf, n, seed + i) for i in range(n_leaves)]))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return total, cpu / wall, os.getpid()


def tree(n_branches, n_leaves, n):
    futs = [fw.fork(branch, n_leaves, n, 1000 * b) for b in range(n_branches)]
    return fw.wait_all(futs)


def settle(client):
    """Let the cluster forget the last section's tasks before the next one is
    timed (dropping 2,000 futures sends 2,000 releases to the scheduler)."""
    deadline = time.monotonic() + 5.0
    while client.futures and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    with open("/proc/loadavg") as f:
        load = f.read().strip()
    return f"CPU: {model}; {os.cpu_count()} CPUs; load {load}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=2000, help="forks in the wait_all section")
    ap.add_argument("--trips", type=int, default=40, help="round trips per round")
    ap.add_argument("--leaves", type=int, default=8)
    ap.add_argument("--size", type=int, default=1000, help="leaf matrix side")
    ap.add_argument("--tree", action=argparse.BooleanOptionalAction, default=True,
                    help="run the fork-tree section (3.)")
    ap.add_argument("--dask-malloc-trim", action=argparse.BooleanOptionalAction, default=True,
                    help="keep Dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers (its default)")
    args = ap.parse_args()
    import dask
    import distributed

    if not args.dask_malloc_trim:
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ})

    print(machine())
    print(f"distributed {distributed.__version__}, forkwait {fw.__version__}")
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    print(f"cluster start: {time.perf_counter() - t0:.2f} s")
    be = fw.backend(client)
    # warm-up: both paths, workers import forkwait and numpy
    n_branches = len(client.scheduler_info()["workers"])
    with be:
        fw.wait_all([fw.fork(inc, i) for i in range(50)])
        tree(n_branches, 2, 64)  # every worker imports numpy and runs a kernel
    tree(n_branches, 2, 64)
    client.gather([client.submit(inc, i, pure=False) for i in range(50)])

    rt_raw, rt_fw, many_raw, many_fw, cpu_raw, cpu_fw = [], [], [], [], [], []
    for rnd in range(args.rounds):
        # round trip, interleaved call by call
        for _ in range(args.trips):
            t = time.perf_counter()
            client.submit(inc, 1, pure=False).result()
            rt_raw.append(time.perf_counter() - t)
            with be:
                t = time.perf_counter()
                fw.fork(inc, 1).wait()
                rt_fw.append(time.perf_counter() - t)
        # N forks then wait_all; the side that goes first alternates by round
        for side in (("raw", "fw") if rnd % 2 == 0 else ("fw", "raw")):
            t, c = time.perf_counter(), time.process_time()
            if side == "raw":
                futs = [client.submit(inc, i, pure=False) for i in range(args.n)]
                assert sum(client.gather(futs)) == args.n * (args.n + 1) // 2
            else:
                with be:
                    futs = [fw.fork(inc, i) for i in range(args.n)]
                    assert sum(fw.wait_all(futs)) == args.n * (args.n + 1) // 2
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            (many_raw if side == "raw" else many_fw).append(wall / args.n)
            (cpu_raw if side == "raw" else cpu_fw).append(cpu / args.n)
            del futs
            settle(client)

    def ms(xs):
        return statistics.median(xs) * 1e3

    print(f"round trip        raw {ms(rt_raw):7.2f} ms   forkwait {ms(rt_fw):7.2f} ms   "
          f"ratio {statistics.median(rt_fw) / statistics.median(rt_raw):.3f}")
    ratios = [f / r for f, r in zip(many_fw, many_raw, strict=True)]
    print(f"{args.n} forks+wait_all raw {ms(many_raw):6.3f} ms/task forkwait "
          f"{ms(many_fw):6.3f} ms/task  ratio {statistics.median(ratios):.3f} "
          f"(per-round ratios {', '.join(f'{r:.3f}' for r in ratios)})")
    cpu_ratios = [f / r for f, r in zip(cpu_fw, cpu_raw, strict=True)]
    print(f"{args.n} forks+wait_all, CPU time of this process (client and scheduler): raw "
          f"{ms(cpu_raw):6.3f} ms/task forkwait {ms(cpu_fw):6.3f} ms/task  ratio "
          f"{statistics.median(cpu_ratios):.3f} "
          f"(per-round ratios {', '.join(f'{r:.3f}' for r in cpu_ratios)})")

    if args.tree:
        fork_tree(args, be, n_branches, statistics.median(rt_raw))
    print(machine())
    client.close()
    cluster.close()


def fork_tree(args, be, n_branches, rt_raw):
    """3.: the cluster's top level against the local pool, interleaved by round."""
    cl_wall, lo_wall, cpu_wall = [], [], []
    for _ in range(args.rounds):
        with be:
            t = time.perf_counter()
            res = tree(n_branches, args.leaves, args.size)
            cl_wall.append(time.perf_counter() - t)
        cpu_wall.append([r[1] for r in res])
        pids = {r[2] for r in res}
        t = time.perf_counter()
        tree(n_branches, args.leaves, args.size)
        lo_wall.append(time.perf_counter() - t)
    per_worker = [statistics.median(c[i] for c in cpu_wall) for i in range(n_branches)]
    extra = (statistics.median(c - lo for c, lo in zip(cl_wall, lo_wall, strict=True))) * 1e3
    print(f"fork tree: cluster - local pool = {extra:.1f} ms (median of per-round "
          f"differences); Dask's own round trip in this run: {rt_raw * 1e3:.1f} ms")
    print(f"fork tree ({n_branches} branches x {args.leaves} leaves of softmax "
          f"{args.size}x{args.size}): cluster {statistics.median(cl_wall) * 1e3:.1f} ms, "
          f"local pool {statistics.median(lo_wall) * 1e3:.1f} ms, ratio "
          f"{statistics.median(c / lo for c, lo in zip(cl_wall, lo_wall, strict=True)):.3f}; "
          f"worker CPU time / wall time per branch: "
          f"{', '.join(f'{x:.2f}' for x in per_worker)} ({len(pids)} worker processes)")


if __name__ == "__main__":
    main()
