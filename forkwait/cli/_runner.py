"""The child process of ``tune`` and ``trace``: run a user's script once,
timed (only its marked region when it has one, or only a function it names),
optionally under forkwait.profile(), and write what happened as JSON:

    python -m forkwait.cli._runner STATS.json [--profile] [--trace T.json]
        [--png P.png] [--function NAME] -- SCRIPT ARGS...
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
from collections.abc import Callable


def _workload(script: str, function: str | None) -> Callable[[], object]:
    """What to time: the script as __main__, or (with `function`) the named
    function of the script, its module-level code run first, untimed, under
    a name that keeps ``if __name__ == "__main__":`` blocks off."""
    if function is None:
        def whole_script() -> None:
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as exc:  # sys.exit(0) is a normal end of the script
                if exc.code not in (0, None):
                    raise

        return whole_script
    namespace = runpy.run_path(script, run_name="__forkwait_tune__")
    fn = namespace.get(function)
    if not callable(fn):
        raise SystemExit(f"{script} defines no function {function!r} (--function)")
    return fn


def run(script: str, args: list[str], profile: bool, trace: str | None, png: str | None,
        function: str | None) -> dict:
    import forkwait as fw
    from forkwait._tune import profiled_run, timed_call

    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    out: dict = {"status": 0, "error": None}
    try:
        work = _workload(script, function)
        if profile:
            facts = profiled_run(work, fw.get_num_threads())
            prof = facts.pop("profile")
            out.update(facts)
        else:
            seconds, marked = timed_call(work)
            out["seconds"] = seconds
            out["timed"] = (f"the function {function}()" if function
                            else "the marked region" if marked else "the whole script")
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):
            out["status"], out["error"] = 1, code
        else:
            out["status"] = code if isinstance(code, int) else (0 if code is None else 1)
        profile = False
    except BaseException:  # noqa: BLE001 - reported to the parent
        out["status"] = 1
        out["error"] = traceback.format_exc()
        profile = False
    if profile:
        if trace:
            prof.export_chrome_trace(trace)
        if png:
            try:
                prof.plot_timeline(png)
            except ImportError as exc:  # no matplotlib: the message says what to install
                out["no_png"] = str(exc)
        out["summary"] = prof.summary()
    return out


def main(argv: list[str]) -> int:
    stats_path, rest = argv[0], argv[1:]
    profile = False
    trace = png = function = None
    while rest and rest[0] != "--":
        flag = rest.pop(0)
        if flag == "--profile":
            profile = True
        elif flag == "--trace":
            trace = rest.pop(0)
        elif flag == "--png":
            png = rest.pop(0)
        elif flag == "--function":
            function = rest.pop(0)
        else:
            raise SystemExit(f"unknown runner flag {flag}")
    rest = rest[1:]
    script, args = rest[0], rest[1:]
    result = run(script, args, bool(profile or trace or png), trace, png, function)
    sys.stdout.flush()
    with open(stats_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
