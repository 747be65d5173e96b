"""Which second OpenBLAS copy ops.matmul should call: two forked matmuls vs the
same two one after the other, with NumPy's copy and each candidate second copy,
alternated in fresh processes.

    python bench/blas_copies.py [--sizes 128,256] [--dtypes float32,float64]
        [--copies scipy,openblas64] [--alternations 3] [--pairs 300]

Each process loads NumPy's copy and one candidate (``select_blas("numpy", X)``),
so the two GEMMs of a forked pair run on the two copies (each pins the copy
fewer matmuls use). It times every pair and every sequential pair on its own
(9 rounds of `--pairs` each, interleaved) and prints the ratio of the median
sequential time to the median forked time, and the median forked pair. The
last lines are the medians over processes. Run it on a quiet machine and note
the load it prints: a pair is two cores' worth of work, so another tenant's
burst moves it more than a single call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import loadavg  # noqa: E402

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import forkwait as fw
from forkwait import ops
from forkwait._native import _blas

copy, size, dt, pairs = sys.argv[1], int(sys.argv[2]), np.dtype(sys.argv[3]), int(sys.argv[4])
names = _blas.select_blas("numpy", copy)
libs = [n for n, _, _ in _blas.blas_libraries()]
fw.set_num_interop_threads(2)
fw.set_num_threads(1)
rng = np.random.default_rng(0)
xs = [rng.standard_normal((size, size)).astype(dt) for _ in range(4)]
outs = [np.empty((size, size), dt) for _ in range(2)]
mm, fork, wait_all, pc = ops.matmul, fw.fork, fw.wait_all, time.perf_counter_ns

def seq():
    mm(xs[0], xs[1], out=outs[0])
    mm(xs[2], xs[3], out=outs[1])

def forked():
    wait_all([fork(mm, xs[0], xs[1], out=outs[0]), fork(mm, xs[2], xs[3], out=outs[1])])

end = time.perf_counter() + 0.5
while time.perf_counter() < end:
    forked()
S, F = [], []
for _ in range(9):
    for fn, acc in ((seq, S), (forked, F)):
        for _ in range(pairs):
            t0 = pc()
            fn()
            acc.append(pc() - t0)
ok = np.allclose(outs[0], xs[0].astype(np.float64) @ xs[1], rtol=1e-3, atol=1e-3 * size)
print(json.dumps({"libs": libs, "ratio": statistics.median(S) / statistics.median(F),
                  "pair_us": statistics.median(F) / 1e3, "seq_us": statistics.median(S) / 1e3,
                  "ok": bool(ok)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--copies", default="scipy,openblas64")
    ap.add_argument("--alternations", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=300)
    args = ap.parse_args()
    copies = args.copies.split(",")
    print("load before:", loadavg())
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=here)
    for size in (int(s) for s in args.sizes.split(",")):
        for dt in args.dtypes.split(","):
            res: dict[str, list[dict]] = {c: [] for c in copies}
            for _ in range(args.alternations):
                for c in copies:
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, c, str(size), dt, str(args.pairs)],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                        cwd="/",
                    )
                    res[c].append(json.loads(out.stdout))
            for c in copies:
                rs = res[c]
                assert all(r["ok"] for r in rs), rs
                per = " ".join(f"{r['ratio']:.2f}" for r in rs)
                print(
                    f"{size} {dt} {'+'.join(rs[0]['libs'])}: seq/forked per process "
                    f"{per}; median "
                    f"{statistics.median(r['ratio'] for r in rs):.2f}, forked pair "
                    f"{statistics.median(r['pair_us'] for r in rs):.1f} us, two in turn "
                    f"{statistics.median(r['seq_us'] for r in rs):.1f} us",
                    flush=True,
                )
    print("load after:", loadavg())


if __name__ == "__main__":
    main()
