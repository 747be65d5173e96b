"""Load and concurrency: many Python threads forking and waiting at once;
memory stays flat over many fork/wait pairs and no thread leaks; 8 threads
fork, wait, add callbacks and cancel while the settings change (every future
ends exactly once); kernels from many threads with varying team sizes.

The slow tests' CI sizes keep the whole suite within its budget on a 2-core
machine; ``FORKWAIT_STRESS=long`` runs the full sizes (one million pairs,
...). Each prints a ``FIGURES`` line (run with ``-s`` to see it); the last
figures are in docs/reliability.md. Hypothesis fuzzing of the ops:
test_ops_fuzz.py.
"""

import concurrent.futures
import gc
import os
import random
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest
from _pool_helpers import fib, until

import forkwait as fw
from forkwait._native import _team, pool

LONG = os.environ.get("FORKWAIT_STRESS", "").strip().lower() == "long"
TIMEOUT = 120
MB = 1024 * 1024
RSS_BUDGET = 20 * MB
# Under AddressSanitizer (scripts/sanitize.sh) freed memory sits in ASan's
# quarantine, so RSS is not a leak measure there: only the rest is checked.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def os_threads():
    """Threads of this process as the OS sees them (OpenMP's included)."""
    return len(os.listdir("/proc/self/task"))


def settle():
    gc.collect()
    time.sleep(0.05)
    gc.collect()


def figures(name, **values):
    print(f"\nFIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def ident(x):
    return x


def fails(x):
    raise ValueError(x)


# ---------------------------------------------------------------- many threads at once


def test_many_threads_fork_and_wait_at_once(interop):
    interop(2)
    errors = []
    results = {}

    def client(k):
        try:
            futs = [fw.fork(pow, k, i) for i in range(400)]
            got = fw.wait_all(futs)
            nested = fw.wait(fw.fork(fib, 10))
            results[k] = (got == [k**i for i in range(400)], nested == 55)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert results == {k: (True, True) for k in range(8)}


# ---------------------------------------------------------------- one million pairs


@pytest.mark.slow
def test_many_fork_wait_pairs_memory_stays_flat(interop):
    """Fork/wait pairs of every kind (inline, batched, in workers, failing,
    with callbacks, nested): RSS after warm-up grows by less than 20 MB,
    the process ends with the threads it had."""
    interop(2)
    total = 1_000_000 if LONG else 200_000
    warmup = total // 10
    hits = [0]

    def cb(_):
        hits[0] += 1

    def nested(i):
        return fw.wait(fw.fork(ident, i))

    def chunk(start, n):
        i = start
        end = start + n
        while i < end:
            k = i % 100
            if k < 60:  # a pair waited at once (runs inline)
                assert fw.wait(fw.fork(ident, i)) == i
                i += 1
            elif k < 90:  # a batch of 8, shared with the workers
                futs = [fw.fork(ident, i + j) for j in range(8)]
                assert fw.wait_all(futs) == list(range(i, i + 8))
                i += 8
            elif k < 94:  # through a worker (result with a timeout never runs inline)
                assert fw.fork(ident, i).result(timeout=TIMEOUT) == i
                i += 1
            elif k < 97:  # a failure, retrieved
                f = fw.fork(fails, i)
                assert isinstance(f.exception(timeout=TIMEOUT), ValueError)
                i += 1
            elif k < 99:  # a callback and a then() chain
                f = fw.fork(ident, i)
                f.add_done_callback(cb)
                assert f.then(lambda g: g.value() + 1).wait() == i + 1
                i += 1
            else:  # a pair inside a pair
                assert fw.wait(fw.fork(nested, i)) == i
                i += 2  # two tasks

    done0 = pool._stats()["completed"]
    chunk(0, warmup)
    settle()
    rss0, threads0, pythreads0 = rss_bytes(), os_threads(), threading.active_count()
    chunk(warmup, total - warmup)
    settle()
    rss1, threads1, pythreads1 = rss_bytes(), os_threads(), threading.active_count()
    tasks = pool._stats()["completed"] - done0
    figures(
        "pairs", tasks=tasks, rss_after_warmup_mb=round(rss0 / MB, 1),
        rss_growth_mb=round((rss1 - rss0) / MB, 2), os_threads=f"{threads0}->{threads1}",
        callbacks=hits[0],
    )
    assert tasks >= total
    assert SANITIZED or rss1 - rss0 < RSS_BUDGET
    assert threads1 <= threads0 and pythreads1 <= pythreads0
    assert pool._stats()["running"] == 0 and pool._stats()["queued"] == 0


# ---------------------------------------------------------------- chaos


@pytest.mark.slow
def _run_clients(client, resizer, stop, errors, n=8):
    """Run `n` client threads (client(c) for c in range(n)) while `resizer`
    changes settings until `stop` is set; every client ended, none failed."""
    rt = threading.Thread(target=resizer)
    rt.start()
    clients = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(TIMEOUT * 4)
    stop.set()
    rt.join(TIMEOUT)
    assert not errors, errors
    assert not any(t.is_alive() for t in clients)


def test_threads_fork_wait_callback_cancel_while_settings_change(interop, intra, client):
    """8 threads fork, wait, add callbacks and cancel at once while another
    thread resizes both thread settings: every future ends exactly once (one
    callback call each), every task body runs exactly once unless its future
    was cancelled, then never; nothing crashes or hangs. In the mix: waits
    through concurrent.futures.wait (odd threads), GIL-free kernel forks
    (each batch), and cluster forks (thread 0, in a fw.backend block on the
    session's Dask LocalCluster), each checked by its value."""
    dask_client = client  # (the name `client` is taken below by each thread's loop)
    rounds = 1000 if LONG else 100
    batch = 40
    lock = threading.Lock()
    ran = {}          # token -> times the task body ran
    called = {}       # token -> times the done-callback ran
    outcome = {}      # token -> "value" | "cancelled" | "error"
    errors = []
    stop = threading.Event()

    def body(token, kind):
        with lock:
            ran[token] = ran.get(token, 0) + 1
        if kind == 1:
            return fw.wait(fw.fork(ident, token))  # nested
        if kind == 2:
            time.sleep(0.0005)  # let others overtake it
        if kind == 3:
            raise KeyError(token)
        if kind == 4:
            _team._probe_team(1 << 12)  # an OpenMP team of the current size
        return token

    def on_done(token):
        def cb(_):
            with lock:
                called[token] = called.get(token, 0) + 1
        return cb

    x = np.linspace(-1.0, 1.0, 4096)
    exp_x = np.exp(x)
    cluster_values = []

    def client(c):
        rng = random.Random(c)
        try:
            for r in range(rounds):
                futs = []
                for j in range(batch):
                    token = (c, r, j)
                    f = fw.fork(body, token, rng.randrange(5))
                    f.add_done_callback(on_done(token))
                    futs.append((token, f))
                kernels = [fw.fork(fw.ops.exp, x) for _ in range(2)]  # GIL-free tasks
                remote = None
                if c == 0 and r % 4 == 0:
                    with fw.backend(dask_client):
                        remote = fw.fork(ident, ("cluster", r))
                for _token, f in rng.sample(futs, batch // 4):
                    f.cancel()
                if c % 2:
                    every = [f for _t, f in futs] + kernels
                    done, not_done = concurrent.futures.wait(every, timeout=TIMEOUT)
                    assert not not_done and len(done) == len(every)
                for k in kernels:
                    np.testing.assert_allclose(fw.wait(k), exp_x, rtol=1e-6)
                if remote is not None:
                    with lock:
                        cluster_values.append(remote.result(timeout=TIMEOUT))
                for token, f in futs:
                    try:
                        v = fw.wait(f)
                    except CancelledError:
                        res = "cancelled"
                    except KeyError:
                        res = "error"
                    else:
                        assert v == token
                        res = "value"
                    with lock:
                        assert token not in outcome
                        outcome[token] = res
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def resizer():
        rng = random.Random(99)
        while not stop.is_set():
            fw.set_num_interop_threads(rng.randint(1, 4))
            fw.set_num_threads(rng.randint(1, 3))
            time.sleep(0.0005)

    with fw.backend(dask_client):  # the backend's own threads start here, not below
        assert fw.fork(ident, 0).result(timeout=TIMEOUT) == 0
    threads_before = threading.active_count()
    _run_clients(client, resizer, stop, errors)
    n = 8 * rounds * batch
    assert len(outcome) == n
    assert until(lambda: len(called) == n, TIMEOUT)
    with lock:
        assert set(called.values()) == {1}
        cancelled = {t for t, o in outcome.items() if o == "cancelled"}
        assert all(ran.get(t, 0) == 0 for t in cancelled)
        assert all(ran[t] == 1 for t in outcome if t not in cancelled)
    assert sorted(cluster_values) == [("cluster", r) for r in range(0, rounds, 4)]
    figures("chaos", futures=n, cancelled=len(cancelled),
            errors=sum(o == "error" for o in outcome.values()),
            cluster_forks=len(cluster_values))
    fw.set_num_interop_threads(2)
    assert fw.wait_all([fw.fork(ident, i) for i in range(100)]) == list(range(100))
    assert until(lambda: threading.active_count() <= threads_before + 2, TIMEOUT)


# ---------------------------------------------------------------- pure Python at once


def test_threads_fork_wait_cancel_resize_pure_python_work_exactly_once(interop):
    """Made for the free-threaded CPython (where it is true concurrency, no
    GIL in between; it runs on every build): 8 threads fork pure-Python work
    (loops, nested fork/wait trees, failures), cancel some of it and wait
    through wait, wait_all, as_completed and concurrent.futures.wait, while
    another thread resizes the pool. Every task body runs exactly once
    unless its future was cancelled first (then never), every future ends
    with the outcome its body gave, and nothing hangs."""
    rounds = 200 if LONG else 40
    batch = 24
    lock = threading.Lock()
    ran = {}
    never = set()     # tokens whose futures were cancelled before they started
    errors = []
    stop = threading.Event()

    def body(token, kind):
        with lock:
            ran[token] = ran.get(token, 0) + 1
        if kind == 0:
            s = 0
            for i in range(2000):
                s += i * i
            return token
        if kind == 1:
            return fib(9) and token  # a nested fork/wait tree
        if kind == 2:
            raise KeyError(token)
        return fw.wait(fw.fork(ident, token))

    def client(c):
        rng = random.Random(c)
        try:
            for r in range(rounds):
                kinds = [rng.randrange(4) for _ in range(batch)]
                futs = [fw.fork(body, (c, r, j), kinds[j]) for j in range(batch)]
                cancelled = {j for j in rng.sample(range(batch), batch // 4)
                             if futs[j].cancel()}
                how = rng.randrange(4)
                if how == 1:
                    try:
                        fw.wait_all([f for j, f in enumerate(futs) if j not in cancelled])
                    except KeyError:
                        pass
                elif how == 2:
                    list(fw.as_completed(futs, timeout=TIMEOUT))
                elif how == 3:
                    _, not_done = concurrent.futures.wait(futs, timeout=TIMEOUT)
                    assert not not_done
                for j, f in enumerate(futs):
                    token = (c, r, j)
                    if j in cancelled:
                        assert f.cancelled()
                        with lock:
                            never.add(token)
                        continue
                    if kinds[j] == 2:
                        assert isinstance(f.exception(timeout=TIMEOUT), KeyError)
                    else:
                        assert f.result(timeout=TIMEOUT) == token
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def resizer():
        rng = random.Random(7)
        while not stop.is_set():
            fw.set_num_interop_threads(rng.randint(1, 4))
            time.sleep(0.001)

    _run_clients(client, resizer, stop, errors)
    with lock:
        done = dict(ran)
    everything = {(c, r, j) for c in range(8) for r in range(rounds) for j in range(batch)}
    assert set(done) == everything - never  # each ran unless cancelled first...
    assert set(done.values()) == {1}        # ...and once
    figures("pure-python", threads=8, tasks=len(everything), ran=len(done),
            gil="on" if getattr(__import__("sys"), "_is_gil_enabled", lambda: True)() else "off")


# ---------------------------------------------------------------- kernels


def _kernel_calls():
    """The kernels a thread calls: the probe, and forkwait.ops where present."""
    calls = [lambda: _team._probe_team(1 << 16)]
    ops = getattr(fw, "ops", None)
    if ops is not None:
        x = np.linspace(-2.0, 2.0, 1 << 16)
        m = np.ones((64, 64))
        for name, args in (("exp", (x,)), ("tanh", (x,)), ("sum", (x,)),
                           ("softmax", (m,)), ("matmul", (m, m))):
            fn = getattr(ops, name, None)
            if fn is not None:
                calls.append(lambda fn=fn, args=args: fn(*args))
    return calls


@pytest.mark.slow
def test_kernels_from_many_threads_with_varying_team_sizes_do_not_leak(intra):
    """Fresh threads and pool tasks run kernels with team sizes 1..4 (fixed
    mode, so the size really varies; PyTorch met a libgomp leak this way):
    RSS after warm-up grows by less than 20 MB and OpenMP threads do not
    pile up."""
    rounds = 2000 if LONG else 300
    calls = _kernel_calls()
    old_mode = fw.get_intra_op_mode()
    fw.set_intra_op_mode("fixed")
    errors = []

    def worker(k):
        try:
            with fw.num_threads(1 + k % 4):
                for call in calls:
                    call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def one_round(k):
        t = threading.Thread(target=worker, args=(k,))
        t.start()
        with fw.num_threads(1 + (k + 1) % 4):
            futs = [fw.fork(call) for call in calls]
        fw.wait_all(futs)
        t.join(TIMEOUT)

    try:
        warm = rounds // 10
        for k in range(warm):
            one_round(k)
        settle()
        rss0, threads0 = rss_bytes(), os_threads()
        peak_threads = threads0
        for k in range(warm, rounds):
            one_round(k)
            if k % 50 == 0:
                peak_threads = max(peak_threads, os_threads())
        settle()
        rss1, threads1 = rss_bytes(), os_threads()
    finally:
        fw.set_intra_op_mode(old_mode)
    figures("kernels", rounds=rounds, kernels_per_round=2 * len(calls),
            rss_growth_mb=round((rss1 - rss0) / MB, 2),
            os_threads=f"{threads0}->{threads1} (peak {peak_threads})")
    assert not errors, errors
    assert SANITIZED or rss1 - rss0 < RSS_BUDGET
    assert threads1 <= threads0 + 4  # pool workers' OpenMP teams may grow to 4
