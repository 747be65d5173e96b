"""Instructions per fork+wait, counted by callgrind (independent of load).

    python bench/fork_instructions.py [DIR] [--k 18]

DIR holds a built ``forkwait`` package (default: the one Python imports). The
child runs ``fib(k)`` by fork/wait with one inter-op thread and, the same way,
the serial ``fib(k)``; callgrind counts only inside ``functools.reduce`` (each
is called through it: ``--toggle-collect``), on the main thread. The figure is
(forked - serial) / forks: forkwait's own cost of a fork and its wait, with
the cyclic GC left on as a user has it. The count of a build is the same
whatever else the machine does, so two builds compare in one line each.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

CHILD = r"""
import functools, sys, threading, time
import forkwait as fw
fw.set_num_interop_threads(1)
K = int(sys.argv[1])
MODE = sys.argv[2]
# The one worker is kept busy in a task that blocks (without the GIL) for the
# whole count, so every fork is run by the waiting main thread: the count is
# the inline fork+wait path, the same in every run (a worker taking some of
# the tasks would move their cost out of the counted thread, by chance).
gate = threading.Event()
held = fw.fork(gate.wait)
while not held.running():
    time.sleep(0.01)

def fib(k):
    if k < 2:
        return k
    a = fw.fork(fib, k - 1)
    b = fib(k - 2)
    return fw.wait(a) + b

def sfib(k):
    if k < 2:
        return k
    a = sfib(k - 1)
    b = sfib(k - 2)
    return a + b

fn = fib if MODE == "fork" else sfib
fn(K); fn(K)  # warm: the pool started, the free list filled
functools.reduce(lambda acc, _: acc + fn(K), [0], 0)
gate.set()
held.wait()
"""


def _forks(k: int) -> int:
    """fork calls made by fib(k): one per call with k >= 2."""
    return 0 if k < 2 else 1 + _forks(k - 1) + _forks(k - 2)


def _count(mode: str, k: int, pkg_dir: str | None) -> int:
    env = dict(os.environ)
    if pkg_dir:
        env["PYTHONPATH"] = os.path.abspath(pkg_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
             "--toggle-collect=functools_reduce", "--toggle-collect=*reduce*",
             sys.executable, "-c", CHILD, str(k), mode],
            env=env, check=True, capture_output=True, cwd="/",
        )
        total = 0
        for path in glob.glob(out + ".*"):
            with open(path) as f:
                for line in f:
                    m = re.match(r"summary:\s+(\d+)", line) or re.match(r"totals:\s+(\d+)", line)
                    if m:
                        total = max(total, int(m.group(1)))
        return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--k", type=int, default=18)
    args = ap.parse_args()
    forked = _count("fork", args.k, args.dir)
    serial = _count("serial", args.k, args.dir)
    n = _forks(args.k)
    print(f"fib({args.k}): {n} forks; forked {forked:,} serial {serial:,} instructions")
    print(f"instructions per fork+wait: {(forked - serial) / n:,.0f}")


if __name__ == "__main__":
    main()
