"""The kernels' profiler hook (forkwait.ops._profiling._set_profiler): what a
hook object gets for each kernel family, by field name, and what stays
when it is removed."""

import threading

import numpy as np

import forkwait as fw
from forkwait._native import _elementwise
from forkwait._profile import KernelRecord
from forkwait.ops import _profiling


class Hook:
    def __init__(self):
        self.kernels = []

    def on_kernel(self, **fields):
        self.kernels.append(fields)


def test_each_kernel_family_passes_its_record_by_field_name():
    rng = np.random.default_rng(0)
    x = rng.random(1000)
    m = rng.random((30, 40))
    w = rng.random(40)
    hook = Hook()
    old = _profiling._set_profiler(hook)
    try:
        fw.ops.exp(x)  # unary
        fw.ops.add(x, x)  # binary
        fw.ops.mul(x, 2.0)  # with a scalar
        fw.ops.max(x)  # over all elements
        fw.ops.mean(m, axis=0)  # along an axis, divided
        fw.ops.max(m, axis=1)  # along an axis
        fw.ops.log_softmax(m)  # rows
        fw.ops.layer_norm(m, weight=w)
        fw.ops.matmul(m, m.T)
    finally:
        assert _profiling._set_profiler(old) is hook
    assert all(set(k) == set(KernelRecord._fields) for k in hook.kernels)
    assert [(k["op"], k["shape"], k["dtype"]) for k in hook.kernels] == [
        ("exp", (1000,), "float64"),
        ("add", (1000,), "float64"),
        ("mul", (1000,), "float64"),
        ("max", (1000,), "float64"),
        ("mean", (1, 30, 40), "float64"),
        ("max", (30, 40, 1), "float64"),
        ("log_softmax", (30, 40), "float64"),
        ("layer_norm", (30, 40), "float64"),
        ("matmul", (1, 30, 30, 40), "float64"),
    ]
    me = threading.get_ident()
    for k in hook.kernels:
        assert k["thread"] == me and k["task"] == 0 and k["team"] >= 1
        assert k["start"] <= k["end"]


def test_a_kernel_in_a_task_names_the_task():
    hook, tasks = Hook(), []

    class TaskHook:
        def on_task(self, **fields):
            tasks.append(fields)

        def on_wait(self, **fields):
            pass

    from forkwait._native import pool

    old_pool = pool._set_profiler(TaskHook())
    old = _profiling._set_profiler(hook)
    try:
        fw.wait(fw.fork(fw.ops.sqrt, np.ones(100)))
    finally:
        _profiling._set_profiler(old)
        pool._set_profiler(old_pool)
    (kernel,) = hook.kernels
    (task,) = tasks
    assert kernel["op"] == "sqrt" and kernel["task"] == task["id"] != 0
    assert kernel["thread"] == task["thread"]


def test_without_a_hook_the_plain_kernels_and_the_fast_path_are_back():
    x = np.ones(10)
    code = _elementwise.UNARY["sqrt"]
    old = _profiling._set_profiler(Hook())
    try:
        assert _elementwise.fast_unary(code, x, None, 1) is None  # the fast path is off
        assert any(f.table[dt] is not _profiling._PLAIN[kind][dt]
                   for kind, f in _profiling._FAMILIES.items() for dt in f.table)
    finally:
        _profiling._set_profiler(old)
    for kind, family in _profiling._FAMILIES.items():
        for dt, kernel in family.table.items():
            assert kernel is _profiling._PLAIN[kind][dt]
    assert _elementwise.fast_unary(code, x, None, 1) is not None
    with fw.profile() as prof:
        fw.ops.sqrt(x)
    assert [k.op for k in prof.kernels] == ["sqrt"]
    assert _profiling._hook is None
