"""forkwait.ops against NumPy, numexpr and PyTorch, interleaved, as median ratios.

Every candidate of a comparison runs in the same round, in turn, for several
rounds; the figures are medians over rounds. Peers that are not installed are
skipped. Run from the repository root (after the in-place build):

    python bench/ops_ratios.py                 # everything
    python bench/ops_ratios.py compute memory  # some sections
    python bench/ops_ratios.py --rounds 9

Sections: compute, accuracy, memory, small, matmul, branches, waitpolicy, grain.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import forkwait as fw  # noqa: E402
from forkwait import ops  # noqa: E402
from forkwait._native import _blas as native_blas  # noqa: E402
from forkwait._native import _matmul as native_matmul  # noqa: E402
from forkwait.ops import _elementwise as ew  # noqa: E402
from forkwait.ops import _reductions as red  # noqa: E402
from forkwait.ops import _rows as rows  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
try:
    import numexpr
except ImportError:  # pragma: no cover
    numexpr = None
try:
    import scipy.special as sps
except ImportError:  # pragma: no cover
    sps = None
try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

HERE = os.path.dirname(os.path.abspath(__file__))


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timeit(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def interleaved_raw(
    cands: dict, rounds: int, reps: int, settle: float = 0.0, warm: float = 0.02
) -> dict:
    """Seconds per call of each candidate in every round (lists, in round order),
    the candidates run in turn in every round.

    `settle`: seconds to sleep before each candidate's turn, so that thread
    pools that spin after a call (OpenBLAS's threads busy-wait for about 0.1 s,
    torch's OpenMP threads for a while too) go idle instead of taking the next
    candidate's cores.
    `warm`: each turn starts with untimed calls for this many seconds (at least
    one): measured here, a core that has been idle for a while (a sleeping
    OpenMP thread's, or both after `settle`) runs the first few milliseconds of
    a turn up to 1.5x slower (its clock, or the hypervisor's scheduling, has to
    come up again), which turns a 2-thread turn of short calls into noise.
    """
    for fn in cands.values():  # warm up
        fn()
    times: dict = {k: [] for k in cands}
    for _ in range(rounds):
        for k, fn in cands.items():
            if settle:
                time.sleep(settle)
            t_end = time.perf_counter() + warm
            fn()
            while time.perf_counter() < t_end:
                fn()
            times[k].append(timeit(fn, reps))
    return times


def interleaved(cands: dict, rounds: int, reps: int, settle: float = 0.0) -> dict:
    """Median seconds per call of each candidate (see interleaved_raw)."""
    times = interleaved_raw(cands, rounds, reps, settle)
    return {k: statistics.median(v) for k, v in times.items()}


def paired_ratio(times: dict, slow: str, fast: str) -> float:
    """Median over rounds of times[slow] / times[fast] taken in the same round:
    a burst of load from elsewhere that slows a few rounds moves both sides of
    those rounds' ratios, and the median drops them."""
    return statistics.median(a / b for a, b in zip(times[slow], times[fast], strict=True))


@contextlib.contextmanager
def threads(n: int):
    """forkwait, torch and BLAS at n threads."""
    old_t = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    lim = threadpool_limits(n, user_api="blas") if threadpool_limits else contextlib.nullcontext()
    with fw.num_threads(n), lim:
        yield
    if torch is not None:
        torch.set_num_threads(old_t)


def with_threads(n, fn):
    def run():
        with fw.num_threads(n):
            fn()

    return run


def torch_threads(n, fn):
    def run():
        torch.set_num_threads(n)
        fn()

    return run


def geomean(xs):
    return float(np.exp(np.mean(np.log(xs))))


# ------------------------------------------------------------------ sections


def _compute_dtype(dt, rng, args, rows, lib):
    x = rng.uniform(-5, 5, (1000, 1000)).astype(dt)
    w = rng.standard_normal(1000).astype(dt)
    b = rng.standard_normal(1000).astype(dt)
    out = np.empty_like(x)
    tmp = np.empty_like(x)
    tx = torch.from_numpy(x) if torch is not None else None
    tw = torch.from_numpy(w) if torch is not None else None
    tb = torch.from_numpy(b) if torch is not None else None
    to = torch.from_numpy(out) if torch is not None else None

    def np_sigmoid(x=x, tmp=tmp, out=out):
        np.negative(x, out=tmp)
        np.exp(tmp, out=tmp)
        np.add(tmp, 1, out=tmp)
        np.divide(1, tmp, out=out)

    def np_gelu(x=x, tmp=tmp, out=out):
        np.multiply(x, 1 / np.sqrt(2), out=tmp)
        sps.erf(tmp, out=tmp)
        np.add(tmp, 1, out=tmp)
        np.multiply(x, tmp, out=out)
        np.multiply(out, 0.5, out=out)

    def np_softmax(x=x, out=out):
        m = x.max(axis=1, keepdims=True)
        np.subtract(x, m, out=out)
        np.exp(out, out=out)
        np.divide(out, out.sum(axis=1, keepdims=True), out=out)

    def np_log_softmax(x=x, out=out):
        np.subtract(x, x.max(axis=1, keepdims=True), out=out)
        np.subtract(out, np.log(np.exp(out).sum(axis=1, keepdims=True)), out=out)

    def np_layer_norm(x=x, out=out, w=w, b=b):
        m = x.mean(axis=1, keepdims=True)
        np.subtract(x, m, out=out)
        v = np.mean(out * out, axis=1, keepdims=True)
        np.divide(out, np.sqrt(v + 1e-5), out=out)
        np.multiply(out, w, out=out)
        np.add(out, b, out=out)

    cases = {
        "exp": (
            lambda: ops.exp(x, out=out),
            lambda: np.exp(x, out=out),
            lambda: torch.exp(tx, out=to),
        ),
        "tanh": (
            lambda: ops.tanh(x, out=out),
            lambda: np.tanh(x, out=out),
            lambda: torch.tanh(tx, out=to),
        ),
        "sigmoid": (
            lambda: ops.sigmoid(x, out=out),
            np_sigmoid,
            lambda: torch.sigmoid(tx, out=to),
        ),
        "gelu": (
            lambda: ops.gelu(x, out=out),
            np_gelu,
            lambda: to.copy_(torch.nn.functional.gelu(tx)),
        ),
        "softmax": (
            lambda: ops.softmax(x, out=out),
            np_softmax,
            lambda: torch.softmax(tx, dim=-1, out=to) if hasattr(torch, "softmax") else None,
        ),
        "log_softmax": (
            lambda: ops.log_softmax(x, out=out),
            np_log_softmax,
            lambda: torch.log_softmax(tx, dim=-1, out=to),
        ),
        "layer_norm": (
            lambda: ops.layer_norm(x, w, b, out=out),
            np_layer_norm,
            lambda: to.copy_(torch.nn.functional.layer_norm(tx, (1000,), tw, tb)),
        ),
    }
    poly = lib.poly32 if dt == np.float32 else lib.poly64
    px, pout = x.ctypes.data, out.ctypes.data
    two = 2 in args.threads
    for name, (f, g, t) in cases.items():
        if args.ops and name not in args.ops:
            continue
        cands = {"fw1": with_threads(1, f), "np": g}
        if two:
            cands["fw2"] = with_threads(2, f)
        if torch is not None:
            cands["torch1"] = torch_threads(1, t)
            if two:
                cands["torch2"] = torch_threads(2, t)
        load0 = loadavg()
        # settle: torch's OpenMP threads spin after a call and would take a core
        # from whichever candidate comes next
        r = interleaved_raw(cands, args.rounds, args.reps, settle=0.05)
        row = {"op": f"{name} {np.dtype(dt).name}"}
        if torch is not None:
            row["vs torch1"] = paired_ratio(r, "torch1", "fw1")
        if two:
            if torch is not None:
                row["vs torch2"] = paired_ratio(r, "torch2", "fw2")
            # 2 threads vs 1: its own run of short rounds, next to two C + OpenMP
            # loops over the same arrays (each ratio taken within a round): a
            # compute-bound polynomial (C2/C1: what a second thread can give a
            # compute-bound loop right now) and the STREAM triad as a copy
            # (out = x + 0 x: one array read, one written, an element-wise op's
            # bytes; M2/M1: what it can give a memory-bound one)
            time.sleep(0.2)
            nd = x.nbytes // 8
            sc = interleaved_raw(
                {
                    "fw1": with_threads(1, f),
                    "fw2": with_threads(2, f),
                    "C1": lambda: poly(pout, px, x.size, 1),
                    "C2": lambda: poly(pout, px, x.size, 2),
                    "M1": lambda nd=nd: lib.triad(pout, px, px, 0.0, nd, 1),
                    "M2": lambda nd=nd: lib.triad(pout, px, px, 0.0, nd, 2),
                },
                3 * args.rounds,
                args.reps,
            )
            row["fw2/fw1"] = paired_ratio(sc, "fw1", "fw2")
            row["C2/C1"] = paired_ratio(sc, "C1", "C2")
            row["M2/M1"] = paired_ratio(sc, "M1", "M2")
            # the copy's 2-thread time / the op's: 1 = at the memory bound
            row["M2/fw2"] = paired_ratio(sc, "M2", "fw2")
            # the same from each side's fastest round: the quiet-machine figure
            row["best fw2/fw1"] = min(sc["fw1"]) / min(sc["fw2"])
            row["best C2/C1"] = min(sc["C1"]) / min(sc["C2"])
            if torch is not None:
                row["torch2/torch1"] = paired_ratio(r, "torch1", "torch2")
        row["vs numpy"] = paired_ratio(r, "np", "fw2" if two else "fw1")
        row["fw1 ms"] = statistics.median(r["fw1"]) * 1e3
        row["load"] = f"{load0} -> {loadavg()}"
        row["machine"] = machine_tag()
        rows.append(row)
        print(
            "  ".join(
                f"{v:<20}" if k == "op" else f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
            ),
            flush=True,
        )


def section_compute(args):
    print("\n## compute-bound ops, 10^6 elements (softmax/layer_norm: 1000 x 1000)")
    print(machine_header())
    print("ratios > 1: forkwait faster. vs torch1/vs torch2: torch at 1/2 threads / forkwait")
    print("at 1/2 threads; vs numpy: NumPy (1 thread) / forkwait (2 threads if run, else 1);")
    print("fw2/fw1: forkwait 2 vs 1 thread, next to the same ratio of two C + OpenMP loops")
    print("over the same arrays in the same rounds (bench/_stream_triad.c): C2/C1 a")
    print("compute-bound polynomial, M2/M1 the STREAM triad as a copy; M2/fw2: the copy's")
    print("2-thread time / forkwait's (1: at the memory bound); torch2/torch1: torch's own")
    rng = np.random.default_rng(0)
    rows = []
    lib = _c_peers()
    for dt in (np.float32, np.float64):
        _compute_dtype(dt, rng, args, rows, lib)
    keys = ["vs torch1", "vs torch2", "fw2/fw1", "C2/C1", "M2/M1", "M2/fw2", "best fw2/fw1",
            "best C2/C1", "torch2/torch1", "vs numpy"]
    means = [f"{k} {geomean([r[k] for r in rows]):.2f}" for k in keys if rows and k in rows[0]]
    print("geomean  " + "  ".join(means) + f"  {machine_tag()}")
    print()


def _c_peers():
    src = os.path.join(HERE, "_stream_triad.c")
    so = os.path.join(tempfile.gettempdir(), f"fw_triad_{os.getuid()}.so")
    subprocess.run(
        ["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", src, "-o", so], check=True
    )
    lib = ctypes.CDLL(so)
    p = ctypes.c_void_p
    lib.triad.argtypes = [p, p, p, ctypes.c_double, ctypes.c_ssize_t, ctypes.c_int]
    lib.csum.argtypes = [p, ctypes.c_ssize_t, ctypes.c_int]
    lib.csum.restype = ctypes.c_double
    for f in (lib.poly64, lib.poly32):
        f.argtypes = [p, p, ctypes.c_ssize_t, ctypes.c_int]
    return lib


def section_memory(args):
    print("\n## memory-bound ops, 10^7 float64 elements: bandwidth vs a STREAM triad")
    print(machine_header())
    print("(bytes counted as STREAM does: 3 arrays for add/mul/triad, 2 for exp/tanh, 1 for")
    print(" sum/max; C sum: a plain C + OpenMP simd reduction, the read-only ceiling; x2/x1:")
    print(" the 2-thread speed-up, from the medians)")
    n = 10_000_000
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(n) for _ in range(3))
    lib = _c_peers()
    pa, pb, pc = (arr.ctypes.data for arr in (a, b, c))
    nbytes = {"triad": 24, "C sum": 8, "add": 24, "mul": 24, "exp": 16, "tanh": 16, "sum": 8,
              "max": 8, "np.add": 24, "np.sum": 8}
    med = {}
    for nt in (1, 2):
        load0 = loadavg()
        cands = {
            "triad": lambda nt=nt: lib.triad(pa, pb, pc, 3.0, n, nt),
            "C sum": lambda nt=nt: lib.csum(pb, n, nt),
            "add": with_threads(nt, lambda: ops.add(b, c, out=a)),
            "mul": with_threads(nt, lambda: ops.mul(b, c, out=a)),
            "exp": with_threads(nt, lambda: ops.exp(b, out=a)),
            "tanh": with_threads(nt, lambda: ops.tanh(b, out=a)),
            "sum": with_threads(nt, lambda: ops.sum(b)),
            "max": with_threads(nt, lambda: ops.max(b)),
            "np.add": lambda: np.add(b, c, out=a),
            "np.sum": lambda: np.sum(b),
        }
        t = interleaved_raw(cands, args.rounds, max(1, args.reps // 4))
        med[nt] = {k: statistics.median(v) for k, v in t.items()}
        bw = {k: nbytes[k] * n / med[nt][k] / 1e9 for k in t}
        print(f"threads={nt}: " + "  ".join(f"{k} {bw[k]:.1f} GB/s" for k in bw))
        # fraction of the triad's bandwidth, from each round's pair of times
        frac = {
            k: paired_ratio(t, "triad", k) * nbytes[k] / nbytes["triad"]
            for k in ("add", "mul", "exp", "tanh", "sum", "max")
        }
        print(
            "  fraction of triad: " + "  ".join(f"{k} {v:.2f}" for k, v in frac.items())
            + f"   sum / C sum {paired_ratio(t, 'C sum', 'sum'):.2f}"
            + f"  max / C sum {paired_ratio(t, 'C sum', 'max'):.2f}"
            + f"  load {load0} -> {loadavg()}  {machine_tag()}",
            flush=True,
        )
    print(
        "x2/x1: "
        + "  ".join(f"{k} {med[1][k] / med[2][k]:.2f}" for k in med[1] if not k.startswith("np"))
        + f"  {machine_tag()}",
        flush=True,
    )


def section_small(args):
    print("\n## small arrays, 10^3 float64 elements: forkwait call / NumPy call")
    x = np.random.default_rng(2).uniform(0.1, 2, 1000)
    y = x.copy()
    x32 = x.astype(np.float32)
    cases = {
        "add": (lambda: ops.add(x, y), lambda: np.add(x, y)),
        "mul": (lambda: ops.mul(x, y), lambda: np.multiply(x, y)),
        "add scalar": (lambda: ops.add(x, 2.0), lambda: np.add(x, 2.0)),
        "exp": (lambda: ops.exp(x), lambda: np.exp(x)),
        "exp f32": (lambda: ops.exp(x32), lambda: np.exp(x32)),
        "tanh": (lambda: ops.tanh(x), lambda: np.tanh(x)),
        "sum": (lambda: ops.sum(x), lambda: np.sum(x)),
        "max": (lambda: ops.max(x), lambda: np.max(x)),
        "sqrt": (lambda: ops.sqrt(x), lambda: np.sqrt(x)),
    }
    for name, (f, g) in cases.items():
        r = interleaved({"fw": f, "np": g}, args.rounds, args.reps * 200)
        print(
            f"{name:<11} fw {r['fw'] * 1e6:6.2f} us  numpy {r['np'] * 1e6:6.2f} us  "
            f"ratio {r['fw'] / r['np']:.2f}  {machine_tag()}",
            flush=True,
        )


MATMUL_SIZES = (64, 128, 256, 512, 1024)


@functools.cache
def _cpu() -> dict:
    m = {"model": "?", "fms": "?", "cpu_isa": "?", "l2": "?", "l3": "?"}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0].splitlines()
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first)}
        m["model"] = " ".join(info.get("model name", "?").split())
        m["fms"] = "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping"))
        flags = set(info.get("flags", "").split())
        want = ("avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_fp16",
                "amx_tile")
        m["cpu_isa"] = ",".join(f for f in want if f in flags) or "none of avx2/avx512"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("L2 cache", "L3 cache"):
                m["l2" if k.strip() == "L2 cache" else "l3"] = " ".join(v.split())
    return m


def machine() -> dict:
    """What produced a figure: the CPU (model, family/model/stepping, its
    vector extensions, caches), forkwait's dispatched variant and the
    extensions it was compiled for, and the ISA torch's kernels dispatch to."""
    from forkwait._native import _dispatch

    m = dict(_cpu())
    m["variant"] = _dispatch.variant()
    m["variant_isa"] = _dispatch.variant_isa()
    m["torch_isa"] = "absent"
    if torch is not None:
        isa = torch.backends.cpu.get_cpu_capability()
        mkl = os.environ.get("MKL_ENABLE_INSTRUCTIONS")
        m["torch_isa"] = isa + (f", MKL_ENABLE_INSTRUCTIONS={mkl}" if mkl else "")
    return m


def machine_header() -> str:
    m = machine()
    return (
        f"# cpu: {m['model']} (family/model/stepping {m['fms']}; {m['cpu_isa']}), "
        f"L2 {m['l2']}, L3 {m['l3']}\n"
        f"# forkwait variant: {m['variant']} (compiled for: {m['variant_isa']}); "
        f"torch kernels: {m['torch_isa']}"
    )


def machine_tag() -> str:
    """The same, short, for every row: figures from different machines or
    variants never get mixed."""
    m = machine()
    short = m["model"].replace("(R)", "").replace("(TM)", "").replace(" Processor", "")
    return f"[{short} {m['fms']} | fw {m['variant']} | torch {m['torch_isa']}]"


def _matmul_reps(size, dt):
    """Calls per turn: about 20 ms of work (at 1 thread), at least one."""
    rate = 30e9 if np.dtype(dt) == np.float32 else 15e9  # flop/s, 1 thread, here
    return max(1, int(0.02 / (2 * size**3 / rate)))


def _matmul_threads(size, dt, nt, a, b, out, args):
    # the thread counts are set once around the rounds (not per call: a
    # `with fw.num_threads(n)` per call costs microseconds, which show at 64)
    with threads(nt):
        cands = {
            "fw": lambda: ops.matmul(a, b, out=out),
            "np": lambda: np.matmul(a, b, out=out),
        }
        if torch is not None:
            ta, tb, to = (torch.from_numpy(v) for v in (a, b, out))
            cands["torch"] = lambda: torch.matmul(ta, tb, out=to)
        # NumPy's OpenBLAS threads spin for ~0.1 s after its call: settle first
        t = interleaved_raw(
            cands, args.rounds, _matmul_reps(size, dt), settle=0.3 if nt > 1 else 0.0
        )
    line = (
        f"{size:>5} {np.dtype(dt).name} threads={nt}: fw {statistics.median(t['fw']) * 1e3:8.3f} ms"
        f"  np {statistics.median(t['np']) * 1e3:8.3f} ms  np/fw {paired_ratio(t, 'np', 'fw'):.2f}"
    )
    if torch is not None:
        line += f"  torch/fw {paired_ratio(t, 'torch', 'fw'):.2f}"
    print(f"{line}  load {loadavg()}  {machine_tag()}", flush=True)


# NumPy "cold": a fresh process whose NumPy OpenBLAS is limited to 1 thread
# before it ever ran a GEMM (forkwait.ops warms only SciPy's copy, which it
# calls); forkwait and NumPy interleaved in that process, as in the warm runs.
MATMUL_COLD_CODE = r"""
import sys, statistics
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
import numpy as np
from threadpoolctl import threadpool_limits
lim = threadpool_limits(1, user_api="blas")  # before NumPy's BLAS ever ran
import forkwait as fw
from forkwait import ops
from forkwait._native import _blas
import ops_ratios as b
if {blas!r}:
    _blas.select_blas(*{blas!r}.split(","))
fw.set_num_threads(1)
rng = np.random.default_rng(3)
for size in {sizes!r}:
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((size, size)).astype(dt)
        y = rng.standard_normal((size, size)).astype(dt)
        out = np.empty((size, size), dt)
        t = b.interleaved_raw({{"fw": lambda: ops.matmul(x, y, out=out),
                               "np": lambda: np.matmul(x, y, out=out)}},
                              {rounds}, b._matmul_reps(size, dt))
        print(f"{{size:>5}} {{np.dtype(dt).name}} threads=1: "
              f"fw {{statistics.median(t['fw']) * 1e3:8.3f}} ms  "
              f"np(cold) {{statistics.median(t['np']) * 1e3:8.3f}} ms  "
              f"np(cold)/fw {{b.paired_ratio(t, 'np', 'fw'):.2f}}  {{b.machine_tag()}}",
              flush=True)
"""


def _matmul_cold(args):
    print("\n# NumPy cold (fresh process, its OpenBLAS limited to 1 before any GEMM):")
    code = MATMUL_COLD_CODE.format(
        root=os.path.dirname(HERE), here=HERE, sizes=MATMUL_SIZES, rounds=args.rounds,
        blas=args.matmul_blas,
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    print(r.stdout, end="", flush=True)
    if r.returncode:
        print(r.stderr)


def _concurrent_case(xs, outs, reps, pool, args):
    """(fw at 1 intra-op thread, fw at 2, NumPy): sequential time / concurrent time."""

    def seq():
        ops.matmul(xs[0], xs[1], out=outs[0])
        ops.matmul(xs[2], xs[3], out=outs[1])

    def forked():
        fw.wait_all([
            fw.fork(ops.matmul, xs[0], xs[1], out=outs[0]),
            fw.fork(ops.matmul, xs[2], xs[3], out=outs[1]),
        ])

    def npseq():
        np.matmul(xs[0], xs[1], out=outs[0])
        np.matmul(xs[2], xs[3], out=outs[1])

    def npthreads():
        f1 = pool.submit(np.matmul, xs[0], xs[1], out=outs[0])
        f2 = pool.submit(np.matmul, xs[2], xs[3], out=outs[1])
        f1.result()
        f2.result()

    res = []
    for intra in (1, 2):
        fw.set_num_threads(intra)
        t = interleaved_raw({"seq": seq, "fork": forked}, args.rounds, reps)
        res.append(paired_ratio(t, "seq", "fork"))
    with threadpool_limits(1, user_api="blas"):
        t = interleaved_raw({"seq": npseq, "par": npthreads}, args.rounds, reps)
    res.append(paired_ratio(t, "seq", "par"))
    return res


def _matmul_concurrent(args, rng):
    """Two forked ops.matmul calls vs the same two calls one after the other,
    at 1 intra-op thread (each caller one core) and at 2; NumPy's peer: the
    same two np.matmul calls from two threads (BLAS at 1)."""
    import concurrent.futures

    print(
        "\n# concurrent callers: time of the two calls one after the other / "
        "time of the two at once (2 forked branches; NumPy: 2 threads, BLAS at 1)"
    )
    fw.set_num_interop_threads(2)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    old = fw.get_num_threads()
    # the pool's first fraction of a second: measured here, the second of two
    # forked 128 x 128 float32 matmuls was picked up by the worker only after the
    # first ended (both ran on the main thread) in 249 of the first 300 pairs,
    # in 14-54 of 300 later: fork pairs untimed first
    fw.set_num_threads(1)
    w = [np.ones((128, 128), np.float32) for _ in range(2)]
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        fw.wait_all([fw.fork(ops.matmul, w[0], w[1]), fw.fork(ops.matmul, w[1], w[0])])
    try:
        for size in _sizes(args):
            if size == 64:
                continue
            for dt in (np.float32, np.float64):
                xs = [rng.standard_normal((size, size)).astype(dt) for _ in range(4)]
                outs = [np.empty((size, size), dt) for _ in range(2)]
                reps = max(1, _matmul_reps(size, dt) // 2)
                f1, f2, npr = _concurrent_case(xs, outs, reps, pool, args)
                print(
                    f"{size:>5} {np.dtype(dt).name}: fw intra=1 {f1:.2f}  fw intra=2 {f2:.2f}  "
                    f"numpy {npr:.2f}  {machine_tag()}",
                    flush=True,
                )
    finally:
        fw.set_num_threads(old)
        pool.shutdown()


def _sizes(args):
    if not args.matmul_sizes:
        return MATMUL_SIZES
    return tuple(int(v) for v in args.matmul_sizes.split(","))


def _matmul_switches(args):
    if args.matmul_blas:
        native_blas.select_blas(*args.matmul_blas.split(","))
    if args.matmul_wide is not None:
        native_matmul.set_wide(args.matmul_wide)
    if args.matmul_team_min is not None:
        native_matmul.set_wide_team_min(args.matmul_team_min, args.matmul_team_min)


def _team_min():
    old = native_matmul.set_wide_team_min(0, 0)
    native_matmul.set_wide_team_min(*old)
    return old


def section_matmul(args):
    print("\n## matmul: NumPy's BLAS (same thread count) time / forkwait time")
    print(machine_header())
    _matmul_switches(args)
    parts = args.matmul_parts.split(",")
    print(f"# switches: blas={args.matmul_blas} wide={args.matmul_wide} parts={parts} "
          f"team-min={_team_min()}")
    print(f"# BLAS behind ops.matmul: {native_blas.blas_info()[:2]}")
    print("(NumPy 'warm': its OpenBLAS has run multi-threaded in this process before the")
    print(" limit, as the compute section's peers do; 'cold' below: a fresh process)")
    x = np.ones((256, 256), np.float32)
    with threadpool_limits(2, user_api="blas"):
        np.matmul(x, x)  # warm NumPy's OpenBLAS (a multi-threaded GEMM)
    rng = np.random.default_rng(3)
    for nt in (1, 2):
        if str(nt) not in parts:
            continue
        for size in _sizes(args):
            for dt in (np.float32, np.float64):
                a = rng.standard_normal((size, size)).astype(dt)
                b = rng.standard_normal((size, size)).astype(dt)
                out = np.empty((size, size), dt)
                _matmul_threads(size, dt, nt, a, b, out, args)
        print(f"# load {loadavg()}", flush=True)
    if "cold" in parts:
        _matmul_cold(args)
    if "concurrent" in parts:
        _matmul_concurrent(args, rng)
    print(f"# load {loadavg()}", flush=True)


def _branch_work(x, out, n):
    for _ in range(n):
        ops.exp(x, out=out)
        ops.softmax(x, out=out)
        ops.add(x, out, out=out)
        ops.sum(out)


def two_branches(mode: str, n: int = 6):
    """Two forked branches of kernels; mode: shared, fixed, split (1 + 1)."""
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((1000, 1000)) for _ in range(2)]
    outs = [np.empty_like(x) for x in xs]
    fw.set_num_interop_threads(2)
    fw.set_num_threads(2)

    def branch(i):
        if mode == "split":
            with fw.num_threads(1):
                _branch_work(xs[i], outs[i], n)
        else:
            _branch_work(xs[i], outs[i], n)

    def run():
        fw.set_intra_op_mode("fixed" if mode == "fixed" else "shared")
        futs = [fw.fork(branch, i) for i in range(2)]
        fw.wait_all(futs)
        fw.set_intra_op_mode("shared")

    return run


def section_branches(args):
    print("\n## two forked branches, set_num_interop_threads(2), set_num_threads(2)")
    cands = {m: two_branches(m) for m in ("shared", "fixed", "split")}
    t = interleaved_raw(cands, 2 * args.rounds, 2)
    print("  ".join(f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in t.items()))
    print(
        f"shared/split {paired_ratio(t, 'shared', 'split'):.3f} (target <= 1.05)  "
        f"fixed/shared {paired_ratio(t, 'fixed', 'shared'):.3f} (target > 1)  {machine_tag()}",
        flush=True,
    )


WAIT_CODE = r"""
import sys, time, statistics
sys.path.insert(0, {root!r})
import numpy as np
import forkwait as fw
from forkwait import ops
sys.path.insert(0, {here!r})
import ops_ratios as b
mode = sys.argv[1]
run = b.two_branches(mode)
x = np.random.default_rng(0).standard_normal((1000, 1000)); out = np.empty_like(x)
def single():
    with fw.num_threads(2):
        for _ in range(6):
            ops.exp(x, out=out); ops.softmax(x, out=out)
def mixed():
    # intra-op kernels interleaved with short Python/GIL work in other branches
    def py_branch():
        s = 0
        for i in range(200000):
            s += i
        return s
    futs = [fw.fork(b._branch_work, x, out, 4), fw.fork(py_branch)]
    fw.wait_all(futs)
run(); single(); mixed()
res = {{}}
for name, fn in (("branches", run), ("single", single), ("mixed", mixed)):
    ts = []
    for _ in range({rounds}):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    res[name] = statistics.median(ts)
print(res)
"""


def section_waitpolicy(args):
    print("\n## OMP_WAIT_POLICY / GOMP_SPINCOUNT (fresh process each; median ms)")
    root = os.path.dirname(HERE)
    code = WAIT_CODE.format(root=root, here=HERE, rounds=args.rounds)
    # forkwait sets OMP_WAIT_POLICY=passive when neither variable is set, so
    # libgomp's own default is spelled out: GOMP_SPINCOUNT=300000
    settings = [
        ("forkwait (passive)", {}),
        ("libgomp default", {"GOMP_SPINCOUNT": "300000"}),
        ("active", {"OMP_WAIT_POLICY": "active"}),
        ("spin 10k", {"GOMP_SPINCOUNT": "10000"}),
        ("spin 30k", {"GOMP_SPINCOUNT": "30000"}),
    ]
    for load in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load else None
        try:
            for mode in ("shared", "fixed"):
                for label, env in settings:
                    e = dict(os.environ)
                    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
                        e.pop(k, None)
                    e.update(env)
                    r = subprocess.run(
                        [sys.executable, "-c", code, mode],
                        env=e,
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )
                    if r.returncode:
                        print(r.stderr)
                        continue
                    res = eval(r.stdout.strip().splitlines()[-1])
                    print(
                        f"busy-process={int(load)} mode={mode:<6} {label:<18} "
                        + "  ".join(f"{k} {v * 1e3:.1f}" for k, v in res.items()),
                        f"(load {loadavg()})",
                        flush=True,
                    )
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()


def _grain_ratio(name, n, rng, args):
    x = rng.standard_normal(n)
    out = np.empty_like(x)
    f = {
        "add": lambda: ops.add(x, x, out=out),
        "exp": lambda: ops.exp(x, out=out),
        "sum": lambda: ops.sum(x),
        "softmax": lambda: ops.softmax(x.reshape(-1, 64), out=out.reshape(-1, 64)),
    }[name]
    grains = [
        (ew, "GRAIN_CHEAP"), (ew, "GRAIN_MATH"), (red, "GRAIN_REDUCE"), (rows, "GRAIN_ROWS")
    ]
    saved = [getattr(m, g) for m, g in grains]
    for m, g in grains:
        setattr(m, g, 1)
    r = interleaved({"1": with_threads(1, f), "2": with_threads(2, f)}, args.rounds, args.reps * 20)
    for (m, g), v in zip(grains, saved, strict=True):
        setattr(m, g, v)
    return r["1"] / r["2"]


def section_grain(args):
    print("\n## grain: 1-thread time / 2-thread time by size (serial below the crossover)")
    rng = np.random.default_rng(5)
    for name in ("add", "exp", "sum", "softmax"):
        line = f"{name:<8}"
        for n in (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18):
            line += f"  {n}: {_grain_ratio(name, n, rng, args):.2f}"
        print(line, flush=True)


def section_accuracy(args):
    """Worst ulp of every unary op over its whole range, forkwait and torch on the
    same inputs (tests/test_ops_accuracy.py's inputs and references)."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from _ops_helpers import accuracy_reference, all_float32, float64_samples, ulp_error

    print("\n## accuracy: worst error in ulp over the whole range (docs/ops.md)")
    names = ["exp", "log", "sqrt", "tanh", "sigmoid", "gelu", "neg", "abs", "relu"]
    tfn = {"gelu": "nn.functional.gelu"}
    for dt in (np.float32, np.float64):
        x = all_float32() if dt == np.float32 else float64_samples()
        for name in names:
            xx = x
            if dt == np.float64 and name == "gelu":  # mpmath reference: fewer points
                xx = np.linspace(-39.5, 12, 2000)
            ref = accuracy_reference(name, xx)
            with np.errstate(all="ignore"):
                err, i, _ = ulp_error(getattr(ops, name)(xx), ref, dt)
            line = f"{name:<8} {np.dtype(dt).name}: forkwait {err:.2f} (x={xx[i]!r})"
            if torch is not None:
                fn = torch
                for part in tfn.get(name, name).split("."):
                    fn = getattr(fn, part)
                with np.errstate(all="ignore"):
                    et, it, _ = ulp_error(fn(torch.from_numpy(xx)).numpy(), ref, dt)
                line += f"  torch {et:.3g} (x={xx[it]!r})"
            print(line, flush=True)


SECTIONS = {
    "compute": section_compute,
    "accuracy": section_accuracy,
    "memory": section_memory,
    "small": section_small,
    "matmul": section_matmul,
    "branches": section_branches,
    "waitpolicy": section_waitpolicy,
    "grain": section_grain,
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", default=list(SECTIONS))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--matmul-blas", default=None,
                   help="matmul: the OpenBLAS copies ops.matmul calls, comma-separated, of "
                        "numpy, openblas64, scipy (numpy: NumPy's only; numpy,scipy: the "
                        "second copy SciPy's; default: forkwait's choice)")
    p.add_argument("--matmul-wide", type=int, default=None,
                   help="matmul: dtypes that may take a wide call (bit 0 float32, bit 1 "
                        "float64; 0: always split over the team; default: forkwait's)")
    p.add_argument("--matmul-team-min", type=int, default=None, metavar="MADDS",
                   help="matmul: the multiply-adds from which a team's product is one GEMM "
                        "on the team, both dtypes (default: forkwait's, per dtype)")
    p.add_argument("--matmul-sizes", default=None,
                   help="matmul: comma-separated sizes (default 64,128,256,512,1024; "
                        "the concurrent part skips 64)")
    p.add_argument("--threads", default="1,2",
                   help="compute: the thread counts, 1 or 1,2 (2 also runs the 2-vs-1 "
                        "scaling next to the C loops); take 2-thread figures only on a quiet "
                        "machine")
    p.add_argument("--ops", default=None,
                   help="compute: only these ops, comma-separated (default: all)")
    p.add_argument("--wait-quiet", type=float, default=None, metavar="LOAD",
                   help="first wait (up to 30 minutes) until the 1-minute load average is "
                        "below LOAD; the load is printed before and after every row")
    p.add_argument("--matmul-parts", default="1,2,cold,concurrent",
                   help="matmul: which parts to run (1 and 2 threads, cold, concurrent)")
    args = p.parse_args(argv)
    args.threads = [int(v) for v in args.threads.split(",")]
    args.ops = args.ops.split(",") if args.ops else None
    if args.wait_quiet is not None:
        t_end = time.monotonic() + 1800
        while float(loadavg().split()[0]) >= args.wait_quiet and time.monotonic() < t_end:
            time.sleep(15)
    print(f"# forkwait.ops ratios; cpus={os.cpu_count()} load(before)={loadavg()}")
    print(machine_header())
    print(
        f"# numpy {np.__version__}, torch {torch.__version__ if torch else 'absent'}, "
        f"numexpr {numexpr.__version__ if numexpr else 'absent'}"
    )
    for s in args.sections:
        SECTIONS[s](args)
    print(f"\n# load(after)={loadavg()}")


if __name__ == "__main__":
    main()
