"""fw.backend(client): forks on a real Dask distributed cluster (no mocks).

One LocalCluster for the session: 2 worker processes of 1 thread each, on
the loopback, no dashboard. The fault tests kill worker processes by pid;
the scheduler-loss test runs its own scheduler and worker processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import forkwait as fw  # noqa: E402
from forkwait import _dask  # noqa: E402
from forkwait._native import _team  # noqa: E402
from forkwait._threads import available_cpus  # noqa: E402

TIMEOUT = 60  # seconds; a hang fails the test instead of the suite


# ----------------------------------------------------------------- helpers
# Module-level, so that workers import them by reference.

def inc(x):
    return x + 1


def where():
    return os.getpid(), threading.current_thread().name


def boom(msg):
    raise KeyError(msg)


def raise_cancelled(msg):
    raise cf.CancelledError(msg)


def is_future_with(x):
    return type(x) is fw.Future and x.done(), fw.wait(x)


def add_futures(a, b):
    return fw.wait(a) + fw.wait(b)


def total(items, table):
    return sum(fw.wait(f) for f in items) + fw.wait(table["k"])


def settings():
    return {
        "cpus": available_cpus(),
        "interop": fw.get_num_interop_threads(),
        "intra": fw.get_num_threads(),
        "budget": _team._get_cpu_budget(),
        "team": _team._probe_team(),
        "plugin": dict(_dask.worker_settings),
        "omp_env": os.environ.get("OMP_NUM_THREADS"),
    }


def local_children(n):
    """Forks inside a cluster task: they run on the worker's local pool."""
    futs = [fw.fork(where) for _ in range(n)]
    return os.getpid(), fw.wait_all(futs)


def cluster_tree(depth):
    """Each level forks two children on the cluster and waits on them."""
    if depth == 0:
        return 1
    with fw.backend("dask"):
        futs = [fw.fork(cluster_tree, depth - 1) for _ in range(2)]
        return 1 + sum(fw.wait_all(futs))


def slow_sleep(seconds):
    time.sleep(seconds)
    return seconds


def run_once_then_hang(marker, value):
    """First run: write this worker's pid and hang (the test kills it);
    a rerun finds the marker and returns."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(marker) as f:
        runs = len(f.read().split())
    if runs == 1:
        time.sleep(TIMEOUT)
    return value, runs


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def give_lock():
    return threading.Lock()


class Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self):
        return 1


# ------------------------------------------------------------------ fixtures

# (the `cluster` and `client` fixtures live in conftest.py: test_stress.py uses
# them too)


def worker_pids(client):
    return set(client.run(os.getpid).values())


# --------------------------------------------------------------------- API

def test_fork_in_the_block_runs_on_the_cluster_and_returns_a_forkwait_future(client):
    with fw.backend(client):
        f = fw.fork(where)
        g = fw.fork(inc, 41)
    assert type(f) is fw.Future
    pid, thread = f.result(timeout=TIMEOUT)
    assert pid in worker_pids(client) and pid != os.getpid()
    assert g.wait() == 42 and g.value() == 42 and g.done() and g.exception() is None
    assert not g.cancelled()


def test_outside_the_block_other_threads_and_tasks_stay_local(client):
    assert fw.fork(where).wait()[0] == os.getpid()
    from_thread = []
    with fw.backend(client):
        t = threading.Thread(target=lambda: from_thread.append(fw.fork(where).wait()))
        t.start()
        t.join(TIMEOUT)
        inner = fw.fork(where)
    assert from_thread[0][0] == os.getpid()
    assert inner.result(timeout=TIMEOUT)[0] != os.getpid()
    assert fw.fork(where).wait()[0] == os.getpid()


def parent_forks():
    return fw.fork(where).wait()[0]


def test_forks_of_tasks_stay_on_the_machine_that_runs_the_task(client):
    with fw.backend(client):
        on_cluster = fw.fork(local_children, 3)
    pid, children = on_cluster.result(timeout=TIMEOUT)
    assert pid in worker_pids(client)
    assert {c[0] for c in children} == {pid}  # the worker's own local pool
    local = fw.fork(parent_forks)  # a local task, forked before the block
    with fw.backend(client):
        # run inline by this waiter or by a pool thread: its fork stays local
        assert local.wait() == os.getpid()


def test_callbacks_then_collect_all_wait_all_and_await(client):
    seen = []
    with fw.backend(client):
        futs = [fw.fork(inc, i) for i in range(5)]
        chained = futs[0].then(lambda f: f.value() * 10)
        futs[1].add_done_callback(lambda f: seen.append(f.value()))
        both = fw.collect_all(futs)
    assert [f.value() for f in both.result(timeout=TIMEOUT)] == [1, 2, 3, 4, 5]
    assert fw.wait_all(futs) == [1, 2, 3, 4, 5]
    assert chained.result(timeout=TIMEOUT) == 10
    assert seen == [2]

    async def main():
        with fw.backend(client):
            f = fw.fork(inc, 9)
        return await f

    assert asyncio.run(main()) == 10


def test_a_blocking_callback_does_not_hold_up_other_completions(client):
    with fw.backend(client):
        slow = fw.fork(slow_sleep, 0.5)
        first = fw.fork(inc, 1)
        # runs in a completion thread and blocks there until `slow` is done
        chained = first.then(lambda f: f.value() + slow.wait())
    assert chained.result(timeout=TIMEOUT) == 2.5


def test_exception_keeps_its_type_and_the_remote_traceback(client):
    import traceback

    with fw.backend(client):
        f = fw.fork(boom, "remote")
    with pytest.raises(KeyError, match="remote") as info:
        f.result(timeout=TIMEOUT)
    frames = [fr.name for fr in traceback.extract_tb(info.value.__traceback__)]
    assert "boom" in frames
    assert isinstance(f.exception(), KeyError)


def test_a_tasks_own_cancelled_error_arrives_as_itself(client):
    # As locally: the function's CancelledError (raised, or from a wait on a
    # cancelled future) is the fork's failure, not the cluster's cancellation
    # or a closed event loop; the fork itself is failed, not cancelled.
    dep = fw.Future()
    dep.cancel()
    with fw.backend(client):
        own = fw.fork(raise_cancelled, "the task's own")
        waits = fw.fork(fw.wait, dep)
    for f in (own, waits):
        exc = f.exception(timeout=TIMEOUT)
        assert type(exc) is cf.CancelledError, repr(exc)
        assert not f.cancelled()
    assert str(own.exception()) == "the task's own"
    with pytest.raises(cf.CancelledError):
        waits.result(timeout=0)


def test_which_cancellation_a_failure_is_follows_the_dask_status():
    # Whose CancelledError it is, by the Dask future's status when it came:
    # "error" the task's own; "cancelled" the cluster's; otherwise (the
    # watching coroutine was cancelled) the client's event loop closed.
    from forkwait._dask._complete import _explain_failure

    own = cf.CancelledError("mine")
    assert _explain_failure(own, "k-1", "f", "error") is own
    for status in ("pending", None):
        closed = _explain_failure(asyncio.CancelledError(), "k-1", "f", status)
        assert type(closed) is RuntimeError and "event loop closed" in str(closed)
    for exc in (cf.CancelledError(), cf.CancelledError("k-1")):  # older distributed
        by_cluster = _explain_failure(exc, "k-1", "f", "cancelled")
        assert type(by_cluster) is RuntimeError and "cluster cancelled" in str(by_cluster)
    older = _explain_failure(cf.CancelledError("k-1"), "k-1", "f", None)
    assert "cluster cancelled" in str(older)


def test_futures_as_arguments_become_dependencies(client):
    with fw.backend(client):
        a = fw.fork(inc, 1)
        b = fw.fork(inc, 10)
        c = fw.fork(add_futures, a, b)
        got = fw.fork(is_future_with, a)
        nested = fw.fork(total, [a, (b,)], {"k": c})
    assert c.result(timeout=TIMEOUT) == 13
    assert got.result(timeout=TIMEOUT) == (True, 2)
    # lists, tuples and dicts are looked into; (b,) is a tuple inside a list
    with pytest.raises(TypeError):
        nested.result(timeout=TIMEOUT)  # fw.wait((b,)): a tuple is not a future
    with fw.backend(client):
        nested = fw.fork(total, [a, b], {"k": c})
    assert nested.result(timeout=TIMEOUT) == 2 + 11 + 13
    # the dependency is a Dask dependency: the scheduler knows the edge
    dep_keys = client.run_on_scheduler(
        lambda dask_scheduler, key: sorted(
            d.key for d in dask_scheduler.tasks[key].dependencies),
        key=_dask._dask_of[c].key,
    )
    assert dep_keys == sorted([_dask._dask_of[a].key, _dask._dask_of[b].key])


def test_local_futures_as_arguments(client):
    done_local = fw.fork(inc, 1)
    done_local.wait()
    pending = fw.Future()
    with fw.backend(client):
        f = fw.fork(add_futures, done_local, pending)  # submitted once `pending` is done
    time.sleep(0.1)
    assert not f.done()
    pending.set_result(40)
    assert f.result(timeout=TIMEOUT) == 42
    failed = fw.Future()
    failed.set_exception(ValueError("local failure"))
    with fw.backend(client):
        g = fw.fork(fw.wait, failed)
    with pytest.raises(ValueError, match="local failure"):
        g.result(timeout=TIMEOUT)


def test_a_pending_local_argument_that_fails_is_reported_only_to_the_cluster_fork(
        client, caplog):
    # forkwait waits for the pending argument with a collection of its own; its
    # failure goes to the cluster fork (whose waiter retrieves it), and the
    # collection never reports "nobody retrieved its exception".
    gc.collect()
    with caplog.at_level(logging.ERROR, logger="forkwait"):
        with fw.backend(client):
            loc = fw.Future()
            f = fw.fork(fw.wait, loc)
        loc.set_exception(ValueError("dep failed"))
        with pytest.raises(ValueError, match="dep failed"):
            f.result(timeout=TIMEOUT)
        with pytest.raises(ValueError, match="dep failed"):
            loc.result()
        del f, loc
        gc.collect()
        fw._native.pool._flush_unretrieved()
    assert [r.getMessage() for r in caplog.records if r.name == "forkwait"] == []


def test_a_dropped_cluster_fork_releases_its_dask_key(client):
    # Once it is done, nothing but the forkwait future keeps the Dask future
    # (and so the value on the cluster) alive: no cycle that waits for the GC.
    with fw.backend(client):
        f = fw.fork(inc, 1)
    assert f.result(timeout=TIMEOUT) == 2
    key = _dask._dask_of[f].key
    assert key in client.futures
    gc.disable()
    try:
        del f
        deadline = time.monotonic() + TIMEOUT
        while key in client.futures and time.monotonic() < deadline:
            time.sleep(0.02)
        assert key not in client.futures
    finally:
        gc.enable()


def test_forks_are_not_pure(client):
    with fw.backend(client):
        a, b = fw.fork(uuid.uuid4), fw.fork(uuid.uuid4)
    assert a.result(timeout=TIMEOUT) != b.result(timeout=TIMEOUT)
    assert _dask._dask_of[a].key != _dask._dask_of[b].key


def test_cancel_propagates_to_dask(client):
    with fw.backend(client):
        blockers = [fw.fork(slow_sleep, 1.0) for _ in range(2)]
        f = fw.fork(inc, 1)  # queued behind the blockers
    dfut = _dask._dask_of[f]
    assert f.cancel() and f.cancelled()
    deadline = time.monotonic() + TIMEOUT
    while dfut.status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dfut.status == "cancelled"
    assert fw.wait_all(blockers) == [1.0, 1.0]
    assert f.cancelled()  # the cluster's outcome never overwrote it


def test_backend_arguments(client):
    with pytest.raises(TypeError, match="distributed.Client"):
        fw.backend(42)
    with pytest.raises(ValueError, match="dask"):
        fw.backend("ray")
    be = fw.backend("dask")  # the default client: the session's
    with be:
        assert be.client is distributed.get_client()
        assert fw.fork(where).result(timeout=TIMEOUT)[0] in worker_pids(client)
    with fw.backend(client), fw.backend(client):  # nested
        assert fw.fork(inc, 1).result(timeout=TIMEOUT) == 2
    assert fw.fork(where).wait()[0] == os.getpid()


# ------------------------------------------------------- inside cluster tasks

def test_settings_inside_a_task_follow_the_worker(client):
    with fw.backend(client):
        got = fw.fork(settings).result(timeout=TIMEOUT)
    # 2 workers of 1 thread on this host share its CPUs
    cpus = got["cpus"]
    share = max(1, cpus * 1 // 2)
    assert got["plugin"]["worker_cpus"] == share
    assert got["interop"] == share
    assert got["intra"] == share  # 1 thread per worker: the task gets the whole share
    assert got["budget"] == share
    assert got["team"] == share  # what a kernel would start, checked by the probe
    assert _dask._share(2, 2, 2) == (2, 1)  # one worker of 2 threads on 2 cores
    assert _dask._share(16, 4, 8) == (8, 2)  # two 4-thread workers on 16 cores
    assert _dask._share(1, 1, 2) == (1, 1)


def test_nested_forks_inside_a_cluster_task_run_on_its_worker(client):
    with fw.backend(client):
        pid, children = fw.fork(local_children, 4).result(timeout=TIMEOUT)
    assert {c[0] for c in children} == {pid}


def test_nested_cluster_waits_secede_instead_of_deadlocking(client):
    # 1 + 2 + 4 tasks on 2 worker threads: each waiting parent secedes
    with fw.backend(client):
        f = fw.fork(cluster_tree, 2)
    assert f.result(timeout=TIMEOUT) == 7


# ------------------------------------------------------------------- faults

class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_unpicklable_argument_or_function_fails_at_fork_naming_it(client):
    # Dask's loggers do not propagate to the root logger: listen on its own.
    seen = Records()
    logging.getLogger("distributed").addHandler(seen)
    try:
        with fw.backend(client):
            with pytest.raises(TypeError, match=r"argument 0 cannot be pickled.*lock"):
                fw.fork(inc, threading.Lock())
            with pytest.raises(TypeError, match=r"the function cannot be pickled.*Unpicklable"):
                fw.fork(Unpicklable())
            with pytest.raises(TypeError, match=r"keyword argument 'x' cannot be pickled"):
                fw.fork(inc, x=threading.Lock())
            # a forkwait future among the arguments is not the culprit
            slow = fw.fork(slow_sleep, 0.2)
            with pytest.raises(TypeError, match=r"argument 1 cannot be pickled"):
                fw.fork(add_futures, slow, threading.Lock())
    finally:
        logging.getLogger("distributed").removeHandler(seen)
    # forkwait's TypeError is the only report: Dask logged no error of its own
    assert [r.getMessage()[:80] for r in seen.records if r.levelno >= logging.ERROR] == []
    # ... and such errors still reach Dask's log outside cluster forks
    seen = Records()
    logging.getLogger("distributed").addHandler(seen)
    try:
        logging.getLogger("distributed.protocol.pickle").error("Failed to serialize %s.", "x")
    finally:
        logging.getLogger("distributed").removeHandler(seen)
    assert [r.getMessage() for r in seen.records] == ["Failed to serialize x."]
    with fw.backend(client):
        # a result that cannot come back fails the future, it does not hang
        f = fw.fork(give_lock)
    with pytest.raises(Exception, match="(?i)pickle|serializ"):
        f.result(timeout=TIMEOUT)
    with fw.backend(client):
        assert fw.fork(inc, 1).result(timeout=TIMEOUT) == 2  # the cluster is fine


@pytest.mark.slow
def test_worker_killed_mid_task_reruns_and_the_future_gets_the_right_value(client, tmp_path):
    marker = tmp_path / "runs"
    completions = []
    with fw.backend(client):
        f = fw.fork(run_once_then_hang, str(marker), 123)
        f.add_done_callback(completions.append)
    deadline = time.monotonic() + TIMEOUT
    while not (marker.exists() and marker.read_text().strip()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    victim = int(marker.read_text().split()[0])
    assert victim in worker_pids(client)
    os.kill(victim, signal.SIGKILL)
    assert f.result(timeout=TIMEOUT) == (123, 2)
    pids = [int(p) for p in marker.read_text().split()]
    assert len(pids) == 2 and pids[1] != victim
    time.sleep(0.2)
    assert len(completions) == 1  # completed once


@pytest.mark.slow
def test_a_task_that_keeps_killing_workers_fails_with_daskes_error(client):
    from distributed.scheduler import KilledWorker

    with fw.backend(client):
        f = fw.fork(kill_myself)
    with pytest.raises(KilledWorker) as info:
        f.result(timeout=TIMEOUT)
    if sys.version_info >= (3, 11):  # exception notes
        assert any("gave up on fork(kill_myself)" in n for n in info.value.__notes__)
    assert f.done() and not f.cancelled()


@pytest.mark.slow
def test_system_exit_in_a_cluster_task_ends_workers_until_dask_gives_up(client):
    # Dask's behaviour, as docs/distributed.md says: not SystemExit in the caller
    # (as for a local fork) but dead workers, then KilledWorker with forkwait's note.
    from distributed.scheduler import KilledWorker

    before = worker_pids(client)
    with fw.backend(client):
        f = fw.fork(sys.exit, 3)
    with pytest.raises(KilledWorker):
        f.result(timeout=TIMEOUT)
    client.wait_for_workers(2, timeout=TIMEOUT)
    assert worker_pids(client) != before


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_losing_the_scheduler_fails_pending_futures(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                          "127.0.0.1", "--port", str(port), "--no-dashboard"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env),
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                          "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env),
    ]
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "5s"}):
            client = distributed.Client(address, timeout=TIMEOUT, set_as_default=False)
        try:
            client.wait_for_workers(1, timeout=TIMEOUT)
            with fw.backend(client):
                assert fw.fork(inc, 1).result(timeout=TIMEOUT) == 2
                pending = fw.fork(slow_sleep, TIMEOUT)
            time.sleep(0.3)
            procs[0].send_signal(signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(Exception, match="(?i)scheduler") as info:
                pending.result(timeout=TIMEOUT)
            assert time.monotonic() - t0 < TIMEOUT
            assert not pending.cancelled()  # failed, not cancelled by its owner
            if sys.version_info >= (3, 11):
                # forkwait's explanation: a note on Dask's error, or (older
                # distributed, a bare CancelledError) the message of its own
                explained = str(info.value) + " ".join(getattr(info.value, "__notes__", ()))
                assert "forkwait" in explained
        finally:
            client.close(timeout=5)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_closing_the_client_fails_pending_futures(cluster):
    cl, _ = cluster
    other = distributed.Client(cl.scheduler_address, set_as_default=False)
    with fw.backend(other):
        pending = fw.fork(slow_sleep, 2.0)
    other.close()
    with pytest.raises(BaseException):  # noqa: B017 - Dask's cancellation or forkwait's
        pending.result(timeout=TIMEOUT)
    assert pending.done()


# ------------------------------------------------------------------ profile

def test_recording_cluster_forks(client):
    with _dask.recording() as rec:
        with fw.backend(client):
            futs = [fw.fork(slow_sleep, 0.05) for _ in range(4)]
            fw.wait_all(futs)
            bad = fw.fork(boom, "x")
            with pytest.raises(KeyError):
                bad.result(timeout=TIMEOUT)
    workers = set(client.scheduler_info()["workers"])
    recs = rec.records
    assert len(recs) == 5
    ok = [r for r in recs if r.name == "slow_sleep"]
    assert all(r.outcome == "finished" and r.worker in workers for r in ok)
    assert all(r.pid in worker_pids(client) for r in ok)
    # same host: one clock; a run starts after its submit and ends before its result arrives
    eps = 0.005
    assert all(r.submit - eps <= r.start <= r.end <= r.done + eps for r in ok)
    assert all(r.end - r.start >= 0.04 for r in ok)
    assert all(0.0 <= r.cpu for r in ok)
    assert {r.outcome for r in recs if r.name == "boom"} == {"failed"}
    assert all(rec.start <= r.submit <= rec.end for r in recs)
    events = _dask.chrome_trace_events(recs, rec.start, client_pid=os.getpid(),
                                       tid_of={threading.get_ident(): 1})
    names = {e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert names == {f"dask worker {r.worker}" for r in ok}
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == 5 and all(e["dur"] >= 0 for e in slices)
    assert sum(e["ph"] == "s" for e in events) == 5
    assert not math.isnan(sum(r.start for r in ok))
    assert _dask.stop_recording() == []  # not recording any more


def test_fw_profile_records_cluster_forks_next_to_local_ones(client):
    with fw.profile() as prof:
        with fw.backend(client):
            remote = [fw.fork(inc, i) for i in range(3)]
            assert fw.wait_all(remote) == [1, 2, 3]
        assert fw.wait(fw.fork(inc, 10)) == 11  # local
    workers = set(client.scheduler_info()["workers"])
    cluster = prof.cluster_tasks
    assert sorted(r.name for r in cluster) == ["inc"] * 3
    assert all(r.worker in workers and r.outcome == "finished" for r in cluster)
    assert [t.name for t in prof.tasks] == ["inc"]  # the local one
    trace = prof.chrome_trace()["traceEvents"]
    tracks = {e["args"]["name"] for e in trace if e.get("name") == "process_name"}
    assert "forkwait" in tracks
    assert {f"dask worker {r.worker}" for r in cluster} <= tracks
    # without a backend in use, a profile has no cluster part
    with fw.profile() as plain:
        fw.wait(fw.fork(inc, 1))
    assert plain.cluster_tasks == []


def test_backend_dask_without_a_client_says_what_to_do():
    from _child import run_python

    proc = run_python(
        """
        import forkwait as fw
        try:
            with fw.backend("dask"):
                pass
        except ValueError as exc:
            print("ValueError:", exc)
        print(fw.fork(abs, -3).wait())   # the failed entry left nothing behind
        """,
        env={"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert "found no running Dask client" in proc.stdout
    assert "fw.backend(client)" in proc.stdout
    assert proc.stdout.strip().endswith("3")
