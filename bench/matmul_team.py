"""ops.matmul at 2 threads: the whole product as one GEMM on forkwait's team
(the default from 2**26 multiply-adds for float32, 2**24 for float64; 2**21
for both on Intel CPUs) against
the column split over two OpenBLAS copies (``set_wide_team(0)``) and against
NumPy's own 2-thread GEMM, as per-call medians; and a matmul / gelu / matmul /
exp sequence, where OpenBLAS threads that spin beside forkwait's would show.

    python bench/matmul_team.py [--sizes 256,512,1024] [--dtypes float64,float32]
        [--rounds 5] [--processes 2] [--threads 2] [--team-min N]

Per process and size: `--rounds` rounds, each a block of calls of every
candidate in turn (NumPy, split, team), 0.3 s apart (OpenBLAS's own threads,
NumPy's, spin ~0.1 s after a call), every call timed on its own; the figure is
NumPy's median call over the candidate's (above 1: faster than NumPy). The
sequence part alternates split and team in blocks of 15 sequences, 7 rounds.
Fresh processes, `--processes` of them per case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import loadavg  # noqa: E402

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import forkwait as fw
from forkwait import ops
from forkwait._native import _blas, _matmul

part, size, dt = sys.argv[1], int(sys.argv[2]), np.dtype(sys.argv[3])
rounds, threads = int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(0)
a = rng.standard_normal((size, size)).astype(dt)
b = rng.standard_normal((size, size)).astype(dt)
out = np.empty((size, size), dt)
fw.set_num_threads(threads)
if int(sys.argv[6]) >= 0:
    _matmul.set_wide_team_min(int(sys.argv[6]), int(sys.argv[6]))
pc = time.perf_counter_ns
calls0 = _blas.team_blas()[2]
if part == "calls":
    def npmm(): np.matmul(a, b, out=out)
    def fwmm(): ops.matmul(a, b, out=out)
    one = time.perf_counter(); npmm(); one = time.perf_counter() - one
    n = max(5, int(0.05 / max(one, 1e-6)))
    T = {"numpy": [], "split": [], "team": []}
    for _ in range(rounds):
        for name in T:
            _matmul.set_wide_team(3 if name == "team" else 0)
            fn = npmm if name == "numpy" else fwmm
            time.sleep(0.3)
            end = time.perf_counter() + 0.02
            while time.perf_counter() < end:
                fn()
            for _ in range(n):
                t0 = pc(); fn(); T[name].append(pc() - t0)
    ok = np.allclose(out, a.astype(np.float64) @ b, rtol=1e-3, atol=1e-3 * size)
    m = {k: statistics.median(v) for k, v in T.items()}
    res = {"np/split": m["numpy"] / m["split"], "np/team": m["numpy"] / m["team"],
           "numpy_us": m["numpy"] / 1e3}
else:
    x = rng.standard_normal(1 << 20).astype(np.float32)
    def seq():
        ops.matmul(a, b, out=out); ops.gelu(x); ops.matmul(b, a, out=out); ops.exp(x)
    T = {"split": [], "team": []}
    for _ in range(7):
        for name in T:
            _matmul.set_wide_team(3 if name == "team" else 0)
            for _ in range(3):
                seq()
            for _ in range(15):
                t0 = pc(); seq(); T[name].append(pc() - t0)
    ok = True
    m = {k: statistics.median(v) for k, v in T.items()}
    res = {"split/team": m["split"] / m["team"], "team_us": m["team"] / 1e3}
res["ok"] = bool(ok)
res["team_calls"] = _blas.team_blas()[2] - calls0
print(json.dumps(res))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="calls,sequence")
    ap.add_argument("--team-min", type=int, default=-1,
                    help="fewest multiply-adds handed whole to the team, both dtypes "
                         "(default: forkwait's, 2**26 float32 and 2**24 float64, 2**21 on Intel)")
    args = ap.parse_args()
    print("load before:", loadavg())
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=here)
    for part in args.parts.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for dt in args.dtypes.split(","):
                rs = []
                for _ in range(args.processes):
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, part, str(size), dt, str(args.rounds),
                         str(args.threads), str(args.team_min)],
                        env=env, capture_output=True, text=True, check=True, cwd="/",
                    )
                    rs.append(json.loads(out.stdout))
                assert all(r["ok"] for r in rs), rs
                keys = [k for k in rs[0] if "/" in k]
                figs = "; ".join(
                    f"{k} " + " ".join(f"{r[k]:.3f}" for r in rs) for k in keys
                )
                print(f"{part} {size} {dt}: {figs} (team calls {rs[0]['team_calls']})",
                      flush=True)
    print("load after:", loadavg())


if __name__ == "__main__":
    main()
