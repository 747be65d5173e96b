"""PyTorch's intra-op threads in forked tasks: the torch budget (_fw_torch.h).

torch's count is read where torch reads it: ``torch.get_num_threads()`` in
the thread that runs the task (the OpenMP setting of that thread in torch's
libgomp, which ATen's parallel_for, MKL and oneDNN size their teams from).
The CPU count the budget divides is set by the tests (``_blas.set_torch_budget``),
never read from the machine.
"""

from __future__ import annotations

import threading
import time

import pytest
from _child import run_python

torch = pytest.importorskip("torch")

import forkwait as fw  # noqa: E402
from forkwait._native import _blas  # noqa: E402
from forkwait._threads import available_cpus  # noqa: E402

if not _blas.torch_state()["found"]:
    pytest.skip("this torch has no OpenMP of its own to budget", allow_module_level=True)

CAP = 3  # a count no default gives, so the cap and a restore are visible


def _mkl_max_threads():
    """torch's MKL's count in the calling thread, or None without MKL."""
    import ctypes
    import os

    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        fn = ctypes.CDLL(lib, mode=os.RTLD_NOLOAD).MKL_Get_Max_Threads
    except (OSError, AttributeError):
        return None
    return fn()


def counts():
    """torch's count and its MKL's (None without MKL) in the calling thread."""
    return torch.get_num_threads(), _mkl_max_threads()


@pytest.fixture
def cap():
    """torch at CAP threads in the main thread, the budget's switch and CPU
    count, and the pool's size put back afterwards."""
    was_threads = torch.get_num_threads()
    was_budget = fw.get_torch_budget()
    was_pool = fw.get_num_interop_threads()
    torch.set_num_threads(CAP)
    yield CAP
    fw.set_num_interop_threads(was_pool)
    _blas.set_torch_budget(was_budget, available_cpus())
    torch.set_num_threads(was_threads)


def budget(cpus: int) -> None:
    """The budget on, dividing `cpus` (not the machine's count)."""
    _blas.set_torch_budget(True, cpus)


def with_running(n: int, probe):
    """Run probe() as a forked task that begins while n - 1 other tasks run:
    the pool has exactly n - 1 threads, all blocked in running tasks, so the
    main thread's wait runs the probe itself (inline) and the budget counts
    n running. Returns the probe's value."""
    fw.set_num_interop_threads(max(1, n - 1))
    gate = threading.Event()
    blockers = [fw.fork(gate.wait, 20) for _ in range(n - 1)]
    deadline = time.monotonic() + 20
    while _blas.state()["running"] != n - 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert _blas.state()["running"] == n - 1
    try:
        return fw.fork(probe).wait(timeout=30)
    finally:
        gate.set()
        fw.wait_all(blockers, timeout=30)


def test_a_task_alone_runs_torchs_own_count(cap):
    budget(cpus=2)
    assert with_running(1, torch.get_num_threads) == CAP
    assert fw.fork(torch.get_num_threads).wait(timeout=30) == CAP  # on a pool thread too


def test_share_is_cpus_over_running_tasks(cap):
    budget(cpus=4)
    assert with_running(2, torch.get_num_threads) == 2
    assert with_running(3, torch.get_num_threads) == 1
    assert with_running(4, torch.get_num_threads) == 1
    budget(cpus=8)  # 8 // 2 = 4 > the cap: the cap holds
    assert with_running(2, torch.get_num_threads) == CAP
    assert with_running(4, torch.get_num_threads) == 2


def test_users_count_is_an_upper_bound(cap):
    budget(cpus=8)
    torch.set_num_threads(1)  # after pool threads took CAP into their own setting
    assert fw.fork(torch.get_num_threads).wait(timeout=30) == 1
    assert with_running(1, torch.get_num_threads) == 1
    assert with_running(2, torch.get_num_threads) == 1


def test_mkl_inside_torch_gets_the_same_share(cap):
    if _mkl_max_threads() is None:
        pytest.skip("this torch has no MKL")
    budget(cpus=4)
    assert with_running(3, counts) == (1, 1)  # MKL keeps torch.set_num_threads's count else
    assert with_running(2, counts) == (2, 2)
    assert with_running(1, counts) == (CAP, CAP)
    assert counts() == (CAP, CAP)  # put back in this thread


def test_the_threads_count_comes_back_after_the_task(cap):
    budget(cpus=4)
    changes = _blas.torch_state()["changes"]
    assert with_running(3, torch.get_num_threads) == 1  # inline, in this thread
    assert torch.get_num_threads() == CAP
    assert _blas.torch_state()["changes"] > changes


def test_budget_off_leaves_torch_alone(cap):
    _blas.set_torch_budget(False, 4)
    assert not fw.get_torch_budget()
    changes = _blas.torch_state()["changes"]
    assert with_running(3, torch.get_num_threads) == CAP  # inline, where the budget would apply
    # (no n = 1 case: alone, the task may run on a pool thread, whose count is
    # whatever torch's own lazy setting gave that thread, in an earlier test)
    assert _blas.torch_state()["changes"] == changes
    assert torch.get_num_threads() == CAP


def test_a_task_that_sets_its_own_count_keeps_it(cap):
    budget(cpus=4)

    def sets_two():
        torch.set_num_threads(2)
        return torch.get_num_threads()

    assert with_running(3, sets_two) == 2
    assert torch.get_num_threads() == 2  # torch's own rule: the calling thread's


def test_a_task_run_inline_by_its_waiting_parent_keeps_the_parents_share(cap):
    budget(cpus=8)

    def parent():
        inner = torch.get_num_threads()
        return inner, fw.fork(torch.get_num_threads).wait(timeout=30)

    # the child runs in its parent's thread, inside the parent's task: one
    # running thread still, at the share the parent began with
    assert with_running(4, parent) == (2, 2)


def test_forked_branches_give_serial_eager_results(cap):
    torch.manual_seed(0)
    branches = [torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 64), torch.nn.ReLU())
                for _ in range(4)]
    x = torch.randn(16, 64)
    with torch.inference_mode():
        serial = [b(x) for b in branches]
        for cpus in (1, 2, 8):
            budget(cpus)
            forked = fw.wait_all([fw.fork(b, x) for b in branches], timeout=60)
            for a, b in zip(forked, serial, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_public_switch_and_parallel_info(cap):
    fw.set_torch_budget(False)
    assert fw.get_torch_budget() is False
    assert "torch budget in forked tasks: off [set in code: set_torch_budget(False)]" in (
        fw.parallel_info())
    fw.set_torch_budget(True)
    assert fw.get_torch_budget() is True
    assert _blas.state()["cpus"] == available_cpus()
    info = fw.parallel_info()
    assert "torch budget in forked tasks: on" in info and "torch's libgomp:" in info
    with pytest.raises(TypeError, match="enabled must be a bool"):
        fw.set_torch_budget(1)  # type: ignore[arg-type]


def test_environment_switch_and_no_torch_import():
    out = run_python(
        "import sys, forkwait as fw\n"
        "assert 'torch' not in sys.modules\n"
        "fw.fork(sum, [1, 2]).wait()\n"
        "assert 'torch' not in sys.modules  # forkwait never imports torch\n"
        "print(fw.get_torch_budget())\n"
        "print([l for l in fw.parallel_info().splitlines() if 'torch budget' in l][0])\n",
        env={"FORKWAIT_TORCH_BUDGET": "0"},
    ).stdout
    assert "False" in out
    assert "off [environment: FORKWAIT_TORCH_BUDGET=0]; torch not imported" in out


def test_os_fork_child_runs_budgeted_branches():
    """A child made by os.fork() after forked torch branches ran in the
    parent's pool threads: its pool threads are new, its budget applies, its
    results match. (Neither main thread runs a torch team: a child whose
    parent did hangs in its first one, GCC bug 60035, with or without
    forkwait; the tasks are polled, not waited on, so the pool runs them.)"""
    script = """
import os, sys, time
import torch, forkwait as fw
from forkwait._native import _blas
from _child import reap
torch.manual_seed(0)
torch.set_num_threads(2)
lin = torch.nn.Linear(128, 128)
x = torch.randn(32, 128)
_blas.set_torch_budget(True, 4)
fw.set_num_interop_threads(2)

def branch():
    with torch.inference_mode():
        return lin(x), torch.get_num_threads()

def run(n):
    futs = [fw.fork(branch) for _ in range(n)]
    while not all(f.done() for f in futs):
        time.sleep(0.001)
    return [f.result() for f in futs]

want = run(1)[0][0]
assert all(torch.allclose(r, want) for r, _ in run(4))
pid = os.fork()
if pid == 0:
    got = run(4)
    ok = all(torch.allclose(r, want) for r, _ in got) and all(n in (1, 2) for _, n in got)
    os._exit(0 if ok and _blas.torch_state()["found"] else 1)
print("child", reap(pid, 60))
"""
    out = run_python(script, prelude=True).stdout
    assert "child 0" in out


def test_profiler_names_forked_modules_by_their_class():
    class Branch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.relu(self.lin(x))

    branch = Branch()
    scripted = torch.jit.script(branch)
    x = torch.randn(2, 8)
    with fw.profile() as prof:
        fw.wait_all([fw.fork(branch, x), fw.fork(scripted, x), fw.fork(branch.forward, x)])
    names = sorted(t.name for t in prof.tasks)
    assert names == sorted(["Branch", "Branch", Branch.forward.__qualname__])


def test_demo_torch_prints_rows_and_computed_sentences():
    from forkwait.cli._demo_torch import demo_torch

    lines = []
    times = demo_torch(batch=4, dim=16, rounds=5, out=lines.append)
    assert len(times) == 6 and all(len(ts) == 5 for ts in times.values())
    text = "\n".join(lines)
    assert "fork/wait, default" in text and "TorchScript with torch.jit.fork" in text
    assert "torch.jit.fork in the eager model" in text  # a sentence from the table's rows
