"""Inter-op and intra-op together (docs/threads.md): what forked tasks did
leaves nothing behind that slows the kernels after them. A pool thread that
ran kernels with teams of 2 or more gives its OpenMP team back once it has
been idle for a while (more OpenMP threads than CPUs make libgomp throttle
every team's spinning, the main thread's too).
"""

import os
import threading

import numpy as np
import pytest
from _pool_helpers import TIMEOUT, until

import forkwait as fw
from forkwait._native import _team
from forkwait._threads import available_cpus

OPENMP = _team.openmp_info()[0]
TEAMS = pytest.mark.skipif(not OPENMP or available_cpus() < 2,
                           reason="no team of 2 here (a serial build, or 1 CPU)")


def os_threads():
    return len(os.listdir("/proc/self/task"))


@TEAMS
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
def test_idle_pool_threads_give_back_their_openmp_teams(interop, intra):
    interop(2)
    intra(2)
    x = np.random.default_rng(0).random(1 << 20)
    fw.wait(fw.fork(abs, -1))  # the pool's threads exist
    assert until(lambda: fw._native.pool._stats()["sleeping"] == 2)
    base = os_threads()
    released = _team._released_teams()
    held = []

    def kernel_on_a_pool_thread():
        fw.ops.exp(x)  # alone: a team of 2
        held.append((threading.current_thread().name, _team._team_held()))

    # timed waits leave queued tasks to idle pool threads: these run there
    for _ in range(4):
        fw.fork(kernel_on_a_pool_thread).result(timeout=TIMEOUT)
    teams = {name for name, h in held if h and name.startswith("forkwait-interop")}
    assert teams, held  # a pool thread kept a team after its kernel
    # idle, each gives it back: the OpenMP threads it started end
    assert until(lambda: _team._released_teams() >= released + len(teams), TIMEOUT)
    assert until(lambda: os_threads() <= base, TIMEOUT)
    # and takes one again for its next kernel
    held.clear()
    fw.fork(kernel_on_a_pool_thread).result(timeout=TIMEOUT)
    assert held[0][1] is True


@TEAMS
def test_a_thread_that_gave_its_team_back_computes_the_same_bits(intra):
    intra(2)
    x = np.random.default_rng(1).random(1 << 20)
    before = fw.ops.exp(x)
    _team._team_release()
    assert not _team._team_held()
    np.testing.assert_array_equal(fw.ops.exp(x), before)
    assert _team._team_held()
