"""``python -m forkwait bench``: a short, standard comparison on this machine:
peers timed interleaved, round by round, in one process, and compared as the
median of per-round ratios (helpers in ``forkwait._measure.timing``)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import forkwait as fw
from forkwait._measure.timing import LoadWatch, interleaved, median_ratio
from forkwait._threads import available_cpus
from forkwait.cli._common import positive_int


def _noop() -> None:
    return None


def overhead_rows(rounds: int) -> list[dict]:
    rows = []
    with ThreadPoolExecutor(fw.get_num_interop_threads()) as ex:
        n = 1000

        def fw_trip():
            for _ in range(n):
                fw.wait(fw.fork(_noop))

        def tpe_trip():
            for _ in range(n):
                ex.submit(_noop).result()

        t = interleaved({"forkwait": fw_trip, "concurrent.futures": tpe_trip}, rounds)
        rows.append({
            "measurement": "fork+wait of a no-op, time vs concurrent.futures submit().result()",
            "peer": "concurrent.futures",
            "ratio": median_ratio(t["forkwait"], t["concurrent.futures"]),
            "forkwait_us": statistics.median(t["forkwait"]) / n * 1e6,
            "lower is better": True,
        })
        m = 20_000

        def fw_many():
            fw.wait_all([fw.fork(_noop) for _ in range(m)])

        def tpe_many():
            for f in [ex.submit(_noop) for _ in range(m)]:
                f.result()

        t = interleaved({"forkwait": fw_many, "concurrent.futures": tpe_many}, max(3, rounds // 2))
        rows.append({
            "measurement": "throughput of 20k forked no-ops, vs concurrent.futures",
            "peer": "concurrent.futures",
            "ratio": median_ratio(t["concurrent.futures"], t["forkwait"]),
            "lower is better": False,
        })
    try:
        import torch
    except ImportError:
        return rows

    def sleeper():
        time.sleep(0.02)
        return torch.zeros(())

    def torch_two():
        futs = [torch.jit.fork(sleeper) for _ in range(2)]
        return [torch.jit.wait(f) for f in futs]

    def fw_two():
        return fw.wait_all([fw.fork(sleeper) for _ in range(2)])

    t = interleaved({"forkwait": fw_two, "torch": torch_two}, 3)
    rows.append({
        "measurement": "two forked 20 ms sleeps, speed-up vs eager torch.jit.fork",
        "peer": "torch.jit.fork",
        "ratio": median_ratio(t["torch"], t["forkwait"]),
        "lower is better": False,
    })
    return rows


def kernel_rows(rounds: int) -> list[dict]:
    ops = fw.ops
    rows = []
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1_000_000).astype(np.float32)
    y = rng.standard_normal(1_000_000).astype(np.float32)
    m = rng.standard_normal((1000, 1000)).astype(np.float32)
    cases: dict[str, tuple[Callable, dict[str, Callable]]] = {
        "exp 1M float32": (lambda: ops.exp(x), {"NumPy": lambda: np.exp(x)}),
        "tanh 1M float32": (lambda: ops.tanh(x), {"NumPy": lambda: np.tanh(x)}),
        "add 1M float32": (lambda: ops.add(x, y), {"NumPy": lambda: np.add(x, y)}),
        "sum 1M float32": (lambda: ops.sum(x), {"NumPy": lambda: np.sum(x)}),
        "softmax 1000x1000 float32": (
            lambda: ops.softmax(m),
            {"NumPy": lambda: _np_softmax(m)},
        ),
    }
    try:
        import numexpr as ne

        env = {"x": x, "y": y}
        cases["exp 1M float32"][1]["numexpr"] = lambda: ne.evaluate("exp(x)", local_dict=env)
        cases["tanh 1M float32"][1]["numexpr"] = lambda: ne.evaluate("tanh(x)", local_dict=env)
        cases["add 1M float32"][1]["numexpr"] = lambda: ne.evaluate("x + y", local_dict=env)
    except ImportError:
        ne = None
    try:
        import torch

        tx, ty, tm = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)
        cases["exp 1M float32"][1]["torch"] = lambda: torch.exp(tx)
        cases["tanh 1M float32"][1]["torch"] = lambda: torch.tanh(tx)
        cases["add 1M float32"][1]["torch"] = lambda: torch.add(tx, ty)
        cases["sum 1M float32"][1]["torch"] = lambda: torch.sum(tx)
        cases["softmax 1000x1000 float32"][1]["torch"] = lambda: torch.softmax(tm, dim=-1)
    except ImportError:
        torch = None  # type: ignore[assignment]
    saved = fw.get_num_threads()
    try:
        for threads in sorted({1, available_cpus()}):
            fw.set_num_threads(threads)
            if ne is not None:
                ne.set_num_threads(threads)
            if torch is not None:
                torch.set_num_threads(threads)
            for name, (ours, peers) in cases.items():
                t = interleaved({"forkwait": ours, **peers}, rounds)
                for peer in peers:
                    rows.append({
                        "measurement": f"{name}, {threads} thread(s): speed-up vs {peer}",
                        "peer": peer,
                        "ratio": median_ratio(t[peer], t["forkwait"]),
                        "lower is better": False,
                    })
    finally:
        fw.set_num_threads(saved)
    return rows


def _np_softmax(m: np.ndarray) -> np.ndarray:
    e = np.exp(m - m.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="a short comparison with concurrent.futures, NumPy, numexpr and torch",
        description="Measure fork/wait overhead against concurrent.futures (and eager "
        "torch.jit.fork), and a few kernels against NumPy, numexpr and torch at 1 and all "
        "threads; print ratios (peers interleaved in one process, medians) and the load.",
    )
    p.add_argument("--rounds", type=positive_int, default=7, help="timed rounds (7)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    return main(rounds=args.rounds, as_json=args.json)


def main(rounds: int = 7, as_json: bool = False) -> int:
    watch = LoadWatch()
    rows = overhead_rows(rounds) + kernel_rows(rounds)
    load = watch.stop()
    header = {
        "cpus": available_cpus(),
        "interop_threads": fw.get_num_interop_threads(),
        "rounds": rounds,
        "loadavg_before": load.before,
        "loadavg_after": load.after,
        "others_cpus": load.others_cpus,
    }
    if as_json:
        print(json.dumps({**header, "rows": rows}, indent=1))
        return 0
    print(
        f"forkwait bench: {header['cpus']} CPUs, {rounds} rounds, medians of per-round "
        f"ratios, peers interleaved; {load.describe()}"
    )
    width = max(len(r["measurement"]) for r in rows)
    for r in rows:
        better = "lower is better" if r["lower is better"] else "higher is better"
        print(f"{r['measurement']:<{width}}  {r['ratio']:7.2f}x  ({better})")
    if load.busy():
        print("(the machine was busy while measuring: these ratios may not mean much)")
    return 0
