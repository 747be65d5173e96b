"""``python -m forkwait tune``: run a script under a grid of thread settings,
in a fresh process per run, and advise a setting only when it wins beyond
the noise (the verdict is :class:`forkwait._tune.TuneResult`'s)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence

from forkwait._measure.timing import LoadWatch, Progress
from forkwait._tune import MIN_ROUNDS, TuneResult, grid, measure
from forkwait.cli._common import (
    CommandError,
    add_script_arguments,
    existing_script,
    positive_float,
    positive_int,
)
from forkwait.cli._script import run_script


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="run a script under a grid of thread settings; advise one only if it wins",
        description="Run SCRIPT (in a fresh process per run) under inter-op x intra-op "
        "thread counts and intra-op modes, interleaved round by round until the medians are "
        "stable or the time budget is spent. Print each setting's median, spread and "
        "speed-up with its 90% interval, and the machine's load; advise a setting only when "
        "it beats one thread beyond the noise, else say that none wins and why that may be; "
        "write a heatmap PNG. Only the script's marked region (with "
        "forkwait.tune_region():) is timed when it has one, or the function named by "
        "--function. The script's own output is not shown unless it fails.",
    )
    add_script_arguments(p, "tune")
    p.add_argument("--repeat", type=positive_int, default=MIN_ROUNDS,
                   help=f"the fewest rounds ({MIN_ROUNDS}: fewer cannot tell noise apart)")
    p.add_argument("--max-rounds", type=positive_int, default=20, help="the most rounds (20)")
    p.add_argument("--budget", type=positive_float, default=300.0,
                   help="seconds the timed rounds may take (300)")
    p.add_argument("--max-threads", type=positive_int, default=None,
                   help="largest thread count to try (default: the CPUs available)")
    p.add_argument("--modes", default="shared,fixed",
                   help="intra-op modes to try, comma-separated (shared,fixed)")
    p.add_argument("--function", default=None, metavar="NAME",
                   help="time only NAME() of the script (its module code runs first, untimed, "
                   "with __name__ != '__main__')")
    p.add_argument("--heatmap", default="forkwait-tune.png",
                   help="where to write the heatmap PNG (forkwait-tune.png; '' for none)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is only drawn when stderr is a terminal)")


def tune_script(
    script: str,
    args: Sequence[str] = (),
    repeat: int = MIN_ROUNDS,
    max_rounds: int = 20,
    budget: float = 300.0,
    max_threads: int | None = None,
    modes: Sequence[str] = ("shared", "fixed"),
    function: str | None = None,
    timeout: float = 600.0,
    progress: bool = True,
) -> TuneResult:
    """Run `script` in a fresh process per run under each setting."""
    script = existing_script(script)
    settings = grid(max_threads, modes)
    flags = ["--function", function] if function else []
    with Progress(len(settings) * max_rounds + 1, progress, "tune") as bar:
        top = max(settings, key=lambda s: (s.interop * s.intra, s.mode == "shared"))
        facts = run_script(script, args, top.env(), ["--profile", *flags], timeout)
        bar.step("profile")
        timed = ["the whole script"]

        def run_one(s):
            result = run_script(script, args, s.env(), flags, timeout)
            timed[0] = result["timed"]
            return result["seconds"]

        watch = LoadWatch()
        times, rounds = measure(settings, run_one, repeat, max(max_rounds, repeat), budget,
                                bar=bar)
        load = watch.stop()
    shown = " ".join(shlex.quote(a) for a in [script, *args])
    facts.pop("stdout", None)
    return TuneResult(times, facts, workload=shown, load=load, rounds=rounds, timed=timed[0])


def run(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        result = tune_script(
            args.script, args.args, repeat=args.repeat, max_rounds=args.max_rounds,
            budget=args.budget, max_threads=args.max_threads, modes=modes,
            function=args.function, timeout=args.timeout, progress=not args.no_progress,
        )
    except ValueError as exc:
        raise CommandError(f"error: {exc}", status=2) from None
    print(result)
    if args.heatmap:
        try:
            result.heatmap(args.heatmap)
            print(f"heatmap: {args.heatmap}")
        except ImportError as exc:
            print(f"(no heatmap: {exc})")
    return 0
