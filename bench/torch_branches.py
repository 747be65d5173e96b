"""Eager PyTorch branches forked by forkwait, against TorchScript's fork (issue 24).

    python bench/torch_branches.py [--rounds 9] [--sizes 64x512 128x1024]

The model (``forkwait/_measure/torch_branches.py``): 4 branches, each 4 x
(``nn.Linear(D, D)``, ReLU), on a (B, D) float32 input, in inference mode.
Peers, run interleaved in one process, round by round (the order turns each
round), each timing ``--calls`` calls:

- ``serial_1t``: the branches one after another, torch at 1 thread;
- ``serial``: the same at torch's own count (its intra-op team: what a
  program gets without forkwait);
- ``forkwait``: the branches forked with ``fw.fork`` / ``fw.wait_all``,
  default settings (the torch budget on);
- ``forkwait_nobudget``: the same with ``fw.set_torch_budget(False)``;
- ``jit_fork``: the model scripted, its ``torch.jit.fork`` branches on
  TorchScript's inter-op pool, torch at ``--script-threads`` threads (1 by
  default: TorchScript's inter-op threads keep the count they first ran
  with, so only one count can be measured per process);
- ``eager_jit_fork``: the eager model as written, ``torch.jit.fork`` and all
  (runs inline: the same as serial).

Prints the machine, its load before and after, the medians, and per size the
medians of per-round ratios: each peer's speed-up over ``serial`` and
forkwait's over the better of ``serial``, ``serial_1t`` and ``jit_fork``
(the issue's target: at least 0.95, and never below serial).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import loadavg  # noqa: E402
from sched_ratios import cpu_model  # noqa: E402

import forkwait as fw  # noqa: E402
from forkwait._measure.timing import LoadWatch  # noqa: E402
from forkwait._measure.torch_branches import build, torch_threads  # noqa: E402


def size(text: str) -> tuple[int, int]:
    b, _, d = text.partition("x")
    return int(b), int(d)


def peers(m, script_threads: int) -> dict:
    def no_budget():
        fw.set_torch_budget(False)
        try:
            return m.forked()
        finally:
            fw.set_torch_budget(True)

    return {
        "serial_1t": torch_threads(1)(m.serial),
        "serial": m.serial,
        "forkwait": m.forked,
        "forkwait_nobudget": no_budget,
        "jit_fork": torch_threads(script_threads)(m.jit_fork),
        "eager_jit_fork": m.eager_jit_fork,
    }


def case(batch: int, dim: int, rounds: int, calls: int, script_threads: int) -> dict:
    import torch

    m = build(batch, dim)
    ways = peers(m, script_threads)
    with torch.inference_mode():
        want = m.serial()
        for name, fn in ways.items():  # warm-up, and every peer computes the same
            for _ in range(3):
                got = fn()
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)
        if calls <= 0:  # about 0.1 s per timing
            t0 = time.perf_counter()
            m.serial()
            calls = max(1, int(0.1 / max(time.perf_counter() - t0, 1e-6)))
        times: dict[str, list[float]] = {name: [] for name in ways}
        names = list(ways)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                fn = ways[name]
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                times[name].append((time.perf_counter() - t0) / calls)
    return {"times": times, "calls": calls}


def ratio(times: dict, num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[den], times[num], strict=True))


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=0, help="calls per timing (0: about 0.1 s)")
    ap.add_argument("--sizes", type=size, nargs="+", default=[(64, 512), (128, 1024)])
    ap.add_argument("--script-threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_interop_threads(fw.get_num_interop_threads())
    print(f"machine: {cpu_model()}; CPUs {len(os.sched_getaffinity(0))}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"{torch.get_num_interop_threads()} inter-op; forkwait {fw.get_num_interop_threads()} "
          f"inter-op, torch budget {'on' if fw.get_torch_budget() else 'off'}")
    print(f"load before: {loadavg()}")
    watch = LoadWatch()
    rows = []
    for batch, dim in args.sizes:
        res = case(batch, dim, args.rounds, args.calls, args.script_threads)
        t = res["times"]
        best = {name: ratio(t, "forkwait", name) for name in ("serial", "serial_1t", "jit_fork")}
        rows.append((batch, dim, res["calls"], t, best))
        print(f"\nB={batch} D={dim}: medians of {args.rounds} rounds x {res['calls']} calls")
        print("| peer | median ms | speed-up over serial |")
        print("| --- | --- | --- |")
        for name, ts in t.items():
            speed = ratio(t, name, "serial")
            print(f"| {name} | {statistics.median(ts) * 1e3:.3f} | {speed:.2f} |")
        print(f"forkwait over serial {best['serial']:.2f}, over serial_1t {best['serial_1t']:.2f}, "
              f"over jit_fork {best['jit_fork']:.2f}; over the better of them "
              f"{min(best.values()):.2f} (target >= 0.95)", flush=True)
    load = watch.stop()
    print(f"\nload after: {loadavg()}; {load.describe()}")


if __name__ == "__main__":
    main()
