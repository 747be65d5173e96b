"""``python -m forkwait trace``: run a script once under forkwait.profile()."""

from __future__ import annotations

import argparse
import sys

from forkwait.cli._common import add_script_arguments, existing_script


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace",
        help="run a script under forkwait.profile() and write a Chrome/Perfetto trace",
        description="Run SCRIPT once under forkwait.profile(), write its trace (open it in "
        "https://ui.perfetto.dev or chrome://tracing), and print the script's output and the "
        "profile summary.",
    )
    add_script_arguments(p, "trace")
    p.add_argument("-o", "--output", default="forkwait-trace.json",
                   help="trace file (forkwait-trace.json)")
    p.add_argument("--png", default=None, help="also write a timeline PNG here")


def run(args: argparse.Namespace) -> int:
    from forkwait.cli._script import run_script

    script = existing_script(args.script)
    flags = ["--trace", args.output] + (["--png", args.png] if args.png else [])
    result = run_script(script, args.args, {}, flags, args.timeout)
    sys.stdout.write(result["stdout"])
    print(result["summary"])
    print(f"trace: {args.output} (open it in https://ui.perfetto.dev or chrome://tracing)")
    if args.png:
        missing = result.get("no_png")
        print(f"(no timeline: {missing})" if missing else f"timeline: {args.png}")
    return 0
