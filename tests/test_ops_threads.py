"""Thread behaviour of the kernels, checked with compiled probes, never timings.

The probe is the unary kernel's own parallel path (``PROBE_OP``): each element
receives ``omp_get_num_threads()`` as seen inside the kernel's prange.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from _child import run_python
from _pool_helpers import TIMEOUT

import forkwait as fw
from forkwait import ops
from forkwait._native import _elementwise, _team
from forkwait.ops._elementwise import GRAIN_MATH

BIG = np.zeros(1 << 20)
HAVE_OPENMP = _team.openmp_info()[0]
# the tests that need real teams; a serial build (no OpenMP) runs every kernel on
# one thread, which test_serial_build_runs_every_kernel_on_one_thread checks
needs_openmp = pytest.mark.skipif(not HAVE_OPENMP, reason="serial build (no OpenMP)")


def probe() -> int:
    out = np.empty_like(BIG)
    _elementwise.unary(_elementwise.PROBE_OP, BIG, out, GRAIN_MATH)
    assert np.all(out == out[0])
    return int(out[0])


@pytest.fixture(autouse=True)
def _restore_settings():
    n, mode, inter = fw.get_num_threads(), fw.get_intra_op_mode(), fw.get_num_interop_threads()
    budget = _team._get_cpu_budget()
    yield
    fw.set_num_threads(n)
    fw.set_intra_op_mode(mode)
    fw.set_num_interop_threads(inter)
    _team._set_cpu_budget(budget)


@needs_openmp
def test_set_num_threads_honoured_in_main_thread_and_workers():
    fw.set_intra_op_mode("fixed")
    for n in (1, 2, 3, 5):
        fw.set_num_threads(n)
        assert probe() == n
        assert fw.fork(probe).wait() == n
        assert _team._probe_team() == n


def test_small_arrays_run_serially():
    fw.set_intra_op_mode("fixed")
    fw.set_num_threads(4)
    x = np.zeros(100)
    out = np.empty_like(x)
    _elementwise.unary(_elementwise.PROBE_OP, x, out, GRAIN_MATH)
    assert out[0] == 1


@needs_openmp
def test_num_threads_context_is_per_thread_and_inherited():
    fw.set_intra_op_mode("fixed")
    fw.set_num_threads(3)
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other():
        inside.wait()
        seen["other"] = probe()
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with fw.num_threads(2):
        seen["main"] = probe()
        seen["forked"] = fw.fork(probe).wait()
        seen["nested"] = fw.fork(lambda: fw.fork(probe).wait()).wait()
        inside.set()
        release.wait()
    t.join()
    seen["after"] = probe()
    assert seen == {"main": 2, "forked": 2, "nested": 2, "other": 3, "after": 3}


@needs_openmp
def test_shared_mode_caps_team_by_free_cpus():
    fw.set_intra_op_mode("shared")
    _team._set_cpu_budget(3)
    fw.set_num_threads(2)
    held = {}
    ready, done = threading.Event(), threading.Event()

    def holder():
        held["team"] = _team._hold()
        ready.set()
        done.wait()
        _team._release(held["team"])

    t = threading.Thread(target=holder)
    t.start()
    ready.wait()
    try:
        assert held["team"] == 2
        assert probe() == 1  # one CPU left of three
    finally:
        done.set()
        t.join()
    assert probe() == 2
    fw.set_num_threads(8)
    assert probe() == 3  # never more than the CPU budget in shared mode


@needs_openmp
def test_shared_mode_without_free_cpus_runs_serially_or_waits():
    fw.set_intra_op_mode("shared")
    _team._set_cpu_budget(2)
    fw.set_num_threads(2)
    ready, done = threading.Event(), threading.Event()
    order = []

    def holder():
        team = _team._hold()
        ready.set()
        done.wait()
        order.append("released")
        _team._release(team)

    t = threading.Thread(target=holder)
    t.start()
    ready.wait()
    try:
        assert probe() == 1  # default: no free CPU -> the caller's thread alone, at once
        _team._set_shared_wait(True)
        fut = fw.fork(lambda: (probe(), order.append("kernel ran"))[0])
        deadline = time.monotonic() + 60
        while _team._team_waiting() == 0:  # the kernel blocks for a token...
            assert time.monotonic() < deadline, "the forked kernel never waited for a token"
            time.sleep(0.001)
        assert not fut.done() and order == []  # ...instead of running a 3rd thread
    finally:
        done.set()
    assert fut.wait() == 2
    _team._set_shared_wait(False)
    t.join()
    assert order == ["released", "kernel ran"]


def _branch(n_kernels, x):
    teams = []
    for _ in range(n_kernels):
        out = np.empty_like(x)
        _elementwise.unary(_elementwise.PROBE_OP, x, out, GRAIN_MATH)
        teams.append(int(out[0]))
        ops.exp(x, out=out)
    return teams


@needs_openmp
@pytest.mark.parametrize("mode", ["shared", "fixed"])
def test_concurrent_kernels_never_exceed_cpus_in_shared_mode(mode):
    fw.set_intra_op_mode(mode)
    fw.set_num_interop_threads(2)
    fw.set_num_threads(2)
    # a budget of 2 whatever the machine: two concurrent 2-thread teams would
    # hold 4, so "at most budget + 1" means something on 16 CPUs too
    budget = 2
    _team._set_cpu_budget(budget)
    x = np.random.default_rng(0).standard_normal(1 << 18)
    _team._busy_peak_reset()
    futs = [fw.fork(_branch, 30, x) for _ in range(2)]
    teams = [t for f in futs for t in f.wait()]
    peak = _team._get_busy_peak()
    assert all(1 <= t <= 2 for t in teams)
    if mode == "shared":
        # each kernel at least one thread: a kernel that starts while the other
        # holds every CPU adds its own thread only, never a team
        assert peak <= budget + 1
    else:
        assert all(t == 2 for t in teams)
        assert peak <= 4
    assert _team._busy_threads() == 0


def test_gil_released_while_a_forked_kernel_runs():
    x = np.random.default_rng(1).standard_normal(1 << 23)
    out = np.empty_like(x)
    started = threading.Event()
    ticked = threading.Event()
    calls = []

    def task():
        # kernels of milliseconds each, until the main thread has run Python
        # code meanwhile (on one CPU it may first wait for a time slice)
        deadline = time.monotonic() + TIMEOUT
        with fw.num_threads(1):
            started.set()
            while not ticked.is_set() and time.monotonic() < deadline:
                ops.exp(x, out=out)  # ~8M elements: milliseconds of nogil work
                calls.append(1)

    fut = fw.fork(task)
    started.wait()
    while not fut.done():
        ticked.set()  # Python code (which needs the GIL) while the task runs
    fut.wait()
    assert ticked.is_set() and calls


@pytest.mark.skipif(HAVE_OPENMP, reason="an OpenMP build")
def test_serial_build_runs_every_kernel_on_one_thread():
    fw.set_intra_op_mode("fixed")
    for n in (1, 2, 4):
        fw.set_num_threads(n)
        assert probe() == 1
        assert fw.fork(probe).wait() == 1
        assert _team._probe_team() == 1


def test_teams_balanced_after_errors():
    with pytest.raises(ValueError):
        ops.add(np.ones(3), np.ones(4))
    with pytest.raises(TypeError):
        ops.exp(np.ones(3, np.complex64))
    probe()
    assert _team._busy_threads() == 0


@pytest.mark.slow
def test_wait_policy_setting_in_subprocess():
    # OMP_WAIT_POLICY is read once, when libgomp starts: only a fresh process shows it
    code = (
        "import numpy as np, forkwait as fw; from forkwait import ops;"
        "x=np.ones(1<<20); print(float(ops.sum(ops.exp(x))))"
    )
    for policy in ("passive", "active"):
        r = run_python(code, env={"OMP_WAIT_POLICY": policy})
        assert float(r.stdout) == pytest.approx(np.e * (1 << 20))


def _chunked_results():
    """Kernels that deal their items out in chunks, on odd sizes (odd chunk
    counts, a partial last chunk)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(3 * 4096 * 5 + 17).astype(np.float32)
    rows = rng.standard_normal((67, 1031))
    return [ops.gelu(x), ops.tanh(x), ops.add(x, x[::-1].copy()),
            ops.layer_norm(rows), ops.softmax(rows)]


@needs_openmp
@pytest.mark.parametrize("dynamic", [False, True])
def test_chunked_kernels_same_bits_at_any_team_and_split(dynamic):
    # each thread takes its own share of chunks first, then helps with the
    # others' (_fw_split.h); schedule(dynamic) is the former rule, kept for
    # benchmarks: which thread computes a chunk never changes a value
    fw.set_intra_op_mode("fixed")  # teams of any size, whatever the CPU count
    fw.set_num_threads(1)
    ref = _chunked_results()
    old = _team._set_split_dynamic(dynamic)
    try:
        for n in (2, 3, 4, 7):
            fw.set_num_threads(n)
            for a, b in zip(_chunked_results(), ref, strict=True):
                np.testing.assert_array_equal(a, b)
            assert probe() == n
    finally:
        _team._set_split_dynamic(old)


@needs_openmp
def test_shares_of_threads_openmp_did_not_start_are_done_by_the_others():
    # OMP_THREAD_LIMIT=2: a team of 5 asked for gets 2 threads; the shares of
    # the 3 that do not exist are taken by those that do, once each
    code = """
        import numpy as np, forkwait as fw
        from forkwait import ops
        x = np.arange(5 * 4096 * 7 + 3, dtype=np.float64) / 1e4
        fw.set_intra_op_mode("fixed")
        fw.set_num_threads(1)
        ref = ops.sqrt(x)
        fw.set_num_threads(5)
        print(np.array_equal(ops.sqrt(x), ref), np.array_equal(ref, np.sqrt(x)))
    """
    r = run_python(code, env={"OMP_THREAD_LIMIT": "2"})
    assert r.stdout.split() == ["True", "True"]
