"""Two builds of forkwait, alternated in fresh processes (an A/B of a change).

    python bench/sched_ab.py DIR_A DIR_B [--alternations 4] [--rounds 5]

DIR_A and DIR_B each hold a built ``forkwait`` package (for example a copy of
the tree's ``forkwait/`` made before and after rebuilding ``pool``). Every
alternation runs one fresh process per build, A then B; each process prints the
medians over `--rounds` of: 100k no-op forks then ``wait_all`` per task, split
into the fork phase and the wait phase; the fork+wait round trip; nested
``fib(20)`` by fork/wait. The last lines are the medians over alternations.
Run it under ``flock -x`` on a shared machine and note the load it printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import forkwait as fw

def noop():
    return None

def many(n=100_000):
    t0 = time.perf_counter()
    futs = [fw.fork(noop) for _ in range(n)]
    t1 = time.perf_counter()
    fw.wait_all(futs)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6

def trip(n=20_000):
    t0 = time.perf_counter()
    for _ in range(n):
        fw.fork(noop).wait()
    return (time.perf_counter() - t0) / n * 1e6

def fib(k):
    if k < 2:
        return k
    a = fw.fork(fib, k - 1)
    b = fib(k - 2)
    return a.wait() + b

def fib_ms():
    t0 = time.perf_counter()
    fib(20)
    return (time.perf_counter() - t0) * 1e3

time.sleep(0.3)  # OpenBLAS's threads spin for a while after forkwait's import
many(); trip(); fib_ms()
rounds = int(sys.argv[1])
m = [many() for _ in range(rounds)]
print(json.dumps({
    "fork_us": statistics.median(x[0] for x in m),
    "wait_us": statistics.median(x[1] for x in m),
    "many_us": statistics.median(x[0] + x[1] for x in m),
    "trip_us": statistics.median(trip() for _ in range(rounds)),
    "fib20_ms": statistics.median(fib_ms() for _ in range(rounds)),
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs=2, metavar="DIR")
    ap.add_argument("--alternations", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print("load before:", " ".join(f.read().split()[:3]))
    results: dict[str, list[dict]] = {d: [] for d in args.dirs}
    for _ in range(args.alternations):
        for label, d in zip("AB", args.dirs, strict=True):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(d))
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.rounds)], env=env,
                                 capture_output=True, text=True, check=True, cwd="/")
            row = json.loads(out.stdout)
            results[d].append(row)
            print(label, " ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    for label, d in zip("AB", args.dirs, strict=True):
        keys = results[d][0]
        print(f"median {label} ({d}):",
              " ".join(f"{k} {statistics.median(r[k] for r in results[d]):.3f}" for k in keys))
    with open("/proc/loadavg") as f:
        print("load after:", " ".join(f.read().split()[:3]))


if __name__ == "__main__":
    main()
