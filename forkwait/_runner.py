"""Run a user's script once, timed, optionally under forkwait.profile(), and
write what happened as JSON. Used by ``python -m forkwait tune`` and
``python -m forkwait trace`` in a child process:

    python -m forkwait._runner STATS.json [--profile] [--trace T.json] [--png P.png] SCRIPT ARGS...
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback


def blas_threads() -> int:
    """The most threads any BLAS library loaded in this process will use
    (threadpoolctl; 0 when it is not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 0
    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=0)


def profile_facts(prof) -> dict:
    """What tune's advice needs from a profile (and from this process)."""
    teams = [k.team for k in prof.kernels]
    sizes = [_prod(k.shape) for k in prof.kernels]
    threads_with_tasks = {t.thread for t in prof.tasks}
    return {
        "tasks": len(prof.tasks),
        "task_threads": len(threads_with_tasks),
        "task_seconds": sum(t.end - t.start for t in prof.tasks),
        "kernels": len(prof.kernels),
        "kernel_max_team": max(teams, default=0),
        "kernel_max_size": max(sizes, default=0),
        "kernel_seconds": sum(k.end - k.start for k in prof.kernels),
        "blas_threads": blas_threads(),
    }


def settle() -> None:
    """Let thread pools that spin after start-up (OpenBLAS does, for about
    0.1 s after NumPy's import) go idle, so that CPU use measured next is the
    workload's own."""
    time.sleep(0.3)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def run(script: str, args: list[str], profile: bool, trace: str | None, png: str | None) -> dict:
    import forkwait as fw

    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    facts: dict = {}
    status = 0
    error = None
    if profile:
        settle()
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        if profile:
            with fw.profile() as prof:
                runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001 - reported to the parent
        status = 1
        error = traceback.format_exc()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if profile:
        facts = profile_facts(prof)
        if trace:
            prof.export_chrome_trace(trace)
        if png:
            prof.plot_timeline(png)
        facts["summary"] = prof.summary()
    return {"status": status, "error": error, "seconds": wall, "cpu_seconds": cpu, **facts}


def main(argv: list[str]) -> int:
    stats_path = argv[0]
    rest = argv[1:]
    profile = trace = png = None
    while rest and rest[0].startswith("--"):
        flag = rest.pop(0)
        if flag == "--profile":
            profile = True
        elif flag == "--trace":
            trace = rest.pop(0)
        elif flag == "--png":
            png = rest.pop(0)
        else:
            raise SystemExit(f"unknown runner flag {flag}")
    script, args = rest[0], rest[1:]
    result = run(script, args, bool(profile or trace or png), trace, png)
    sys.stdout.flush()
    with open(stats_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
