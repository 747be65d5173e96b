"""Two forked kernels vs the same two one after the other, for two builds of
forkwait alternated in fresh processes (an A/B of a scheduler change).

    python bench/pair_ab.py DIR_A DIR_B [--op matmul] [--size 128]
        [--dtype float32] [--alternations 8] [--interop 2]

--op matmul: size x size matrices; --op exp (or another unary op): arrays of
`size` elements.

DIR_A and DIR_B each hold a built ``forkwait`` package (as for
``bench/sched_ab.py``). Each process: seq (two ``ops.matmul`` calls) and
forked (``wait_all`` of two ``fork(ops.matmul, a, b, out=...)``) interleaved
over 9 rounds at intra-op 1 (for a unary op: ``ops.<op>(x, out=...)``); it
prints the median of per-round seq / forked ratios and the median time of a
forked pair. The last lines are the medians
over processes. Run it under ``flock -x`` and note the load it prints: on a
shared VM the two CPUs' own state moves these figures run to run, which is
why the builds alternate.
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
import numpy as np
import forkwait as fw
from forkwait import ops

size, dt, interop, op = int(sys.argv[1]), np.dtype(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fw.set_num_interop_threads(interop)
fw.set_num_threads(1)
rng = np.random.default_rng(0)
shape = (size, size) if op == "matmul" else (size,)
xs = [rng.standard_normal(shape).astype(dt) for _ in range(4)]
outs = [np.empty(shape, dt) for _ in range(2)]
fn = getattr(ops, op)
args = ((xs[0], xs[1]), (xs[2], xs[3])) if op == "matmul" else ((xs[0],), (xs[2],))

def seq():
    fn(*args[0], out=outs[0])
    fn(*args[1], out=outs[1])

def forked():
    fw.wait_all([fw.fork(fn, *args[0], out=outs[0]), fw.fork(fn, *args[1], out=outs[1])])

t0 = time.perf_counter()
for _ in range(20):
    seq()
one = (time.perf_counter() - t0) / 40

end = time.perf_counter() + 0.5
while time.perf_counter() < end:
    forked()
reps = max(5, int(0.02 / max(one, 1e-7)))
ratios, pairs = [], []
for _ in range(9):
    t0 = time.perf_counter()
    for _ in range(reps):
        seq()
    t1 = time.perf_counter()
    for _ in range(reps):
        forked()
    t2 = time.perf_counter()
    ratios.append((t1 - t0) / (t2 - t1))
    pairs.append((t2 - t1) / reps)
print(json.dumps({"ratio": statistics.median(ratios), "pair_us": statistics.median(pairs) * 1e6}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs=2, metavar="DIR")
    ap.add_argument("--op", default="matmul")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--alternations", type=int, default=8)
    ap.add_argument("--interop", type=int, default=2)
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print("load before:", " ".join(f.read().split()[:3]))
    results: dict[str, list[dict]] = {d: [] for d in args.dirs}
    for _ in range(args.alternations):
        for d in args.dirs:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(d))
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.size), args.dtype, str(args.interop),
                 args.op],
                env=env, capture_output=True, text=True, check=True, cwd="/")
            results[d].append(json.loads(out.stdout))
    for label, d in zip("AB", args.dirs, strict=True):
        rs = [r["ratio"] for r in results[d]]
        print(f"{label} ({d}) {args.op} {args.size} {args.dtype}: seq/forked per process "
              f"{' '.join(f'{r:.2f}' for r in rs)}; median {statistics.median(rs):.2f}, "
              f"pair {statistics.median(r['pair_us'] for r in results[d]):.0f} us")
    with open("/proc/loadavg") as f:
        print("load after:", " ".join(f.read().split()[:3]))


if __name__ == "__main__":
    main()
