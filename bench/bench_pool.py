"""pytest-benchmark suite for the inter-op pool, with its peers in one run.

    pytest bench/bench_pool.py --benchmark-only --benchmark-group-by=group

The ratio figures in docs/performance.md come from bench/pool_ratios.py,
which interleaves the same workloads round by round.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import workloads as w
from _harness import blas_threads

import forkwait as fw


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(2) as ex:
        yield ex


@pytest.fixture(scope="module", autouse=True)
def settings():
    saved = fw.get_num_interop_threads(), fw.get_num_threads()
    fw.set_num_interop_threads(2)
    fw.set_num_threads(1)
    with blas_threads(1):
        yield
    fw.set_num_interop_threads(saved[0])
    fw.set_num_threads(saved[1])


@pytest.mark.benchmark(group="round trip of a no-op")
def test_roundtrip_forkwait(benchmark):
    benchmark(lambda: fw.wait(fw.fork(w.noop)))


@pytest.mark.benchmark(group="round trip of a no-op")
def test_roundtrip_executor(benchmark, executor):
    benchmark(lambda: executor.submit(w.noop).result())


@pytest.mark.benchmark(group="10k no-ops, fork all then wait all")
def test_many_forkwait(benchmark):
    benchmark(lambda: fw.wait_all([fw.fork(w.noop) for _ in range(10_000)]))


@pytest.mark.benchmark(group="10k no-ops, fork all then wait all")
def test_many_executor(benchmark, executor):
    def run():
        for f in [executor.submit(w.noop) for _ in range(10_000)]:
            f.result()

    benchmark(run)


BRANCHES = {"matmul": w.matmul_branch, "tanh": w.tanh_branch, "membound": w.membound_branch}


def _peer(name, executor):
    if name == "serial":
        return w.serial
    if name == "forkwait":
        return w.forkwait_peer
    if name == "executor":
        return w.executor_peer(executor)
    run = w.torch_fork_peer()
    if run is None:
        pytest.skip("torch is not installed")
    return run


@pytest.mark.parametrize("workload", sorted(BRANCHES))
@pytest.mark.parametrize("peer", ["serial", "forkwait", "executor", "torch_eager"])
def test_two_branches(benchmark, executor, workload, peer):
    benchmark.group = f"two branches: {workload}"
    work = [BRANCHES[workload](seed=i) for i in range(2)]
    benchmark(_peer(peer, executor), work)


# ---------------------------------------------------------------- scheduler (issue 9)
# The ratio figures come from bench/sched_ratios.py; these are the same
# workloads under pytest-benchmark, peers side by side in one group.


def _fib_serial(n):
    return n if n < 2 else _fib_serial(n - 1) + _fib_serial(n - 2)


def _fib_fw(n):
    if n < 2:
        return n
    a, b = fw.fork(_fib_fw, n - 1), fw.fork(_fib_fw, n - 2)
    return fw.wait(a) + fw.wait(b)


@pytest.mark.benchmark(group="nested fib(18), pure-Python leaves")
def test_fib_serial(benchmark):
    benchmark(_fib_serial, 18)


@pytest.mark.benchmark(group="nested fib(18), pure-Python leaves")
def test_fib_forkwait(benchmark):
    benchmark(lambda: fw.wait(fw.fork(_fib_fw, 18)))


@pytest.mark.benchmark(group="4 threads x 10k no-ops at once")
def test_producers_forkwait(benchmark):
    import threading

    def one():
        fw.wait_all([fw.fork(w.noop) for _ in range(10_000)])

    def four():
        ts = [threading.Thread(target=one) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    benchmark(four)


@pytest.mark.benchmark(group="4 threads x 10k no-ops at once")
def test_producers_one_thread_40k(benchmark):
    benchmark(lambda: fw.wait_all([fw.fork(w.noop) for _ in range(40_000)]))
