"""Pure-Python work forked on a free-threaded CPython (3.13t), against serial and a
ThreadPoolExecutor in the same run, and the pool's costs per fork.

    python bench/freethreaded.py [--rounds 7] [--json]

Run it with a free-threaded interpreter (`.venv-ft/bin/python`) for the figures
of docs/freethreading.md, and with the usual one to compare the costs. Every
figure is a median over `--rounds` interleaved rounds (each round runs every
contender once, in turn), on the machine at hand; the load and the CPU are
printed with them.

- loops: 4 pure-Python loops (about 40 ms each) forked, vs the same 4 in turn,
  vs ThreadPoolExecutor(2).map; speed-up over serial.
- fib tree: fib(28) by fork/wait, cut off where a leaf takes about 100 us of pure
  Python on this interpreter and machine (the smallest k whose fib(k) takes at
  least LEAF_US, measured first: fib(15) on the Xeon under 3.13t), vs serial fib(28);
  a ThreadPoolExecutor cannot nest (a task that waits on its own children
  deadlocks the pool once every worker waits).
- trip: fork+wait of a no-op (microseconds); tpe_trip: submit+result.
- many: 100k no-op forks then wait_all, per task; tpe_many: 100k submits then
  their results, per task.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import forkwait as fw

LOOP_N = 400_000
FIB_N = 28
LEAF_US = 90.0
CUTOFF = 14  # set by _calibrate_cutoff() before the rounds


def spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def sfib(k: int) -> int:
    return k if k < 2 else sfib(k - 1) + sfib(k - 2)


def ffib(k: int) -> int:
    if k <= CUTOFF:
        return sfib(k)
    a = fw.fork(ffib, k - 1)
    b = ffib(k - 2)
    return fw.wait(a) + b


def _calibrate_cutoff() -> int:
    """The smallest k whose serial fib(k) takes at least LEAF_US (median of 7)."""
    for k in range(10, 25):
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            sfib(k)
            ts.append(time.perf_counter() - t0)
        if statistics.median(ts) * 1e6 >= LEAF_US:
            return k
    return 24


def noop() -> None:
    return None


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def round_once(ex: ThreadPoolExecutor) -> dict[str, float]:
    r: dict[str, float] = {}
    r["loops_serial"] = timed(lambda: [spin(LOOP_N) for _ in range(4)])
    r["loops_fork"] = timed(lambda: fw.wait_all([fw.fork(spin, LOOP_N) for _ in range(4)]))
    r["loops_tpe"] = timed(lambda: list(ex.map(spin, [LOOP_N] * 4)))
    r["fib_serial"] = timed(lambda: sfib(FIB_N))
    r["fib_fork"] = timed(lambda: ffib(FIB_N))
    n = 20_000
    r["trip_us"] = timed(lambda: [fw.wait(fw.fork(noop)) for _ in range(n)]) / n * 1e6
    r["tpe_trip_us"] = timed(lambda: [ex.submit(noop).result() for _ in range(n)]) / n * 1e6
    m = 100_000

    def many():
        fw.wait_all([fw.fork(noop) for _ in range(m)])

    def tpe_many():
        for f in [ex.submit(noop) for _ in range(m)]:
            f.result()

    r["many_us"] = timed(many) / m * 1e6
    r["tpe_many_us"] = timed(tpe_many) / m * 1e6
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global CUTOFF
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    CUTOFF = _calibrate_cutoff()
    fw.set_num_interop_threads(2)
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    with ThreadPoolExecutor(2) as ex:
        round_once(ex)  # warm
        rows = [round_once(ex) for _ in range(args.rounds)]
    with open("/proc/loadavg") as f:
        load1 = " ".join(f.read().split()[:3])
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratios = {
        "loops_fork_speedup": statistics.median(r["loops_serial"] / r["loops_fork"] for r in rows),
        "loops_tpe_speedup": statistics.median(r["loops_serial"] / r["loops_tpe"] for r in rows),
        "fib_fork_speedup": statistics.median(r["fib_serial"] / r["fib_fork"] for r in rows),
    }
    leaf_us = med["fib_serial"] / sum(1 for _ in _leaves(FIB_N)) * 1e6
    out = {"python": sys.version.split()[0] + ("t" if not gil else ""), "gil": gil,
           "load_before": load0, "load_after": load1, **med, **ratios, "leaf_us": leaf_us,
           "cutoff": CUTOFF}
    if args.json:
        print(json.dumps(out))
        return
    print(f"# {out['python']} (GIL {'on' if gil else 'off'}), 2 inter-op threads; "
          f"load {load0} -> {load1}; medians of {args.rounds} interleaved rounds")
    print(f"4 pure-Python loops: forked {ratios['loops_fork_speedup']:.2f}x serial, "
          f"ThreadPoolExecutor {ratios['loops_tpe_speedup']:.2f}x "
          f"(serial {med['loops_serial'] * 1e3:.0f} ms)")
    print(f"fib({FIB_N}) by fork/wait, leaves fib(<= {CUTOFF}), {leaf_us:.0f} us on average: "
          f"{ratios['fib_fork_speedup']:.2f}x serial ({med['fib_serial'] * 1e3:.0f} ms)")
    print(f"round trip: fork+wait {med['trip_us']:.2f} us, TPE submit+result "
          f"{med['tpe_trip_us']:.2f} us")
    print(f"100k no-op tasks: forkwait {med['many_us']:.2f} us per task, TPE "
          f"{med['tpe_many_us']:.2f} us")


def _leaves(k: int):
    if k <= CUTOFF:
        yield k
        return
    yield from _leaves(k - 1)
    yield from _leaves(k - 2)


if __name__ == "__main__":
    main()
