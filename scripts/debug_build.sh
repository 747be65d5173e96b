#!/usr/bin/env bash
# Build forkwait with Cython's bounds, wraparound and initialisation checks on
# (FORKWAIT_DEBUG=1: -O0 -g) in a separate clone, and run the whole suite.
#
#   scripts/debug_build.sh [pytest args...]
#
# FW_DEBUG_DIR (default /tmp/fw-debug), FW_DEBUG_SRC (default this checkout),
# FW_DEBUG_WORKTREE=1 to include uncommitted changes.
# PYTHON (default python3): an interpreter with the test extra installed
# (pip install -e ".[test]", e.g. the checkout's .venv/bin/python); the clone's
# forkwait comes first on its path.
set -euo pipefail
SRC="${FW_DEBUG_SRC:-$(cd "$(dirname "$0")/.." && pwd)}"
DIR="${FW_DEBUG_DIR:-/tmp/fw-debug}"
PY="${PYTHON:-python3}"
rm -rf "$DIR"
git clone -q "$SRC" "$DIR"
if [ "${FW_DEBUG_WORKTREE:-0}" = 1 ]; then
    (cd "$SRC" && git ls-files -mo --exclude-standard -z) |
        (cd "$SRC" && xargs -0 -r cp --parents -t "$DIR")
fi
cd "$DIR"
echo "== building with FORKWAIT_DEBUG=1 in $DIR"
FORKWAIT_DEBUG=1 "$PY" setup.py build_ext --inplace -j 2 >build.log 2>&1 ||
    { tail -40 build.log; exit 1; }
# the generated C must have the checks: Cython writes the directives into it
grep -q "boundscheck=True\|__Pyx_RaiseBufferIndexError" forkwait/_native/*.c ||
    echo "warning: no bounds-check code found in the generated C" >&2
"$PY" -m pytest tests -p no:cacheprovider "$@"
