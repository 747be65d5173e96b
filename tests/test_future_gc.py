"""A future's memory: a finished future that holds nothing a cycle can go
through is out of the cyclic GC, cycles through futures are still collected,
a future made from the free list's reused memory starts clean, and a long
chain of futures is freed without deep recursion.

A finished task letting go of its arguments: test_fork.py.
"""

import gc
import sys
import time

import numpy as np
import pytest
from _child import run_python

import forkwait as fw

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()


@pytest.mark.skipif(FREE_THREADED, reason="on a free-threaded CPython every Future stays "
                    "under the GC (its tracking bits have no lock of their own)")
def test_finished_future_holding_no_cycle_material_is_out_of_the_gc():
    """As CPython untracks tuples of atomic values: a done task whose result
    cannot close a cycle costs the collector nothing; one that can is tracked."""
    plain = [fw.fork(f) for f in (lambda: None, lambda: 3, lambda: np.ones(3))]
    fw.wait_all(plain)
    assert [gc.is_tracked(f) for f in plain] == [False, False, False]
    holding = [fw.fork(f) for f in (lambda: [1], lambda: {"a": []})]
    fw.wait_all(holding)
    assert [gc.is_tracked(f) for f in holding] == [True, True]
    failed = fw.fork(divmod, 1, 0)
    with pytest.raises(ZeroDivisionError):
        failed.wait()
    assert gc.is_tracked(failed)


def test_cycles_through_finished_futures_are_still_collected():
    import weakref

    class Box:
        pass

    # a result that refers back to its own future
    box = Box()
    fut = fw.fork(lambda b=box: b)
    box.fut = fut
    fut.wait()
    ref = weakref.ref(box)
    del box, fut
    gc.collect()
    assert ref() is None

    # an attribute the user sets on a done, untracked future
    done = fw.fork(abs, -1)
    done.wait()
    assert gc.is_tracked(done) is FREE_THREADED  # (always tracked there)
    other = Box()
    other.fut = done
    done.note = other
    assert gc.is_tracked(done)
    ref = weakref.ref(other)
    del other, done
    gc.collect()
    assert ref() is None


def test_futures_made_from_reused_memory_start_clean():
    """Future's memory is kept on a free list and reused: a future made from
    it is a new object in every way (no attribute, weak reference, GC state
    or outcome of the one that was there before), and subclasses, which do
    not use the list, live and die as usual."""
    import weakref

    class Box:
        pass

    class Sub(fw.Future):
        pass

    gc.collect()  # futures of earlier tests that only wait for a collection
    type_refs = sys.getrefcount(fw.Future), sys.getrefcount(Sub)
    for _round in range(3):
        # futures die with an attribute, a weak reference and an outcome each
        boxes, refs = [], []
        for i in range(300):
            fut = fw.fork(divmod, i, 7) if i % 3 else fw.Future()
            box = Box()
            fut.note = box
            boxes.append(weakref.ref(box))
            refs.append(weakref.ref(fut))
            if i % 3:
                assert fut.wait() == divmod(i, 7)
            else:
                fut.set_exception(ValueError(i))
                assert isinstance(fut.exception(), ValueError)
            sub = Sub()
            sub.extra = Box()
            boxes.append(weakref.ref(sub.extra))
            sub.set_result(i)
            assert sub.result() == i
            del fut, box, sub
        gc.collect()
        assert all(r() is None for r in boxes)  # their attributes went with them
        assert all(r() is None for r in refs)
        # new ones, from the same memory
        manual = [fw.Future() for _ in range(100)]
        forked = [fw.fork(abs, -i) for i in range(100)]
        assert all(gc.is_tracked(f) for f in manual)  # as any new GC object
        assert all(not f.done() and not hasattr(f, "note") for f in manual)
        assert all(f.__dict__ == {} for f in manual[:5])
        assert fw.wait_all(forked) == list(range(100))
        # as a done no-op's (on a free-threaded CPython every Future is tracked)
        assert [gc.is_tracked(f) for f in forked[:3]] == [FREE_THREADED] * 3
        assert all(type(f) is fw.Future for f in manual + forked)
        assert all(weakref.ref(f)() is f for f in manual[:5])
        for i, f in enumerate(manual):
            f.set_result(i)
        assert [f.result() for f in manual] == list(range(100))
        del manual, forked, f
    gc.collect()
    # each object holds one reference to its (heap) type, given back when it
    # dies: 1,800 futures came and went, and no reference stays (a worker
    # lets go of the last task it ran just after completing it, so wait a
    # little; fewer may stay: an earlier test's future that was let go of)
    # (counted outside the assert: pytest's rewrite of it holds one more)
    deadline = time.monotonic() + 10
    while sys.getrefcount(fw.Future) > type_refs[0] and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
    now = sys.getrefcount(fw.Future), sys.getrefcount(Sub)
    assert now[0] <= type_refs[0]
    assert now[1] == type_refs[1]


def test_a_long_chain_of_futures_dies_without_deep_recursion():
    """Future's own dealloc keeps CPython's trashcan: a chain of 300k futures,
    each holding the next (as attributes, or as forked tasks' results), is
    freed at the last reference without a C stack overflow."""
    proc = run_python(
        """
        import forkwait as fw
        for sub in (False, True):
            cls = type("Sub", (fw.Future,), {}) if sub else fw.Future
            head = cur = cls()
            for _ in range(300_000):
                cur.next = cls()
                cur = cur.next
            del head, cur
        prev = None
        for _ in range(300_000):
            f = fw.fork(lambda p: p, prev)   # its result: the future before it
            assert f.wait() is prev
            prev = f
        del prev, f
        print("freed")
        """,
        timeout=120,
    )
    assert proc.stdout.split() == ["freed"]
