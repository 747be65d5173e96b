#!/usr/bin/env bash
# Build forkwait's native code with AddressSanitizer + UndefinedBehaviorSanitizer
# in a separate clone and run the test suite under it (docs/reliability.md).
#
#   scripts/sanitize.sh [pytest args...]       e.g. scripts/sanitize.sh -x -q
#
# Environment: FW_SAN_DIR (the clone, default /tmp/fw-san), FW_SAN_SRC (what to
# clone, default this checkout; committed files only, plus the working tree's
# changes when FW_SAN_WORKTREE=1), FORKWAIT_SANITIZE (default address,undefined).
# PYTHON (default python3): an interpreter with the test extra installed
# (pip install -e ".[test]", e.g. the checkout's .venv/bin/python); the clone's
# forkwait comes first on its path.
#
# CPython itself is not instrumented, so the ASan runtime is preloaded, leak
# detection is off (CPython keeps memory until exit on purpose) and ASan's
# own report goes to a log per process under $FW_SAN_DIR/asan-logs. The script
# fails when a test fails or when any log holds an ASan or UBSan report.
set -euo pipefail
SRC="${FW_SAN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}"
DIR="${FW_SAN_DIR:-/tmp/fw-san}"
SAN="${FORKWAIT_SANITIZE:-address,undefined}"
PY="${PYTHON:-python3}"

rm -rf "$DIR"
git clone -q "$SRC" "$DIR"
if [ "${FW_SAN_WORKTREE:-0}" = 1 ]; then
    # the uncommitted changes too (tracked and untracked, not ignored files)
    (cd "$SRC" && git ls-files -mo --exclude-standard -z) |
        (cd "$SRC" && xargs -0 -r cp --parents -t "$DIR")
fi
cd "$DIR"
echo "== building with -fsanitize=$SAN in $DIR"
FORKWAIT_SANITIZE="$SAN" FORKWAIT_PORTABLE=1 "$PY" setup.py build_ext --inplace -j 2 >build.log 2>&1 ||
    { tail -40 build.log; exit 1; }
grep -l -- "-fsanitize=$SAN" build.log >/dev/null || { echo "sanitizer flags missing"; exit 1; }

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
PRELOAD="$ASAN_LIB"
case "$SAN" in *undefined*) PRELOAD="$ASAN_LIB:$UBSAN_LIB" ;; esac
mkdir -p asan-logs
rm -f asan-logs/*

export LD_PRELOAD="$PRELOAD"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_init_order=1:check_initialization_order=1:detect_stack_use_after_return=0:log_path=$DIR/asan-logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$DIR/asan-logs/ubsan"
export PYTHONMALLOC=malloc          # every Python allocation goes through ASan
export OMP_WAIT_POLICY=passive      # spinning OpenMP threads are slow under ASan
status=0
"$PY" -m pytest tests -p no:cacheprovider "$@" || status=$?
unset LD_PRELOAD
if ls asan-logs/* >/dev/null 2>&1; then
    echo "== sanitizer reports:"
    head -60 asan-logs/*
    status=1
else
    echo "== no ASan/UBSan report"
fi
exit $status
