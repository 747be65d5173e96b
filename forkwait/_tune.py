"""Find the best pair of thread counts for a workload, and say why.

``fw.tune(fn)`` measures in this process (the settings can change at any
time); ``python -m forkwait tune SCRIPT`` runs the script in a fresh
subprocess per run, with the settings in its environment.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from forkwait._threads import _check_count, available_cpus


@dataclass(frozen=True)
class Setting:
    """One point of the grid."""

    interop: int
    intra: int
    mode: str = "shared"

    def label(self) -> str:
        return f"{self.interop} inter-op x {self.intra} intra-op ({self.mode})"

    def env(self) -> dict[str, str]:
        return {
            "FORKWAIT_NUM_INTEROP_THREADS": str(self.interop),
            "FORKWAIT_NUM_THREADS": str(self.intra),
            "FORKWAIT_INTRA_OP_MODE": self.mode,
        }


def thread_counts(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`, and `limit` itself."""
    out, k = [], 1
    while k < limit:
        out.append(k)
        k *= 2
    out.append(limit)
    return out


def grid(
    max_threads: int | None = None, modes: Sequence[str] = ("shared", "fixed")
) -> list[Setting]:
    """Inter-op x intra-op counts from 1 to `max_threads` (default: the CPUs
    available), in each intra-op mode where the mode can matter."""
    limit = available_cpus() if max_threads is None else _check_count(
        max_threads, "max_threads", 1024
    )
    for mode in modes:
        if mode not in ("shared", "fixed"):
            raise ValueError(f"modes must be 'shared' and/or 'fixed', got {mode!r}")
    counts = thread_counts(limit)
    out = []
    for inter in counts:
        for intra in counts:
            for mode in modes:
                # the mode only changes something when several teams can run at once
                if mode == "fixed" and intra == 1 and "shared" in modes:
                    continue
                out.append(Setting(inter, intra, mode))
    return out


@dataclass
class TuneResult:
    """What :func:`tune` measured: times per setting, the best one, and advice."""

    times: dict[Setting, list[float]]
    facts: dict = field(default_factory=dict)
    workload: str = "the workload"

    @property
    def baseline(self) -> Setting:
        return min(self.times, key=lambda s: (s.interop, s.intra, s.mode != "shared"))

    def median(self, s: Setting) -> float:
        return statistics.median(self.times[s])

    @property
    def best(self) -> Setting:
        """The setting with the smallest median time."""
        return min(self.times, key=self.median)

    def speedup(self, s: Setting) -> float:
        return self.median(self.baseline) / self.median(s)

    def rows(self) -> list[tuple[Setting, float, float]]:
        return [(s, self.median(s), self.speedup(s)) for s in self.times]

    def advice(self) -> list[str]:
        """Why a knob did or did not make a difference, from what was recorded."""
        out = []
        f = self.facts
        inter_gain = self._gain("interop")
        intra_gain = self._gain("intra")
        if f.get("tasks", 0) == 0:
            out.append(
                "No task was forked, so inter-op threads cannot matter. Fork independent "
                "calls to run them at once: fut = forkwait.fork(fn, *args) ... "
                "forkwait.wait(fut)."
            )
        elif f.get("cpu_utilisation", 2.0) < 1.25 and available_cpus() > 1:
            out.append(
                f"{f['tasks']} tasks were forked, but the process used only "
                f"{f['cpu_utilisation']:.2f} CPUs on average: the forked work holds the GIL "
                "(pure Python) or waits (I/O, sleep), so more threads cannot overlap it. "
                "Move the hot loop into code that releases the GIL (forkwait.ops, NumPy on "
                "large arrays, a Cython nogil function), or use processes for pure-Python "
                "work."
            )
        if f.get("tasks", 0) and f.get("blas_threads", 0) > 1:
            out.append(
                f"NumPy's BLAS runs {f['blas_threads']} threads of its own: forked calls to "
                "BLAS (@, np.dot) then oversubscribe the cores. Limit it with "
                "threadpoolctl.threadpool_limits(1, user_api='blas') around the forked work, "
                "or use forkwait.ops.matmul, whose team forkwait sizes."
            )
        if f.get("kernels", 0) == 0:
            out.append(
                "No forkwait.ops kernel ran, so intra-op threads (set_num_threads) cannot "
                "matter for this workload."
            )
        elif f.get("kernel_max_team", 0) <= 1 and f.get("profiled_intra", 1) > 1:
            out.append(
                f"{f['kernels']} kernels ran, but none above its grain size (largest: "
                f"{f['kernel_max_size']} elements), so each ran on one thread and intra-op "
                "threads cannot matter. Work on larger arrays, or fork the small calls."
            )
        if inter_gain >= 1.1:
            out.append(f"More inter-op threads helped: up to {inter_gain:.2f}x.")
        if intra_gain >= 1.1:
            out.append(f"More intra-op threads helped: up to {intra_gain:.2f}x.")
        return out

    def _gain(self, axis: str) -> float:
        """Best speed-up from raising one count (`axis`) while the other stays 1."""
        other = "intra" if axis == "interop" else "interop"
        more = [
            s for s in self.times if getattr(s, axis) > 1 and getattr(s, other) == 1
        ]
        if not more:
            return 1.0
        return self.median(self.baseline) / min(self.median(s) for s in more)

    def how_to_apply(self) -> str:
        b = self.best
        mode = "" if b.mode == "shared" else f'\n  forkwait.set_intra_op_mode("{b.mode}")'
        env = " ".join(
            f"{k}={v}" for k, v in b.env().items() if b.mode != "shared" or not k.endswith("MODE")
        )
        return (
            f"in code:\n  forkwait.set_num_interop_threads({b.interop})\n"
            f"  forkwait.set_num_threads({b.intra}){mode}\n"
            f"or from the shell:\n  {env} python your_script.py"
        )

    def table(self) -> str:
        rows = self.rows()
        width = max(len(s.label()) for s, *_ in rows)
        lines = [f"{'setting':<{width}}  {'median (ms)':>11}  {'speed-up':>8}  runs"]
        for s, t, sp in sorted(rows, key=lambda r: (r[0].interop, r[0].intra, r[0].mode)):
            mark = "  <- best" if s == self.best else ""
            lines.append(
                f"{s.label():<{width}}  {t * 1e3:>11.2f}  {sp:>7.2f}x  {len(self.times[s])}{mark}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = [
            f"forkwait tune: {self.workload}; {available_cpus()} CPUs; speed-up is over "
            f"{self.baseline.label()}",
            self.table(),
            f"best: {self.best.label()}, {self.speedup(self.best):.2f}x. "
            f"Apply it {self.how_to_apply()}",
        ]
        advice = self.advice()
        if advice:
            parts.append("why:\n" + "\n".join(f"- {a}" for a in advice))
        return "\n".join(parts)

    def heatmap(self, path: str | os.PathLike) -> None:
        """Write a PNG heatmap of speed-ups (inter-op x intra-op, one panel per mode)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("the heatmap needs matplotlib: pip install 'forkwait[plot]'") from exc
        modes = sorted({s.mode for s in self.times}, key=lambda m: m != "shared")
        inters = sorted({s.interop for s in self.times})
        intras = sorted({s.intra for s in self.times})
        fig, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 4), squeeze=False)
        speedups = [self.speedup(s) for s in self.times]
        scale = {"vmin": min(speedups), "vmax": max(speedups)}
        for ax, mode in zip(axes[0], modes, strict=True):
            grid_ = [[math.nan] * len(intras) for _ in inters]
            for s in self.times:
                if s.mode == mode:
                    grid_[inters.index(s.interop)][intras.index(s.intra)] = self.speedup(s)
            im = ax.imshow(grid_, origin="lower", cmap="viridis", **scale)
            for i, row in enumerate(grid_):
                for j, v in enumerate(row):
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:.2f}x", ha="center", va="center", color="w")
            ax.set_xticks(range(len(intras)), [str(v) for v in intras])
            ax.set_yticks(range(len(inters)), [str(v) for v in inters])
            ax.set_xlabel("intra-op threads (set_num_threads)")
            ax.set_ylabel("inter-op threads (set_num_interop_threads)")
            ax.set_title(f"speed-up, {mode} mode")
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


class _Progress:
    """A one-line progress bar on stderr (nothing when stderr is not a tty
    unless forced)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            bar = "#" * int(30 * self.done / self.total)
            sys.stderr.write(f"\r[{bar:<30}] {self.done}/{self.total} {label[:40]:<40}")
            sys.stderr.flush()
            if self.done == self.total:
                sys.stderr.write("\n")


def tune(
    fn: Callable[..., object],
    *args: object,
    repeat: int = 5,
    max_threads: int | None = None,
    modes: Sequence[str] = ("shared", "fixed"),
    progress: bool = False,
    **kwargs: object,
) -> TuneResult:
    """Time ``fn(*args, **kwargs)`` under a grid of thread settings.

    Inter-op x intra-op thread counts from 1 to the CPUs available (or
    `max_threads`), in each intra-op mode, `repeat` times each, interleaved.
    One more run under :func:`forkwait.profile` tells why a knob did or did
    not matter. The settings are restored afterwards.

    Parameters
    ----------
    fn : callable
        The workload; it should do the same work on every call.
    repeat : int
        Timed runs per setting (medians are reported).
    max_threads : int, optional
        The largest thread count to try.
    modes : sequence of str
        Intra-op modes to try (``"shared"``, ``"fixed"``).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    TuneResult
        ``print(result)`` shows the table, the best setting and the advice;
        ``result.best`` is the best :class:`Setting`; ``result.heatmap(path)``
        writes a PNG.

    Examples
    --------
    >>> import numpy as np, forkwait as fw
    >>> x = np.random.rand(200_000)
    >>> def work():
    ...     return fw.wait_all([fw.fork(np.sort, x) for _ in range(4)])
    >>> result = fw.tune(work, repeat=2)
    >>> result.best.interop >= 1 and result.facts["tasks"] == 4
    True
    """
    import forkwait as fw

    if not callable(fn):
        raise TypeError(f"tune() needs a callable workload, got {type(fn).__name__}")
    repeat = _check_count(repeat, "repeat", 10_000)
    settings = grid(max_threads, modes)
    saved = (fw.get_num_interop_threads(), fw.get_num_threads(), fw.get_intra_op_mode())
    times: dict[Setting, list[float]] = {s: [] for s in settings}
    bar = _Progress(len(settings) * repeat + 1, progress)

    def apply(s: Setting) -> None:
        fw.set_num_interop_threads(s.interop)
        fw.set_num_threads(s.intra)
        fw.set_intra_op_mode(s.mode)

    try:
        top = max(settings, key=lambda s: (s.interop * s.intra, s.mode == "shared"))
        apply(top)
        from forkwait._runner import profile_facts, settle

        settle()
        cpu0, t0 = time.process_time(), time.perf_counter()
        with fw.profile() as prof:
            fn(*args, **kwargs)  # also the warm-up
        wall = time.perf_counter() - t0
        facts = profile_facts(prof)
        facts["cpu_utilisation"] = (time.process_time() - cpu0) / max(wall, 1e-9)
        facts["profiled_intra"] = top.intra
        bar.step("profile")
        for _ in range(repeat):
            for s in settings:  # interleaved: each setting once per round
                apply(s)
                t0 = time.perf_counter()
                fn(*args, **kwargs)
                times[s].append(time.perf_counter() - t0)
                bar.step(s.label())
    finally:
        fw.set_num_interop_threads(saved[0])
        fw.set_num_threads(saved[1])
        fw.set_intra_op_mode(saved[2])
    name = getattr(fn, "__qualname__", type(fn).__name__)
    return TuneResult(times, facts, workload=f"{name}()")


class ScriptError(RuntimeError):
    """The tuned script failed or timed out."""


def _run_script(
    script: str, args: Sequence[str], env: dict[str, str], flags: Sequence[str], timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        stats = os.path.join(tmp, "stats.json")
        cmd = [sys.executable, "-m", "forkwait._runner", stats, *flags, script, *args]
        full_env = {**os.environ, **env}
        try:
            proc = subprocess.run(
                cmd, env=full_env, capture_output=True, text=True, timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise ScriptError(
                f"{script} did not finish within {timeout:g} s (raise it with --timeout)"
            ) from None
        if not os.path.exists(stats):
            last = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise ScriptError(
                f"{script} ended without finishing (exit code {proc.returncode}):\n"
                + "\n".join(last)
            )
        with open(stats) as f:
            result = json.load(f)
    if result["status"] != 0:
        detail: str = result.get("error") or proc.stderr.strip()
        tail = "\n".join(detail.strip().splitlines()[-8:]) if detail else ""
        raise ScriptError(f"{script} failed (exit status {result['status']}):\n{tail}")
    result["stdout"] = proc.stdout
    return result


def tune_script(
    script: str,
    args: Sequence[str] = (),
    repeat: int = 3,
    max_threads: int | None = None,
    modes: Sequence[str] = ("shared", "fixed"),
    timeout: float = 600.0,
    progress: bool = True,
) -> TuneResult:
    """Run `script` in a fresh process per run under each setting (the CLI)."""
    if not os.path.isfile(script):
        raise ScriptError(f"no such script: {script}")
    settings = grid(max_threads, modes)
    bar = _Progress(len(settings) * repeat + 1, progress)
    top = max(settings, key=lambda s: (s.interop * s.intra, s.mode == "shared"))
    facts = _run_script(script, args, top.env(), ["--profile"], timeout)
    facts["cpu_utilisation"] = facts["cpu_seconds"] / max(facts["seconds"], 1e-9)
    facts["profiled_intra"] = top.intra
    bar.step("profile")
    times: dict[Setting, list[float]] = {s: [] for s in settings}
    for _ in range(repeat):
        for s in settings:
            times[s].append(_run_script(script, args, s.env(), [], timeout)["seconds"])
            bar.step(s.label())
    shown = " ".join(shlex.quote(a) for a in [script, *args])
    return TuneResult(times, facts, workload=shown)
