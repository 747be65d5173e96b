"""The intra-op team's cost (issue 24): forkwait's team against PyTorch's
``at::parallel_for`` in the same process, interleaved round by round, medians.

    python bench/team_forkjoin.py                  # every section
    python bench/team_forkjoin.py chain empty      # some of them
    python bench/team_forkjoin.py --rounds 21

Sections:

- ``chain``: 12 x (gelu, layer_norm, tanh) on 64x1024 float32 (36 kernels a
  call), at 1 and 2 threads: forkwait (its chunks dealt out as each thread's
  own share first, the default, and with OpenMP's schedule(dynamic), the
  region before) and torch (``torch.set_num_threads``). Figure: the median
  over rounds of (1-thread time / 2-thread time) of each.
- ``empty``: the fixed cost of a parallel region with nothing to do, 2000
  in a row timed in C: forkwait's team (team_begin, the region every chunked
  kernel runs, team_end), the same with schedule(dynamic) (before), libgomp's
  bare empty ``parallel`` (the floor), and torch's ``at::parallel_for(0, 2,
  1, empty)`` (a few lines of C++ built with torch's extension loader on the
  first run, then cached).
- ``blas``: forkwait kernels right after a NumPy matmul (OpenBLAS at 2
  threads) against the same kernels right after forkwait kernels.

Each row prints the CPU model and /proc/loadavg before and after. torch is
skipped where it is not installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import forkwait as fw  # noqa: E402
from forkwait._native import _team  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine() -> str:
    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPUs"


def interleaved(peers, rounds, reps):
    """Seconds per call of each peer, per round (peers in turn each round,
    the order rotated every round; `reps` calls timed together)."""
    names = list(peers)
    times = {name: [] for name in names}
    for name in names:  # warm-up
        peers[name]()
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = peers[name]
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[name].append((time.perf_counter() - t0) / reps)
    return times


def ratio(num, den):
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def med_ms(ts):
    return statistics.median(ts) * 1e3


# -- chain ------------------------------------------------------------------------


def fw_chain(x, steps=12):
    ops = fw.ops
    h = x
    for _ in range(steps):
        h = ops.tanh(ops.layer_norm(ops.gelu(h)))
    return h


def torch_chain(x, steps=12):
    f = torch.nn.functional
    h = x
    for _ in range(steps):
        h = torch.tanh(f.layer_norm(f.gelu(h), (h.shape[-1],)))
    return h


def at_threads(fn, n, dynamic=None):
    def run():
        fw.set_num_threads(n)
        old = _team._set_split_dynamic(dynamic) if dynamic is not None else None
        try:
            fn()
        finally:
            if old is not None:
                _team._set_split_dynamic(old)
    return run


def torch_at(fn, n):
    def run():
        torch.set_num_threads(n)
        fn()
    return run


def section_chain(args):
    x = np.random.default_rng(0).standard_normal((args.rows, 1024)).astype(np.float32)
    peers = {
        "fw 1": at_threads(lambda: fw_chain(x), 1),
        "fw 2": at_threads(lambda: fw_chain(x), 2, False),
        "fw 2 dynamic": at_threads(lambda: fw_chain(x), 2, True),
    }
    if torch is not None:
        xt = torch.from_numpy(x)
        peers["torch 1"] = torch_at(lambda: torch_chain(xt), 1)
        peers["torch 2"] = torch_at(lambda: torch_chain(xt), 2)
    # same bits whatever the team and the split
    fw.set_num_threads(1)
    one = fw_chain(x)
    for n, dyn in ((2, False), (2, True)):
        fw.set_num_threads(n)
        old = _team._set_split_dynamic(dyn)
        assert np.array_equal(fw_chain(x), one), "results differ between team sizes"
        _team._set_split_dynamic(old)
    before = loadavg()
    t = interleaved(peers, args.rounds, args.reps)
    after = loadavg()
    print(f"\n## chain: 12 x (gelu, layer_norm, tanh), {args.rows}x1024 float32; {machine()}; "
          f"load {before} -> {after}; {args.rounds} rounds x {args.reps} calls")
    print(f"{'peer':<14} {'median ms':>9}  {'min-max ms':>13}")
    for name, ts in t.items():
        print(f"{name:<14} {med_ms(ts):>9.3f}  {min(ts) * 1e3:>6.3f}-{max(ts) * 1e3:<6.3f}")
    print(f"forkwait 2 threads over 1 (own shares first): {ratio(t['fw 1'], t['fw 2']):.2f}x")
    print(f"forkwait 2 threads over 1 (dynamic, before):   "
          f"{ratio(t['fw 1'], t['fw 2 dynamic']):.2f}x")
    if torch is not None:
        print(f"torch    2 threads over 1:                     "
              f"{ratio(t['torch 1'], t['torch 2']):.2f}x")
        print(f"forkwait 2 threads over torch 2 threads:       "
              f"{ratio(t['torch 2'], t['fw 2']):.2f}x (above 1: forkwait faster)")


# -- empty ------------------------------------------------------------------------


# at::parallel_for with nothing to do, timed in C++ as forkwait's region is
# (compiled once by torch's own extension loader, cached under
# ~/.cache/torch_extensions; -fopenmp, as ATen's OpenMP backend is a header).
TORCH_EMPTY = r"""
#include <ATen/Parallel.h>
#include <chrono>
double empty_parallel_for(int64_t reps) {
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; r++)
    at::parallel_for(0, 2, 1, [](int64_t, int64_t) { asm volatile("" ::: "memory"); });
  auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1 - t0).count() / reps;
}
"""


def torch_empty_parallel_for():
    """The compiled at::parallel_for peer, or None (with the reason printed)."""
    if torch is None:
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        mod = load_inline("fw_bench_empty_parallel_for", cpp_sources=TORCH_EMPTY,
                          functions=["empty_parallel_for"], extra_cflags=["-O2", "-fopenmp"],
                          extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # a compiler or ninja missing: say so, go on without the peer
        print(f"(torch's at::parallel_for peer not built: {type(e).__name__}: {e})")
        return None
    return mod.empty_parallel_for


def section_empty(args):
    torch_pf = torch_empty_parallel_for()
    fw.set_num_threads(2)
    peers = {kind: (lambda k=kind: _team._empty_regions(2000, k)) for kind in
             ("kernel", "dynamic", "tokens", "omp")}
    if torch_pf is not None:
        torch.set_num_threads(2)
        peers["torch"] = lambda: torch_pf(2000)
    for fn in peers.values():  # warm-up
        fn()
    before = loadavg()
    res = {k: [] for k in peers}
    for r in range(args.rounds):
        names = list(peers)
        k = r % len(names)
        for name in names[k:] + names[:k]:
            res[name].append(peers[name]())
    after = loadavg()
    print(f"\n## empty: an empty 2-thread region, timed in C / C++ over 2000 in a row; "
          f"{machine()}; load {before} -> {after}; {args.rounds} rounds, medians")
    what = {
        "kernel": "forkwait's team (team_begin, the region of every chunked kernel, team_end)",
        "dynamic": "forkwait's team with schedule(dynamic) (Cython's prange; the region before)",
        "tokens": "team_begin, libgomp's bare empty parallel, team_end",
        "omp": "libgomp's bare empty parallel of 2 threads (the floor)",
        "torch": "torch's at::parallel_for(0, 2, 1, empty)",
    }
    for name, ts in res.items():
        print(f"{name:<8} {statistics.median(ts) * 1e6:6.2f} us  {what[name]}")
    if "torch" in res:
        print(f"forkwait's team region / torch's parallel_for: "
              f"{ratio(res['kernel'], res['torch']):.2f} (below 1: forkwait cheaper)")


# -- blas -------------------------------------------------------------------------


def section_blas(args):
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    x = rng.standard_normal((args.rows, 1024)).astype(np.float32)
    fw.set_num_threads(2)

    def kernels():
        fw_chain(x, steps=2)

    def after_matmul():
        a @ w  # NumPy's OpenBLAS, 2 threads
        t0 = time.perf_counter()
        kernels()
        return time.perf_counter() - t0

    def after_kernels():
        kernels()
        t0 = time.perf_counter()
        kernels()
        return time.perf_counter() - t0

    with threadpool_limits(2, user_api="blas"):
        before = loadavg()
        res = {"after matmul": [], "back to back": []}
        for f in (after_matmul, after_kernels):
            f()
        for r in range(args.rounds):
            order = [("after matmul", after_matmul), ("back to back", after_kernels)]
            for name, f in (order if r % 2 == 0 else order[::-1]):
                res[name].append(statistics.median(f() for _ in range(args.reps * 4)))
        after = loadavg()
    print(f"\n## blas: 2 x (gelu, layer_norm, tanh) on {args.rows}x1024 float32 at 2 threads, "
          f"right after a 256x256 float32 NumPy matmul (OpenBLAS, 2 threads) or right after the "
          f"same kernels; {machine()}; load {before} -> {after}; {args.rounds} rounds")
    for name, ts in res.items():
        print(f"{name:<14} {med_ms(ts):.3f} ms")
    print(f"after a matmul / back to back: {ratio(res['after matmul'], res['back to back']):.2f}x")


SECTIONS = {"chain": section_chain, "empty": section_empty, "blas": section_blas}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sections", nargs="*", help=f"some of {', '.join(SECTIONS)} (all)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--reps", type=int, default=10, help="calls timed together (10)")
    p.add_argument("--rows", type=int, default=64)
    args = p.parse_args(argv)
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    print(f"forkwait {fw.__version__}; torch {torch.__version__ if torch else 'not installed'}")
    for name in args.sections or list(SECTIONS):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
