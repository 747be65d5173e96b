#!/bin/sh
# Every figure of docs/performance.md's "Compute-bound ops on the Intel Xeon
# machine (kernels v5)" in one run, 2-thread ones included: each part first
# waits (up to 30 minutes) for a quiet machine (1-minute load average below
# 0.5, or QUIET; 2 threads need both cores), and prints the load before and after every
# row. From the repository root, after the in-place build:
#   sh bench/kernels_v5_figures.sh 2>&1 | tee /tmp/kernels_v5.txt
set -e
cd "$(dirname "$0")/.."
R=${ROUNDS:-7}
Q=${QUIET:-0.5}
lscpu | grep -E "Model name|^CPU\(s\)|L2|L3|Flags" | cut -c1-200
echo "== the dispatched variant (avx512 here), 1 and 2 threads"
python bench/ops_ratios.py compute memory --rounds "$R" --wait-quiet "$Q"
echo "== the avx2 variant, torch as it dispatches (AVX-512 on an AVX-512 CPU)"
FORKWAIT_CPU_VARIANT=avx2 python bench/ops_ratios.py compute --rounds "$R" --wait-quiet "$Q"
echo "== the avx2 variant, torch's kernels and MKL at AVX2 too"
FORKWAIT_CPU_VARIANT=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
    python bench/ops_ratios.py compute --rounds "$R" --wait-quiet "$Q"
echo "== matmul, warm NumPy, 1 and 2 threads, 64-1024"
python bench/ops_ratios.py matmul --matmul-parts 1,2 --rounds "$R" --wait-quiet "$Q"
echo "== the loops alone, in C, every variant and MKL, in cache and 10^6 (1 thread)"
sh bench/kernel_loops.sh -- -n 8192 -r 11
sh bench/kernel_loops.sh -- -n 1000000 -r 11 -a 16
