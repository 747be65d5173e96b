"""The scheduler's figures (issue 9), each next to a peer measured in the same run.

    python bench/sched_ratios.py [--rounds 9] [--json out.json] [--only NAME ...]

Sections: trip (fork+wait round trip vs 10 bare calls and ThreadPoolExecutor),
many (100k forks + wait_all), outstanding (per-fork cost at 10^3 vs 10^6
outstanding, next to allocating plain objects), handoff (fork to a sleeping
worker until the task runs, vs a C pthread condvar wake, bench/_condvar_wake.c),
fib (nested fib by fork/wait: overhead per fork with pure-Python leaves, and
speed-up with GIL-releasing leaves), producers (4 threads forking at once vs
one), locked (a wait holding a lock with a pool of one thread), waitall
(wait_all over 10^5 futures, all done or all run by the waiting thread).

Every ratio is the median over rounds of a per-round ratio; peers of a row run
interleaved in the same process. Prints a Markdown table with the load and CPU.
"""

from __future__ import annotations

import _thread
import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import interleaved, loadavg, median_ratio  # noqa: E402

import forkwait as fw  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def noop():
    return None


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    keep = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("Model name", "L2 cache", "L3 cache"):
            keep[k.strip()] = " ".join(v.split())
    return ", ".join(f"{k} {v}" for k, v in keep.items())


# ------------------------------------------------------------------ sections


def trip(rounds):
    n = 20000

    def fw_trip():
        for _ in range(n):
            fw.wait(fw.fork(noop))

    def bare10():
        for _ in range(n):
            noop(); noop(); noop(); noop(); noop()  # noqa: E702
            noop(); noop(); noop(); noop(); noop()  # noqa: E702

    with ThreadPoolExecutor(2) as ex:
        def tpe():
            for _ in range(n // 10):
                ex.submit(noop).result()

        t = interleaved({"fw": fw_trip, "bare10": bare10, "tpe": tpe}, rounds)
    us = statistics.median(t["fw"]) / n * 1e6
    bare = statistics.median(t["bare10"]) / n * 1e6
    tpe_us = statistics.median(t["tpe"]) / (n // 10) * 1e6
    return [(
        "fork+wait round trip of a no-op (target <= 1.0 us, about 10 bare calls)",
        f"{us:.2f} us; / 10 bare calls {median_ratio(t['fw'], t['bare10']):.2f}x "
        f"({bare:.2f} us); ThreadPoolExecutor {tpe_us:.1f} us",
    )]


def many(rounds):
    n = 100_000

    def fw_many():
        fw.wait_all([fw.fork(noop) for _ in range(n)])

    with ThreadPoolExecutor(2) as ex:
        def tpe_many():
            for f in [ex.submit(noop) for _ in range(n // 10)]:
                f.result()

        t = interleaved({"fw": fw_many, "tpe": tpe_many}, max(3, rounds // 2))
    us = statistics.median(t["fw"]) / n * 1e6
    tpe_us = statistics.median(t["tpe"]) / (n // 10) * 1e6
    return [(
        "100k forks then wait_all, per task (target <= 1.0 us)",
        f"{us:.2f} us (ThreadPoolExecutor {tpe_us:.1f} us: {tpe_us / us:.0f}x)",
    )]


def outstanding(rounds):
    """Cost of fork alone with 10^3 and with 10^6 futures outstanding."""
    rows = []
    small, big = 1000, 1_000_000
    results = {"small": [], "big": [], "alloc": [], "touch": []}

    class Plain:
        __slots__ = ("a", "b", "c", "d")

    import contextvars

    import numpy as np

    probe = fw.fork(noop)
    fw.wait(probe)
    # one future, its captured context, its slot in the list
    per_fork_bytes = sys.getsizeof(probe) + sys.getsizeof(contextvars.copy_context()) + 8
    del probe
    gate = threading.Event()
    saved = fw.get_num_interop_threads()
    fw.set_num_interop_threads(1)
    blocker = fw.fork(gate.wait, 600)  # keep the pool busy: fork cost alone
    while not blocker.running():
        time.sleep(0.001)
    try:
        for _ in range(max(3, rounds // 3)):
            for name, n in (("small", small), ("big", big)):
                t0 = time.perf_counter()
                futs = [fw.fork(noop) for _ in range(n)]
                results[name].append((time.perf_counter() - t0) / n)
                for f in futs:
                    f.cancel()
                del futs
            t0 = time.perf_counter()
            objs = [Plain() for _ in range(big)]
            results["alloc"].append((time.perf_counter() - t0) / big)
            del objs
            # Fresh memory of the size 10^6 queued futures take, written once:
            # the page faults that the big case pays and the small one does not
            # (its 10^3 futures reuse memory that is already mapped).
            t0 = time.perf_counter()
            pages = np.ones(per_fork_bytes * big // 8)
            results["touch"].append((time.perf_counter() - t0) / big)
            del pages
        gc_was = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            futs = [fw.fork(noop) for _ in range(big)]
            nogc = (time.perf_counter() - t0) / big
            for f in futs:
                f.cancel()
            del futs
        finally:
            if gc_was:
                gc.enable()
    finally:
        gate.set()
        fw.wait(blocker)
        fw.set_num_interop_threads(saved)
    s = statistics.median(results["small"]) * 1e6
    b = statistics.median(results["big"]) * 1e6
    a = statistics.median(results["alloc"]) * 1e6
    touch = statistics.median(results["touch"]) * 1e6
    rows.append((
        "fork alone, 10^6 outstanding / 10^3 outstanding (target <= 1.5x)",
        f"{b / s:.2f}x ({s:.2f} us -> {b:.2f} us; the same 10^6 with the GC off "
        f"{nogc * 1e6:.2f} us; allocating 10^6 plain objects {a:.2f} us each; writing "
        f"fresh memory of 10^6 futures' size ({per_fork_bytes} B each) {touch:.2f} us each)",
    ))
    return rows


def _condvar_lib():
    src = os.path.join(HERE, "_condvar_wake.c")
    out = os.path.join(tempfile.mkdtemp(prefix="fw-bench-"), "condvar.so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-pthread", src, "-o", out], check=True)
    lib = ctypes.CDLL(out)
    lib.condvar_wake.argtypes = [ctypes.c_int, ctypes.c_double, ctypes.POINTER(ctypes.c_double)]
    return lib


def handoff(rounds):
    """Fork from the main thread to a sleeping worker, until the task's first
    line runs. The main thread then blocks on a plain lock (the cheapest block
    Python has: a threading.Event's Condition adds ~15 us of cold Python on
    this machine before the thread sleeps, and the woken worker usually runs
    on the forking thread's CPU, once that thread sleeps). Peers, interleaved:
    the C condvar wake, and the same hand-off between two plain Python
    threads (one releases a lock the other sleeps on), the floor for any
    Python runtime."""
    lib = _condvar_lib()
    n = 200
    idle_s = 0.003
    now = fw._native.pool._now
    fw_lat, py_lat, c_lat = [], [], []
    go, back = _thread.allocate_lock(), _thread.allocate_lock()
    py_box = []
    stop = []

    def py_sleeper():
        while True:
            go.acquire()
            if stop:
                return
            py_box.append(now())
            back.release()

    go.acquire()
    back.acquire()
    th = threading.Thread(target=py_sleeper, daemon=True)
    th.start()
    for _ in range(max(3, rounds // 3)):
        for _ in range(n):
            time.sleep(idle_s)  # the workers are asleep by now
            box = []
            ran = _thread.allocate_lock()
            ran.acquire()

            def first_line(box=box, ran=ran):
                box.append(now())
                ran.release()

            t0 = now()
            fw.fork(first_line)
            ran.acquire()
            fw_lat.append(box[0] - t0)
            time.sleep(idle_s)  # the plain thread is asleep by now
            t0 = now()
            go.release()
            back.acquire()
            py_lat.append(py_box.pop() - t0)
        arr = (ctypes.c_double * n)()
        if lib.condvar_wake(n, idle_s * 1e3, arr) == 0:
            c_lat.extend(arr)
    stop.append(1)
    go.release()
    th.join()
    f = statistics.median(fw_lat) * 1e6
    p = statistics.median(py_lat) * 1e6
    c = statistics.median(c_lat) * 1e6
    return [(
        "hand-off to a sleeping worker, fork to the task's first line / C condvar wake "
        "(target <= 1.5x)",
        f"{f / c:.2f}x ({f:.1f} us vs {c:.1f} us, medians of {len(fw_lat)} each); "
        f"/ the same hand-off between two plain Python threads {f / p:.2f}x ({p:.1f} us)",
    )]


def _lazy_fork_module():
    """bench/_lazy_fork.c built against this Python: the floors of a fork/wait."""
    import importlib.machinery
    import importlib.util
    import sysconfig

    src = os.path.join(HERE, "_lazy_fork.c")
    out = os.path.join(tempfile.mkdtemp(prefix="fw-bench-"),
                       "_lazy_fork" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-pthread",
                    "-I" + sysconfig.get_paths()["include"], src, "-o", out], check=True)
    loader = importlib.machinery.ExtensionFileLoader("_lazy_fork", out)
    spec = importlib.util.spec_from_file_location("_lazy_fork", out, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _fib_with(fork, wait):
    """Nested fib by `fork` and `wait`: forkwait's pair and the floors of
    _lazy_fork.c, the same code for all (the pair in closure cells)."""
    def f(n):
        if n < 2:
            return n
        a = fork(f, n - 1)
        b = fork(f, n - 2)
        return wait(a) + wait(b)
    return f


def fib_serial(n):
    return n if n < 2 else fib_serial(n - 1) + fib_serial(n - 2)


fib_fw = _fib_with(fw.fork, fw.wait)


def _count_forks(n):
    return 0 if n < 2 else 2 + _count_forks(n - 1) + _count_forks(n - 2)


def fib(rounds):
    import numpy as np

    rows = []
    n = 22
    forks = _count_forks(n)
    peers = {"serial": lambda: fib_serial(n), "fw": lambda: fw.wait(fw.fork(fib_fw, n))}
    try:
        lz = _lazy_fork_module()
    except (OSError, subprocess.SubprocessError, ImportError) as exc:
        print(f"# fib: the floors of bench/_lazy_fork.c are left out ({exc})", file=sys.stderr)
        lz = None
    if lz is not None:
        for i in range(3):
            fn = _fib_with(getattr(lz, f"fork{i}"), getattr(lz, f"wait{i}"))
            peers[f"floor{i}"] = (lambda fn=fn: fn(n))
    t = interleaved(peers, max(3, rounds // 2))
    base = statistics.median(t["serial"])

    def over(key):
        return (statistics.median(t[key]) - base) / forks * 1e6

    floors = ""
    if lz is not None:
        floors = (f"; floors in the same rounds (bench/_lazy_fork.c): fork keeps the call and "
                  f"wait makes it {over('floor0'):.2f} us, + a contextvars copy "
                  f"{over('floor1'):.2f} us, + a locked stack {over('floor2'):.2f} us")
    rows.append((
        f"nested fib({n}) by fork/wait, pure-Python leaves: overhead per fork "
        "(target <= 0.5 us)",
        f"{over('fw'):.2f} us per fork ({forks} forks; fork/wait "
        f"{statistics.median(t['fw']) * 1e3:.0f} ms vs serial {base * 1e3:.0f} ms){floors}",
    ))
    # GIL-releasing leaves of about 100 us: forkwait's exp at one thread, the
    # array sized on this machine (the kernels' speed differs between builds).
    def leaf_time(arr, buf):
        t0 = time.perf_counter()
        for _ in range(200):
            fw.ops.exp(arr, out=buf)
        return (time.perf_counter() - t0) / 200

    with fw.num_threads(1):
        x = np.random.rand(12000)
        x = np.random.rand(max(1000, int(12000 * 100e-6 / leaf_time(x, np.empty_like(x)))))
    out = np.empty_like(x)

    def leaf():
        fw.ops.exp(x, out=out)

    with fw.num_threads(1):
        leaf_us = leaf_time(x, out) * 1e6

        def tree_serial(k):
            if k < 2:
                leaf()
                return 1
            return tree_serial(k - 1) + tree_serial(k - 2)

        def tree_fw(k):
            if k < 2:
                leaf()
                return 1
            a = fw.fork(tree_fw, k - 1)
            b = fw.fork(tree_fw, k - 2)
            return fw.wait(a) + fw.wait(b)

        out2 = np.empty_like(x)

        def manual_split(k):
            # The ideal split by hand: two plain threads, half the leaves each.
            half = n_leaves // 2

            def other():
                with fw.num_threads(1):
                    for _ in range(n_leaves - half):
                        fw.ops.exp(x, out=out2)

            th = threading.Thread(target=other)
            th.start()
            for _ in range(half):
                leaf()
            th.join()

        k = 13
        n_leaves = tree_serial(k)
        t = interleaved({"serial": lambda: tree_serial(k),
                         "fw": lambda: fw.wait(fw.fork(tree_fw, k)),
                         "manual": lambda: manual_split(k)}, rounds)
    rows.append((
        f"nested fib({k}) tree, GIL-releasing leaves of {leaf_us:.0f} us: speed-up over serial "
        f"on {os.cpu_count()} CPUs (target >= 1.9x on 2)",
        f"{median_ratio(t['serial'], t['fw']):.2f}x (two threads splitting the leaves by hand, "
        f"same rounds: {median_ratio(t['serial'], t['manual']):.2f}x)",
    ))
    return rows


def producers(rounds):
    n = 100_000
    k = 4

    def one():
        fw.wait_all([fw.fork(noop) for _ in range(n)])

    def four():
        threads = [threading.Thread(target=one) for _ in range(k)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    t = interleaved({"one": one, "four": four}, max(3, rounds // 2))
    per_one = statistics.median(t["one"]) / n * 1e6
    per_four = statistics.median(t["four"]) / (k * n) * 1e6
    return [(
        f"{k} threads forking {n // 1000}k no-ops each at once + wait_all: per-task time / one "
        "thread's (target <= 1.5x)",
        f"{per_four / per_one:.2f}x ({per_four:.2f} us vs {per_one:.2f} us)",
    )]


def locked(rounds):
    n = 20000
    lock = threading.Lock()

    def plain():
        for _ in range(n):
            fw.wait(fw.fork(noop))

    def holding():
        with lock:
            for _ in range(n):
                fw.wait(fw.fork(noop))

    saved = fw.get_num_interop_threads()
    fw.set_num_interop_threads(1)
    try:
        t = interleaved({"plain": plain, "locked": holding}, rounds)
    finally:
        fw.set_num_interop_threads(saved)
    return [(
        "round trip while holding a lock, pool of one thread / without the lock",
        f"{median_ratio(t['locked'], t['plain']):.2f}x "
        f"({statistics.median(t['locked']) / n * 1e6:.2f} us)",
    )]


def waitall(rounds):
    """wait_all over 10^5 futures, per future: all done already, and all
    unstarted (the only worker kept busy, so the waiting thread runs them).
    Peer: a list comprehension reading each future's state, the floor of any
    pass over that many objects."""
    n = 100_000
    done_t, run_t, peer_t = [], [], []
    saved = fw.get_num_interop_threads()
    fw.set_num_interop_threads(1)
    try:
        for _ in range(max(3, rounds // 2)):
            futs = [fw.fork(noop) for _ in range(n)]
            fw.wait_all(futs)
            t0 = time.perf_counter()
            fw.wait_all(futs)
            done_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            [f.done() for f in futs]  # noqa: B018
            peer_t.append(time.perf_counter() - t0)
            del futs
            gate = threading.Event()
            blocker = fw.fork(gate.wait, 600)
            while not blocker.running():
                time.sleep(0.001)
            futs = [fw.fork(noop) for _ in range(n)]
            t0 = time.perf_counter()
            fw.wait_all(futs)
            run_t.append(time.perf_counter() - t0)
            gate.set()
            fw.wait(blocker)
            del futs
    finally:
        fw.set_num_interop_threads(saved)
    d = statistics.median(done_t) / n * 1e6
    r = statistics.median(run_t) / n * 1e6
    p = statistics.median(peer_t) / n * 1e6
    return [(
        "wait_all over 10^5 futures, per future: all done / all run by the waiting thread",
        f"{d:.3f} us / {r:.3f} us (a pass calling done() on each: {p:.3f} us)",
    )]


SECTIONS = {
    "trip": trip, "many": many, "outstanding": outstanding, "handoff": handoff,
    "fib": fib, "producers": producers, "locked": locked, "waitall": waitall,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS))
    parser.add_argument("--json")
    parser.add_argument("--workers", type=int, default=None,
                        help="inter-op threads (default: forkwait's default)")
    args = parser.parse_args(argv)
    if args.workers:
        fw.set_num_interop_threads(args.workers)
    fw.set_num_threads(1)
    before = loadavg()
    rows = []
    for name in args.only or SECTIONS:
        rows += SECTIONS[name](args.rounds)
    after = loadavg()
    print(f"# scheduler: {os.cpu_count()} CPUs ({cpu_model()}), "
          f"{fw.get_num_interop_threads()} inter-op threads, {args.rounds} rounds, "
          f"loadavg before {before}, after {after}")
    print("| measurement | median |")
    print("| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "loadavg": [before, after], "cpu": cpu_model()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
