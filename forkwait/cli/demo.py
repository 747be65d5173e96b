"""``python -m forkwait demo``: what forking independent work buys on this
machine. A model of independent branches (an ensemble), each a chain of
forkwait's own kernels, is run serially and with fork/wait under a few thread
settings, warmed up, interleaved round by round; every sentence after the
table is computed from the table and the machine's load."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import forkwait as fw
from forkwait import _threads
from forkwait._measure.timing import Load, LoadWatch, beats, paired_speedup
from forkwait._native import _team
from forkwait._threads import available_cpus
from forkwait.cli._common import CommandError, positive_int

#: Differences smaller than this are not called a win or a loss.
MIN_GAIN = 0.05


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="time independent branches of forkwait kernels serially and with fork/wait",
        description="Run a model of independent branches (chains of forkwait.ops kernels: "
        "gelu, layer_norm, tanh) serially and with fork/wait under a few thread settings, "
        "warmed up and interleaved round by round; print medians, spreads and speed-ups, the "
        "machine's load, and what the table says.",
    )
    p.add_argument("--branches", type=positive_int, default=8, help="independent branches (8)")
    p.add_argument("--rows", type=positive_int, default=512, help="rows of each array (512)")
    p.add_argument("--cols", type=positive_int, default=1024, help="columns of each array (1024)")
    p.add_argument("--steps", type=positive_int, default=12, help="layers per branch (12)")
    p.add_argument("--rounds", type=positive_int, default=9, help="timed rounds (9)")
    p.add_argument("--torch", nargs="?", const="128x1024", default=None, metavar="BxD",
                   help="instead: 4 eager PyTorch branches of 4 x (Linear, ReLU) on a BxD "
                   "input (128x1024), serially, with fork/wait and with torch.jit.fork "
                   "(needs PyTorch)")


def run(args: argparse.Namespace) -> int:
    if args.torch is not None:
        from forkwait.cli._demo_torch import demo_torch, size

        try:
            batch, dim = size(args.torch)
        except argparse.ArgumentTypeError as exc:
            raise CommandError(f"--torch: {exc}", status=2) from None
        demo_torch(batch=batch, dim=dim, rounds=args.rounds)
        return 0
    demo(branches=args.branches, rows=args.rows, cols=args.cols, steps=args.steps,
         rounds=args.rounds)
    return 0


def make_branch(x: np.ndarray, steps: int) -> Callable[[], np.ndarray]:
    """One branch of the model: `steps` layers of gelu, layer_norm and tanh
    (forkwait.ops kernels, which release the GIL)."""
    ops = fw.ops

    def branch() -> np.ndarray:
        h = x
        for _ in range(steps):
            h = ops.tanh(ops.layer_norm(ops.gelu(h)))
        return h

    return branch


def run_serial(branches: list[Callable[[], np.ndarray]]) -> list[np.ndarray]:
    return [b() for b in branches]


def run_forked(branches: list[Callable[[], np.ndarray]]) -> list[np.ndarray]:
    return fw.wait_all([fw.fork(b) for b in branches])


@dataclass(frozen=True)
class Row:
    """A setting of the demo."""

    name: str
    kind: str  # "serial", "serial-intra", "default", "one-interop", "fixed"
    forked: bool
    interop: int
    intra: int
    mode: str = "shared"


def settings(ncpu: int) -> list[Row]:
    """The rows for `ncpu` CPUs (fewer on one CPU, where several coincide)."""
    rows = [Row("serial (no fork), 1 thread", "serial", False, 1, 1)]
    if ncpu > 1:
        rows.append(Row(f"serial (no fork), {ncpu} intra-op threads", "serial-intra", False,
                        1, ncpu))
    rows.append(Row(f"fork/wait, default: {ncpu} inter-op x {ncpu} intra-op (shared)",
                    "default", True, ncpu, ncpu))
    if ncpu > 1:
        rows.append(Row("fork/wait, 1 inter-op x 1 intra-op", "one-interop", True, 1, 1))
        rows.append(Row(f"fork/wait, {ncpu} inter-op x {ncpu} intra-op (fixed)", "fixed", True,
                        ncpu, ncpu, "fixed"))
    return rows


def _apply(row: Row) -> None:
    fw.set_num_interop_threads(row.interop)
    fw.set_num_threads(row.intra)
    fw.set_intra_op_mode(row.mode)


def measure(work: list[Callable[[], np.ndarray]], rows: list[Row],
            rounds: int) -> dict[Row, list[float]]:
    """Per row, the time of each round (a warm-up round first; every result
    checked against the serial one)."""
    reference = run_serial(work)
    times: dict[Row, list[float]] = {row: [] for row in rows}
    for r in range(rounds + 1):  # round 0 warms up (pool threads, OpenMP teams, caches)
        k = r % len(rows)
        for row in [*rows[k:], *rows[:k]]:
            _apply(row)
            t0 = time.perf_counter()
            result = (run_forked if row.forked else run_serial)(work)
            seconds = time.perf_counter() - t0
            if r:
                times[row].append(seconds)
            pairs = zip(result, reference, strict=True)
            if not all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in pairs):
                raise AssertionError(f"{row.name}: results differ from the serial run")
    return times


@dataclass(frozen=True)
class Costs:
    """What the sentences explaining a slow row quote, measured in the same run:
    kernel calls per run, a team's fork-join (an empty team region of `ncpu`
    threads, timed in C; None where no team of 2 exists here)."""

    kernels: int
    forkjoin_s: float | None


def measure_forkjoin(ncpu: int, reps: int = 2000, rounds: int = 5) -> float | None:
    """Seconds per empty team region of `ncpu` threads (median of `rounds`)."""
    if ncpu < 2 or not _team.openmp_info()[0]:
        return None
    with fw.num_threads(ncpu):
        return statistics.median(_team._empty_regions(reps) for _ in range(rounds))


def conclusions(times: dict[Row, list[float]], load: Load, ncpu: int, branches: int,
                elements: int, costs: Costs | None = None) -> list[str]:
    """The sentences the table supports (each from one rule)."""
    rows = list(times)
    serial = rows[0]
    default = next(r for r in rows if r.kind == "default")
    out = []
    if load.busy():
        out.append(
            f"The machine was busy: other processes used {load.others_cpus:.2f} CPUs on "
            "average while timing, so these figures may not mean much; run it again when it "
            "is quieter."
        )
    if ncpu == 1:
        out.append("Only one CPU is available to this process, so nothing can run at once: "
                   "forking cannot speed anything up here.")
    speed, iv = paired_speedup(times[serial], times[default])
    if beats(times[default], times[serial], MIN_GAIN):
        out.append(
            f"Forking the {branches} independent branches let them run at once: the default "
            f"fork/wait ran {speed:.2f}x as fast as the serial program on {ncpu} CPUs."
        )
    elif iv is None:
        out.append(f"{len(times[serial])} rounds are too few to tell a difference from noise "
                   "(5 are needed): raise --rounds.")
    else:
        out.append(
            f"The default fork/wait did not beat the serial program beyond the noise here "
            f"({speed:.2f}x)."
        )
    for row in rows:
        if row in (serial, default):
            continue
        if beats(times[row], times[default], MIN_GAIN):
            s, _ = paired_speedup(times[default], times[row])
            out.append(f"{row.name} beat the default here ({s:.2f}x as fast).")
        elif beats(times[default], times[row], MIN_GAIN):
            s, _ = paired_speedup(times[row], times[default])
            out.append(f"{row.name} was slower than the default (the default ran {s:.2f}x as "
                       f"fast): {_why_slower(row, ncpu, elements, times, costs, load.busy())}")
    return out


def _why_slower(row: Row, ncpu: int, elements: int, times: dict[Row, list[float]],
                costs: Costs | None, busy: bool = False) -> str:
    if row.kind == "serial-intra" and busy:
        return (f"it splits each kernel call across {ncpu} threads, and with other processes "
                "on the CPUs a thread of the team may have no CPU of its own: the others "
                "wait for it at every kernel (docs/threads.md).")
    if row.kind == "serial-intra":
        serial = next(iter(times))
        split = (f"it splits each kernel call ({elements} elements) across {ncpu} threads "
                 "while the branches run one after another, so the Python between the "
                 "kernels runs on one thread")
        if costs is None or costs.forkjoin_s is None or not costs.kernels:
            return split + "; forking whole branches runs it on several."
        kernel_s = statistics.median(times[serial]) / costs.kernels
        share = costs.forkjoin_s / kernel_s
        return (f"{split}, and each of its {costs.kernels} calls pays a team's fork-join "
                f"({costs.forkjoin_s * 1e6:.1f} us measured here, {share:.1%} of a call's "
                f"{kernel_s * 1e6:.0f} us on one thread); forking whole branches runs "
                "the Python on several threads and needs no team.")
    if row.kind == "one-interop":
        return ("one pool thread and the waiting main thread run at most two branches at "
                f"once, on {ncpu} CPUs.")
    if row.kind == "fixed":
        running = row.interop + 1  # the pool's threads and the waiting main thread
        return (f"in fixed mode each of the {running} branches running at once (on the "
                f"pool's {row.interop} threads and the waiting main thread) asks for "
                f"{row.intra} threads: {running * row.intra} OpenMP threads on {ncpu} CPUs "
                "(oversubscription); the default shared mode splits the CPUs between them.")
    return "serially, one branch runs at a time."


def demo(branches: int = 8, rows: int = 512, cols: int = 1024, steps: int = 12, rounds: int = 9,
         out: Callable[[str], object] = print) -> dict[Row, list[float]]:
    """Time the model under the demo's settings; print the table and what it
    says; return the times per row."""
    rng = np.random.default_rng(0)
    work = [make_branch(rng.standard_normal((rows, cols)).astype(np.float32), steps)
            for _ in range(branches)]
    ncpu = available_cpus()
    table = settings(ncpu)
    saved = _threads._save_settings()
    watch = LoadWatch()
    try:
        times = measure(work, table, rounds)
        costs = Costs(kernels=3 * steps * branches, forkjoin_s=measure_forkjoin(ncpu))
    finally:
        _threads._restore_settings(saved)
    load = watch.stop()
    serial = times[table[0]]
    width = max(len(row.name) for row in table)
    out(
        f"forkwait demo: {branches} independent branches of {steps} x (gelu, layer_norm, "
        f"tanh) on {rows}x{cols} float32, forkwait.ops kernels; {ncpu} CPUs; median of "
        f"{rounds} rounds after a warm-up round"
    )
    out(f"machine: {load.describe()}")
    out(f"{'setting':<{width}}  {'median ms':>9}  {'min-max ms':>15}  "
        f"{'speed-up [90% interval]':>23}")
    for row in table:
        ts = times[row]
        speed, iv = paired_speedup(serial, ts)
        ivs = "" if row is table[0] else (f"[{iv[0]:.2f}-{iv[1]:.2f}]" if iv else "[n/a]")
        spread = f"{min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f}"
        out(f"{row.name:<{width}}  {statistics.median(ts) * 1e3:>9.1f}  {spread:>15}  "
            f"{f'{speed:.2f}x {ivs}':>23}")
    out("Speed-up: the serial row's time over the row's, as the median of per-round ratios.")
    for sentence in conclusions(times, load, ncpu, branches, rows * cols, costs):
        out(sentence)
    return times
