"""The command line: ``python -m forkwait {demo,info,bench,tune,trace}``."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m forkwait",
        description="forkwait: inter-op (fork/wait) and intra-op (OpenMP) parallelism.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "demo",
        help="time a multi-branch workload serially, forked, and with several thread settings",
        description="Run a small multi-branch workload (matmul + tanh chains) serially and "
        "with fork/wait under several thread settings, and print times and speed-ups.",
    )
    p.add_argument("--branches", type=_positive_int, default=4, help="independent branches (4)")
    p.add_argument("--size", type=_positive_int, default=256, help="matrix size (256)")
    p.add_argument("--steps", type=_positive_int, default=12, help="ops per branch (12)")
    p.add_argument("--rounds", type=_positive_int, default=5, help="timed rounds (5)")

    sub.add_parser(
        "info",
        help="print forkwait.parallel_info()",
        description="Print the thread settings, OpenMP build, environment and thread pools.",
    )

    p = sub.add_parser(
        "bench",
        help="a short comparison with concurrent.futures, NumPy, numexpr and torch",
        description="Measure fork/wait overhead against concurrent.futures (and eager "
        "torch.jit.fork), and a few kernels against NumPy, numexpr and torch at 1 and all "
        "threads; print ratios (peers interleaved in one process, medians).",
    )
    p.add_argument("--rounds", type=_positive_int, default=7, help="timed rounds (7)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "tune",
        help="run a script under a grid of thread settings and name the best one",
        description="Run SCRIPT (in a fresh process per run) under inter-op x intra-op "
        "thread counts and intra-op modes, print median times and speed-ups, name the best "
        "setting and how to apply it, explain why a knob did or did not matter, and write "
        "a heatmap PNG. The script's own output is not shown unless it fails.",
    )
    p.add_argument("script", help="the Python script to tune")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.add_argument("--repeat", type=_positive_int, default=3, help="runs per setting (3)")
    p.add_argument("--max-threads", type=_positive_int, default=None,
                   help="largest thread count to try (default: the CPUs available)")
    p.add_argument("--modes", default="shared,fixed",
                   help="intra-op modes to try, comma-separated (shared,fixed)")
    p.add_argument("--timeout", type=_positive_float, default=600.0,
                   help="seconds one run of the script may take (600)")
    p.add_argument("--heatmap", default="forkwait-tune.png",
                   help="where to write the heatmap PNG (forkwait-tune.png; '' for none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "trace",
        help="run a script under forkwait.profile() and write a Chrome/Perfetto trace",
        description="Run SCRIPT once under forkwait.profile(), write its trace (open it in "
        "https://ui.perfetto.dev or chrome://tracing), and print the profile summary.",
    )
    p.add_argument("script", help="the Python script to trace")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.add_argument("-o", "--output", default="forkwait-trace.json",
                   help="trace file (forkwait-trace.json)")
    p.add_argument("--png", default=None, help="also write a timeline PNG here")
    p.add_argument("--timeout", type=_positive_float, default=600.0,
                   help="seconds the script may take (600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from forkwait._demo import demo

        demo(branches=args.branches, size=args.size, steps=args.steps, rounds=args.rounds)
    elif args.command == "info":
        import forkwait

        print(forkwait.parallel_info())
    elif args.command == "bench":
        from forkwait._bench import main as bench_main

        return bench_main(rounds=args.rounds, as_json=args.json)
    elif args.command == "tune":
        from forkwait._tune import ScriptError, tune_script

        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        try:
            result = tune_script(
                args.script, args.args, repeat=args.repeat, max_threads=args.max_threads,
                modes=modes, timeout=args.timeout, progress=not args.no_progress,
            )
        except (ScriptError, ValueError) as exc:
            parser.exit(1, f"python -m forkwait tune: {exc}\n")
        print(result)
        if args.heatmap:
            try:
                result.heatmap(args.heatmap)
                print(f"heatmap: {args.heatmap}")
            except ImportError as exc:
                print(f"(no heatmap: {exc})")
    elif args.command == "trace":
        from forkwait._tune import ScriptError, _run_script

        flags = ["--trace", args.output] + (["--png", args.png] if args.png else [])
        try:
            run = _run_script(args.script, args.args, {}, flags, args.timeout)
        except ScriptError as exc:
            parser.exit(1, f"python -m forkwait trace: {exc}\n")
        sys.stdout.write(run["stdout"])
        print(run["summary"])
        print(f"trace: {args.output} (open it in https://ui.perfetto.dev or chrome://tracing)")
        if args.png:
            print(f"timeline: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
