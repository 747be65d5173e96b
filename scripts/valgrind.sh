#!/usr/bin/env bash
# valgrind --tool=memcheck on part of the suite (default: fork, wait and
# futures, without the slow tests; slow: about 30x). Uses the normal
# in-place build.
#
#   scripts/valgrind.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(tests/test_fork.py tests/test_wait.py tests/test_wait_many.py
                             tests/test_future.py tests/test_exceptions.py -m "not slow" -q -x)
LOG="${FW_VALGRIND_LOG:-/tmp/fw-valgrind.log}"
PYTHONMALLOC=malloc OMP_WAIT_POLICY=passive valgrind --tool=memcheck \
    --error-exitcode=99 --errors-for-leak-kinds=none --leak-check=no \
    --track-origins=no --trace-children=no --log-file="$LOG" \
    "$PY" -m pytest -p no:cacheprovider -o timeout=3000 "${ARGS[@]}"
status=$?
grep -E "ERROR SUMMARY" "$LOG" | tail -1
exit $status
