"""``python -m forkwait demo --torch``: eager PyTorch branches forked by
forkwait, beside serial eager, ``torch.jit.fork`` in eager mode and in
TorchScript. The model (``forkwait._measure.torch_branches``): 4 branches of
4 x (Linear, ReLU). Every row is warmed up and checked against the serial
result; the rows run interleaved round by round, and every sentence after
the table is computed from the table and the machine's load."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from forkwait import _threads
from forkwait._measure.timing import Load, LoadWatch, beats, paired_speedup
from forkwait._threads import available_cpus
from forkwait.cli._common import CommandError

#: Differences smaller than this are not called a win or a loss.
MIN_GAIN = 0.05


def size(text: str) -> tuple[int, int]:
    """``BxD`` (batch x features), for ``--torch``."""
    b, sep, d = text.lower().partition("x")
    try:
        value = int(b), int(d)
    except ValueError:
        value = (0, 0)
    if not sep or min(value) < 1:
        raise argparse.ArgumentTypeError(f"expected BATCHxDIM such as 128x1024, got {text!r}")
    return value


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise CommandError(
            "--torch needs PyTorch, which is not installed here: install it "
            "(pip install torch) or run the demo without --torch") from None
    return torch


def rows(m: Any, torch: Any) -> dict[str, Callable[[], Any]]:
    """The demo's rows: name -> a call of the model."""
    import forkwait as fw
    from forkwait._measure.torch_branches import torch_threads

    def no_budget() -> Any:
        fw.set_torch_budget(False)
        try:
            return m.forked()
        finally:
            fw.set_torch_budget(True)

    n = torch.get_num_threads()
    return {
        f"serial eager, torch at {n} intra-op threads": m.serial,
        "serial eager, torch at 1 thread": torch_threads(1)(m.serial),
        "eager model with torch.jit.fork": m.eager_jit_fork,
        "TorchScript with torch.jit.fork, torch at 1 thread": torch_threads(1)(m.jit_fork),
        f"fork/wait, default: {fw.get_num_interop_threads()} inter-op, torch budget on":
            m.forked,
        "fork/wait, torch budget off": no_budget,
    }


def measure(ways: dict[str, Callable[[], Any]], rounds: int,
            torch: Any) -> tuple[dict[str, list[float]], int]:
    """Per row, the time of one call in each round (a warm-up first, every
    result checked against the serial one); and the calls per timing."""
    names = list(ways)
    want = ways[names[0]]()
    for name in names:
        for _ in range(2):
            got = ways[name]()
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
            raise AssertionError(f"{name}: the result differs from the serial one")
    t0 = time.perf_counter()
    ways[names[0]]()
    calls = max(1, int(0.05 / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(calls):
                ways[name]()
            times[name].append((time.perf_counter() - t0) / calls)
    return times, calls


def conclusions(times: dict[str, list[float]], load: Load, ncpu: int) -> list[str]:
    """The sentences the table supports (each from one rule)."""
    serial, serial1, eager_jit, script, forked, no_budget = list(times)
    out = []
    if load.busy():
        out.append(f"The machine was busy: other processes used {load.others_cpus:.2f} CPUs "
                   "on average while timing, so these figures may not mean much.")
    best_serial = min((serial, serial1), key=lambda k: statistics.median(times[k]))
    speed, iv = paired_speedup(times[best_serial], times[forked])
    if iv is None:
        out.append("Too few rounds to tell a difference from noise (5 are needed): raise "
                   "--rounds.")
        return out
    if beats(times[forked], times[best_serial], MIN_GAIN):
        out.append(f"Forking the 4 eager branches with forkwait ran {speed:.2f}x as fast as the "
                   f"faster serial row ({best_serial}) on {ncpu} CPUs.")
    elif beats(times[best_serial], times[forked], MIN_GAIN):
        out.append(f"Forking the branches was slower than the faster serial row "
                   f"({best_serial}) here: {speed:.2f}x; at this size one branch's "
                   "work does not pay for running branches at once.")
    else:
        out.append(f"Forking the branches ran as fast as the faster serial row ({best_serial}) "
                   f"within the noise ({speed:.2f}x).")
    s, _ = paired_speedup(times[serial], times[eager_jit])
    if not beats(times[eager_jit], times[serial], MIN_GAIN):
        out.append(f"torch.jit.fork in the eager model gained nothing over serial eager "
                   f"({s:.2f}x): it ran each branch on the spot.")
    else:
        out.append(f"torch.jit.fork in the eager model ran {s:.2f}x as fast as serial eager.")
    s, _ = paired_speedup(times[script], times[forked])
    if beats(times[forked], times[script], MIN_GAIN):
        out.append(f"forkwait's eager fork/wait ran {s:.2f}x as fast as TorchScript's fork.")
    elif beats(times[script], times[forked], MIN_GAIN):
        out.append(f"TorchScript's fork ran {1 / s:.2f}x as fast as forkwait's eager fork/wait.")
    else:
        out.append(f"forkwait's eager fork/wait and TorchScript's fork ran as fast as each "
                   f"other within the noise ({s:.2f}x).")
    s, _ = paired_speedup(times[no_budget], times[forked])
    if beats(times[forked], times[no_budget], MIN_GAIN):
        out.append(f"The torch budget (torch's threads shared between the branches running at "
                   f"once) made fork/wait {s:.2f}x as fast as without it.")
    elif beats(times[no_budget], times[forked], MIN_GAIN):
        out.append(f"fork/wait ran {1 / s:.2f}x as fast without the torch budget here; turn it "
                   "off with fw.set_torch_budget(False).")
    else:
        out.append(f"The torch budget made no difference beyond the noise here ({s:.2f}x).")
    return out


def demo_torch(batch: int = 128, dim: int = 1024, rounds: int = 9,
               out: Callable[[str], object] = print) -> dict[str, list[float]]:
    """Time the torch model's rows; print the table and what it says; return
    the times per row (seconds per call)."""
    torch = _torch()
    from forkwait._measure.torch_branches import build

    ncpu = available_cpus()
    m = build(batch, dim)
    saved = _threads._save_settings()
    budget = _threads.get_torch_budget()
    watch = LoadWatch()
    try:
        _threads.set_torch_budget(True)
        with torch.inference_mode():
            ways = rows(m, torch)
            times, calls = measure(ways, rounds, torch)
    finally:
        _threads.set_torch_budget(budget)
        _threads._restore_settings(saved)
    load = watch.stop()
    names = list(times)
    width = max(map(len, names))
    out(f"forkwait demo --torch: 4 eager branches of 4 x (Linear({dim}, {dim}), ReLU) on a "
        f"{batch}x{dim} float32 input, inference mode; torch {torch.__version__}; {ncpu} "
        f"CPUs; median of {rounds} rounds of {calls} calls")
    out(f"machine: {load.describe()}")
    out(f"{'setting':<{width}}  {'median ms':>9}  {'speed-up [90% interval]':>23}")
    for name in names:
        speed, iv = paired_speedup(times[names[0]], times[name])
        ivs = "" if name == names[0] else (f"[{iv[0]:.2f}-{iv[1]:.2f}]" if iv else "[n/a]")
        out(f"{name:<{width}}  {statistics.median(times[name]) * 1e3:>9.2f}  "
            f"{f'{speed:.2f}x {ivs}':>23}")
    out("Speed-up: the first row's time over the row's, the median of per-round ratios.")
    for sentence in conclusions(times, load, ncpu):
        out(sentence)
    return times
