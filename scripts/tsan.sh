#!/usr/bin/env bash
# The race detector: ThreadSanitizer over the scheduler and future tests, on a
# free-threaded CPython 3.13 built with --with-thread-sanitizer (the GIL off,
# so that every race of forkwait's is a real one; docs/freethreading.md).
#
#   scripts/tsan.sh [pytest args...]      default: the scheduler and future tests
#
# Environment: FW_TSAN_PREFIX (the interpreter, default /opt/py313t-tsan: built
# here from the CPython source that scripts/build-freethreaded-python.sh fetched
# (FT_WORK, default /tmp/ft-cpython), with ./configure --disable-gil
# --with-thread-sanitizer; about 10 minutes on 2 cores), FW_TSAN_DIR (the clone of
# this checkout it builds forkwait in, default /tmp/fw-tsan).
#
# forkwait is built with -fsanitize=thread (FORKWAIT_SANITIZE=thread); NumPy and
# OpenBLAS come as wheels, not instrumented: reports whose every frame is in
# them, or in libgomp (whose barriers ThreadSanitizer cannot see), are
# suppressed (scripts/tsan.supp). What is left is written to
# $FW_TSAN_DIR/tsan-logs/ and the script fails when any report is there.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${FW_TSAN_PREFIX:-/opt/py313t-tsan}"
DIR="${FW_TSAN_DIR:-/tmp/fw-tsan}"
WORK="${FT_WORK:-/tmp/ft-cpython}"
PY="$PREFIX/bin/python3.13t"

if [ ! -x "$PY" ]; then
    bash "$SRC/scripts/build-freethreaded-python.sh" >/dev/null   # fetches the source
    tarball=$(ls "$WORK"/python3.13_*.orig.tar.xz | head -n 1)
    build="$(mktemp -d)"
    tar xf "$tarball" -C "$build"
    (cd "$build"/Python-* &&
        ./configure --disable-gil --with-thread-sanitizer --prefix="$PREFIX" \
            --with-ensurepip=install >"$build/configure.log" 2>&1 &&
        make -j"$(nproc)" >"$build/make.log" 2>&1 && make install >"$build/install.log" 2>&1)
fi

rm -rf "$DIR"
git clone -q "$SRC" "$DIR"
cd "$DIR"
"$PY" -m venv .venv-tsan
. .venv-tsan/bin/activate
pip install -q --prefer-binary numpy pytest hypothesis pytest-timeout setuptools "Cython>=3.1"
echo "== building forkwait with -fsanitize=thread in $DIR"
FORKWAIT_SANITIZE=thread python setup.py build_ext --inplace -j 2 >build.log 2>&1 ||
    { tail -40 build.log; exit 1; }
mkdir -p tsan-logs
rm -f tsan-logs/*
# ours, and CPython's own for its free-threaded build
cat "$SRC/scripts/tsan.supp" > tsan.supp
ls "$WORK"/Python-*/Tools/tsan/suppressions_free_threading.txt >/dev/null 2>&1 &&
    cat "$WORK"/Python-*/Tools/tsan/suppressions_free_threading.txt >> tsan.supp
export TSAN_OPTIONS="suppressions=$DIR/tsan.supp:halt_on_error=0:log_path=$DIR/tsan-logs/tsan:second_deadlock_stack=1"
export OMP_WAIT_POLICY=passive
status=0
if [ $# -eq 0 ]; then
    set -- -q -p no:cacheprovider tests/test_future.py tests/test_wait.py tests/test_wait_many.py \
        tests/test_fork.py tests/test_fork_gil_free.py tests/test_stdlib.py tests/test_scope.py \
        tests/test_executor.py tests/test_exceptions.py tests/test_pool_size.py \
        "tests/test_stress.py::test_threads_fork_wait_cancel_resize_pure_python_work_exactly_once"
fi
python -m pytest "$@" || status=$?
if ls tsan-logs/* >/dev/null 2>&1; then
    echo "== ThreadSanitizer reports: $(grep -h -c '^WARNING: ThreadSanitizer' tsan-logs/* | paste -sd+ | bc)"
    grep -h -A 12 '^WARNING: ThreadSanitizer' tsan-logs/* | head -200
    status=1
else
    echo "== no ThreadSanitizer report"
fi
exit $status
