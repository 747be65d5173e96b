#!/bin/sh
# Build bench/kernel_loops.c against this checkout's hot loops (every CPU
# variant) and, given another checkout's root, its loops too (as old_<variant>;
# only where both have the same fw_kernels table), then run it:
#   sh bench/kernel_loops.sh [other-checkout] [-- kernel_loops args]
# FW_KERNELS_ROOT=<checkout> builds the loops of that checkout instead of this
# one's (any table: a binary of its own; for callgrind counts of old code).
# MKL's vector math joins as a peer where torch is installed (FW_MKL_LIB).
set -e
HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${FW_KERNELS_ROOT:-$HERE}
OUT=${TMPDIR:-/tmp}/fw_kernel_loops_$(id -u)
mkdir -p "$OUT"
OTHER=
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OTHER=$1; shift; fi
[ "$1" = "--" ] && shift
B="-O3 -march=x86-64-v2 -ffp-contract=off -fno-strict-aliasing -Wno-psabi -Wno-unused-function"
V2="-mavx2 -mfma"
V512="-mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma"
build() { # root prefix
    gcc $B -I"$1/forkwait/_native" -c -DFW_VARIANT=$2baseline "$1/forkwait/_native/_fw_kernels.c" -o "$OUT/$2baseline.o"
    gcc $B $V2 -I"$1/forkwait/_native" -c -DFW_VARIANT=$2avx2 "$1/forkwait/_native/_fw_kernels.c" -o "$OUT/$2avx2.o"
    gcc $B $V512 -I"$1/forkwait/_native" -c -DFW_VARIANT=$2avx512 "$1/forkwait/_native/_fw_kernels.c" -o "$OUT/$2avx512.o"
}
rm -f "$OUT"/*.o
build "$ROOT" ""
[ -n "$OTHER" ] && build "$OTHER" old_
gcc $B -DFW_BUILT_AVX2 -DFW_BUILT_AVX512 -I"$ROOT/forkwait/_native" "$HERE/bench/kernel_loops.c" "$OUT"/*.o -o "$OUT/kernel_loops" -ldl -lm
if [ -z "$FW_MKL_LIB" ]; then
    T=$(python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" 2>/dev/null || true)
    if [ -n "$T" ] && [ -f "$T/libtorch_cpu.so" ]; then
        export FW_MKL_LIB="$T/libtorch_cpu.so" LD_LIBRARY_PATH="$T${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
fi
MKL_NUM_THREADS=1 exec "$OUT/kernel_loops" "$@"
