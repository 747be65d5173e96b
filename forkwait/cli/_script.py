"""Run a user's script in a fresh child process (``forkwait.cli._runner``)
and read back what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from forkwait.cli._common import CommandError


class ScriptError(CommandError):
    """The script failed or timed out (exit status 1)."""


def run_script(
    script: str, args: Sequence[str], env: dict[str, str], flags: Sequence[str], timeout: float
) -> dict[str, Any]:
    """Run `script` once with `env` added to the environment; the runner's
    JSON record plus the script's standard output as ``stdout``."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = os.path.join(tmp, "stats.json")
        cmd = [sys.executable, "-m", "forkwait.cli._runner", stats, *flags, "--", script, *args]
        try:
            proc = subprocess.run(
                cmd, env={**os.environ, **env}, capture_output=True, text=True,
                timeout=timeout, stdin=subprocess.DEVNULL,
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
            result: dict[str, Any] = json.load(f)
    if result["status"] != 0:
        detail: str = result.get("error") or proc.stderr.strip()
        tail = "\n".join(detail.strip().splitlines()[-8:]) if detail else ""
        raise ScriptError(f"{script} failed (exit status {result['status']}):\n{tail}")
    result["stdout"] = proc.stdout
    return result
