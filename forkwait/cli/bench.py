"""``python -m forkwait bench``: a short, standard comparison on this machine:
peers timed interleaved, round by round, in one process, and compared as the
median of per-round ratios (helpers in ``forkwait._measure.timing``)."""

from __future__ import annotations

import argparse
import json
import statistics
import textwrap
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


#: What the round-trip row measures, said once under the table.
INLINE = ("fork+wait of a no-op runs inline: the waiting thread finds the task still "
          "queued, claims it and runs it itself, so the round trip is the cost of a fork "
          "and a wait, without a hand-off to a pool thread (concurrent.futures' result() "
          "always waits for one).")


def _row(measurement: str, peer: str, t: dict[str, list[float]], per: int, what: str,
         lower_is_better: bool, **more: object) -> dict:
    """One row: the ratio (forkwait over the peer when lower is better, the
    peer over forkwait when higher is), and the median times behind it, in
    seconds per `what` (`per` of them in one timed call)."""
    ours, theirs = t["forkwait"], t[peer]
    return {
        "measurement": measurement,
        "peer": peer,
        "ratio": median_ratio(ours, theirs) if lower_is_better else median_ratio(theirs, ours),
        "forkwait_s": statistics.median(ours) / per,
        "peer_s": statistics.median(theirs) / per,
        "per": what,
        "lower is better": lower_is_better,
        **more,
    }


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
        rows.append(_row(
            "fork+wait of a no-op, time vs concurrent.futures submit().result()",
            "concurrent.futures", t, n, "round trip", True, note=INLINE,
        ))
        m = 20_000

        def fw_many():
            fw.wait_all([fw.fork(_noop) for _ in range(m)])

        def tpe_many():
            for f in [ex.submit(_noop) for _ in range(m)]:
                f.result()

        t = interleaved({"forkwait": fw_many, "concurrent.futures": tpe_many}, max(3, rounds // 2))
        rows.append(_row(
            "throughput of 20k forked no-ops, vs concurrent.futures",
            "concurrent.futures", t, m, "no-op", False,
        ))
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

    t = interleaved({"forkwait": fw_two, "torch.jit.fork": torch_two}, 3)
    rows.append(_row(
        "two forked 20 ms sleeps, speed-up vs eager torch.jit.fork",
        "torch.jit.fork", t, 1, "pair", False,
    ))
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
                    rows.append(_row(
                        f"{name}, {threads} thread(s): speed-up vs {peer}",
                        peer, t, 1, "call", False,
                    ))
    finally:
        fw.set_num_threads(saved)
    return rows


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def table(rows: list[dict]) -> list[str]:
    """The rows as text: each ratio with the median times behind it; then
    each row's note (what it measures), once.

    Examples
    --------
    >>> from forkwait.cli.bench import table
    >>> row = {"measurement": "exp, speed-up vs NumPy", "peer": "NumPy", "ratio": 2.0,
    ...        "forkwait_s": 0.001, "peer_s": 0.002, "per": "call",
    ...        "lower is better": False}
    >>> print(table([row])[0])
    exp, speed-up vs NumPy     2.00x  (forkwait 1 ms, NumPy 2 ms per call; higher is better)
    """
    width = max((len(r["measurement"]) for r in rows), default=0)
    lines, notes = [], []
    for r in rows:
        better = "lower is better" if r["lower is better"] else "higher is better"
        times = (f"forkwait {_time(r['forkwait_s'])}, {r['peer']} {_time(r['peer_s'])} "
                 f"per {r['per']}")
        lines.append(f"{r['measurement']:<{width}}  {r['ratio']:7.2f}x  ({times}; {better})")
        if r.get("note") and r["note"] not in notes:
            notes.append(r["note"])
    return lines + [textwrap.fill(note, 100) for note in notes]


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
    for line in table(rows):
        print(line)
    if load.busy():
        print("(the machine was busy while measuring: these ratios may not mean much)")
    return 0
