"""forkwait.profile(): task, wait and kernel records (with parents, names,
threads), the profiler hook, the Chrome trace's structure and nesting, the
summary and the timeline PNG."""

import json
import sys
import threading
import time
from collections import defaultdict

import numpy as np
import pytest
from _pool_helpers import TIMEOUT, fib, wait_running

import forkwait as fw


def _check_nesting(events):
    """Slices ('X') on one track must nest: none may end inside another that
    it started within but outlive it (Perfetto rejects that)."""
    by_tid = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            by_tid[e["tid"]].append((e["ts"], -e["dur"], e["name"]))
    for tid, slices in by_tid.items():
        stack = []
        for ts, neg_dur, name in sorted(slices):
            end = ts - neg_dur
            while stack and stack[-1][0] <= ts:
                stack.pop()
            if stack:
                assert end <= stack[-1][0], f"tid {tid}: {name} overlaps {stack[-1][1]} unnested"
            stack.append((end, name))


@pytest.mark.parametrize("n_interop", [1, 2])
def test_profile_records_tasks_with_parents(interop, n_interop, tmp_path):
    interop(n_interop)
    with fw.profile() as prof:
        assert fib(8) == 21
    # fib(8) forks 2 * (number of inner calls) tasks
    assert len(prof.tasks) == 66
    ids = {t.id for t in prof.tasks}
    assert len(ids) == 66
    top = [t for t in prof.tasks if t.parent == 0]
    assert len(top) == 2  # the two forks made by the main program
    assert all(t.parent in ids for t in prof.tasks if t.parent)
    for t in prof.tasks:
        assert t.name == "fib"
        assert t.fork_time <= t.start <= t.end
        assert t.outcome == "finished"
        assert t.thread in prof.thread_names

    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert "MainThread" in names.values() or all(
        n.startswith("forkwait-interop-") for n in names.values()
    )
    task_slices = [e for e in events if e.get("cat") == "task"]
    assert len(task_slices) == 66
    for e in task_slices:
        assert e["tid"] in names and e["dur"] >= 0 and e["ts"] >= 0
    starts = {e["id"] for e in events if e["ph"] == "s"}
    finishes = {e["id"] for e in events if e["ph"] == "f"}
    assert starts == finishes == ids
    _check_nesting(events)


def test_profile_records_failures_and_waits(tmp_path):
    gate = threading.Event()

    def slow():
        gate.wait(30)
        return 1

    with fw.profile() as prof:
        f = fw.fork(slow)
        bad = fw.fork(int, "x")
        while not f.running() and not f.done():
            pass
        t = threading.Timer(0.05, gate.set)
        t.start()
        assert fw.wait(f) == 1
        with pytest.raises(ValueError):
            fw.wait(bad)
    t.join()
    outcomes = sorted(r.outcome for r in prof.tasks)
    assert outcomes == ["failed", "finished"]
    slow_id = next(r.id for r in prof.tasks if r.name.endswith("<locals>.slow"))
    assert any(w.task == slow_id for w in prof.waits)
    _check_nesting(prof.chrome_trace()["traceEvents"])


def test_profile_off_records_nothing_and_one_at_a_time():
    with fw.profile() as prof:
        pass
    fw.wait(fw.fork(abs, 1))
    assert prof.tasks == []
    with fw.profile():
        with pytest.raises(RuntimeError, match="already recording"):
            with fw.profile():
                pass
    # recording stopped cleanly after the error
    with fw.profile() as again:
        fw.wait(fw.fork(abs, 2))
    assert len(again.tasks) == 1


def test_summary_table():
    with fw.profile() as prof:
        fw.wait_all([fw.fork(sum, range(1000)) for _ in range(5)])
    text = prof.summary()
    assert "forkwait profile:" in text
    assert "times in ms" in text and "includes the tasks and kernels nested in it" in text
    header = next(line for line in text.splitlines() if line.startswith("kind"))
    assert header.split() == ["kind", "name", "count", "total", "self", "mean"]
    row = next(line for line in text.splitlines() if line.startswith("task") and "sum" in line)
    assert row.split()[2] == "5"
    assert "thread busy fraction (in tasks or kernels, from the first one on):" in text
    fractions = prof.busy_fraction()
    assert fractions and all(0.0 <= v <= 1.0 for v in fractions.values())


def test_self_time_excludes_nested_children(interop):
    interop(1)
    with fw.profile() as prof:
        fib(7)
    total = sum(t.end - t.start for t in prof.tasks)
    own = prof.self_times()[("task", "fib")]
    # nested tasks run inside their parents' time: the total counts them twice
    assert 0.0 < own < total
    # own time on a thread can never exceed the recording
    assert own <= prof.duration * len({t.thread for t in prof.tasks}) + 1e-9


def test_hook_gets_each_record_by_field_name():
    from forkwait._native import pool
    from forkwait._profile import TaskRecord, WaitRecord

    class Hook:
        def __init__(self):
            self.tasks, self.waits = [], []

        def on_task(self, **fields):
            self.tasks.append((fields, threading.current_thread().ident))

        def on_wait(self, **fields):
            self.waits.append(fields)

    hook = Hook()
    gate = threading.Event()
    old = pool._set_profiler(hook)
    try:
        f = fw.fork(gate.wait, 30)
        while not f.running() and not f.done():
            pass
        threading.Timer(0.02, gate.set).start()
        fw.wait(f)
    finally:
        assert pool._set_profiler(old) is hook
    assert [set(fields) for fields, _ in hook.tasks] == [set(TaskRecord._fields)]
    fields, ran_in = hook.tasks[0]
    assert fields["thread"] == ran_in  # called in the thread that ran the task
    assert fields["outcome"] == "finished" and fields["name"].endswith("wait")
    assert hook.waits and all(set(w) == set(WaitRecord._fields) for w in hook.waits)


def test_worker_keeps_its_name_after_the_pool_shrinks(interop):
    interop(3)
    barrier = threading.Barrier(3)

    def meet():
        barrier.wait(30)
        return threading.current_thread().name

    with fw.profile() as prof:
        names = fw.wait_all([fw.fork(meet) for _ in range(3)])
        fw.set_num_interop_threads(1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(
            t.name.startswith("forkwait-interop-") for t in threading.enumerate()
        ) > 1:
            time.sleep(0.01)
    alive = {t.ident for t in threading.enumerate()}
    gone = [t for t in prof.tasks if t.thread not in alive]
    assert gone, "no task ran on a worker that exited"
    for t in prof.tasks:
        assert prof.thread_names[t.thread] in names
        assert not prof.thread_names[t.thread].startswith("thread-")


def test_plot_timeline_writes_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    x = np.random.default_rng(0).random(100_000)
    with fw.profile() as prof:
        fib(6)
        fw.wait_all([fw.fork(fw.ops.exp, x) for _ in range(2)])
    path = tmp_path / "timeline.png"
    prof.plot_timeline(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # made without pyplot: the user's backend and figures are left alone
    assert matplotlib.get_backend() == backend
    plt = sys.modules.get("matplotlib.pyplot")
    assert plt is None or not plt.get_fignums()


def test_profile_records_kernel_calls_with_team(intra):
    np = pytest.importorskip("numpy")
    intra(2)
    x = np.random.default_rng(0).random((300, 400))
    with fw.profile() as prof:
        fw.ops.exp(x)
        fut = fw.fork(fw.ops.softmax, x)
        fw.wait(fut)
        fw.ops.sum(x, axis=1)
        with fw.num_threads(1):
            fw.ops.tanh(x)
    ops = [(k.op, k.shape, k.dtype) for k in prof.kernels]
    assert ops == [
        ("exp", (120000,), "float64"),
        ("softmax", (300, 400), "float64"),
        ("sum", (300, 400, 1), "float64"),
        ("tanh", (120000,), "float64"),
    ]
    teams = [k.team for k in prof.kernels]
    assert teams[-1] == 1 and all(1 <= t <= 2 for t in teams)
    softmax = prof.kernels[1]
    task = next(t for t in prof.tasks if t.id == softmax.task)
    assert task.thread == softmax.thread and task.start <= softmax.start <= softmax.end <= task.end
    _check_nesting(prof.chrome_trace()["traceEvents"])
    # recording off again: the plain kernels are back
    fw.ops.exp(x)
    assert len(prof.kernels) == 4


class Proxy:
    def __call__(self):
        return 42

    def __getattr__(self, name):
        raise RuntimeError(f"remote attribute {name} unavailable")


def test_callable_whose_getattr_raises_runs_under_the_profiler(interop):
    interop(1)
    gate = threading.Event()
    blocker = fw.fork(gate.wait, TIMEOUT)
    wait_running(blocker)
    with fw.profile() as prof:
        f = fw.fork(Proxy())
        assert fw.wait(f) == 42
        assert "Proxy" in repr(f) or f.done()
    gate.set()
    assert f.done() and not f.running()
    assert [t.name for t in prof.tasks if t.outcome == "finished"]


# -- a profile of chosen records: the busy fractions and the timeline start at the work --


def _made_profile(kernels=False, waits=False):
    """A finished profile of 10 s whose only work is its last second: one task
    on a worker, and (optionally) a kernel in it and a wait in the main thread."""
    from forkwait._profile import KernelRecord, Profile, TaskRecord, WaitRecord

    prof = Profile()
    prof.start, prof.end = 100.0, 110.0
    prof._thread_names.update({1: "MainThread", 2: "forkwait-interop-0"})
    prof._rec.tasks.append(TaskRecord(id=7, parent=0, name="work", fork_time=109.0,
                                      fork_thread=1, start=109.0, end=110.0, thread=2,
                                      wait_time=0.0, outcome="finished"))
    if kernels:
        prof._rec.kernels.append(KernelRecord(op="exp", shape=(10,), dtype="float64", team=1,
                                              start=109.5, end=110.0, thread=2, task=7))
    if waits:
        prof._rec.waits.append(WaitRecord(task=7, start=109.0, end=110.0, thread=1))
    return prof


def test_busy_fractions_start_at_the_first_task_or_kernel():
    # the 9 s of set-up before the first fork are not idle time of the worker
    assert _made_profile().busy_fraction() == {"forkwait-interop-0": 1.0}
    lines = _made_profile().summary().splitlines()
    assert "thread busy fraction (in tasks or kernels, from the first one on):" in lines
    assert "forkwait-interop-0 100.0%" in [" ".join(line.split()) for line in lines]


def test_timeline_starts_at_the_work_and_its_legend_lists_only_what_is_drawn(
        tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from forkwait._measure import plots

    made = []
    figure = plots.figure
    monkeypatch.setattr(plots, "figure", lambda **kw: made.append(figure(**kw)) or made[-1])

    def drawn(prof):
        prof.plot_timeline(tmp_path / "t.png")
        ax = made[-1].axes[0]
        return ax.get_xlim(), [t.get_text() for t in ax.get_legend().get_texts()]

    xlim, labels = drawn(_made_profile())
    assert xlim == (0.0, 1000.0)  # ms from the first task to the end
    assert labels == ["work"]  # no kernel ran, no wait: no band, no legend entry
    _, labels = drawn(_made_profile(kernels=True, waits=True))
    assert labels == ["work", "forkwait.ops kernel", "inside wait() (it may run tasks meanwhile)"]
