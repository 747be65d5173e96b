"""Thread settings: validation, defaults from the environment, parallel_info."""

import numpy as np
import pytest
from _child import run_python
from _pool_helpers import blocked, until

import forkwait as fw
from forkwait._native import _team, pool
from forkwait._threads import available_cpus

SETTERS = [
    (fw.set_num_threads, "num_threads"),
    (fw.set_num_interop_threads, "num_interop_threads"),
]


@pytest.mark.parametrize("setter,name", SETTERS)
@pytest.mark.parametrize("bad", [0, -1, -100])
def test_non_positive_count_is_value_error(setter, name, bad):
    with pytest.raises(ValueError, match=f"{name} must be a positive int, got {bad}"):
        setter(bad)


@pytest.mark.parametrize("setter,name", SETTERS)
@pytest.mark.parametrize("bad", ["2", 2.0, None, True, [2]])
def test_non_int_count_is_type_error(setter, name, bad):
    with pytest.raises(TypeError, match=f"{name} must be a positive int, got {type(bad).__name__}"):
        setter(bad)


@pytest.mark.parametrize("setter,name", SETTERS)
def test_too_large_count_is_value_error(setter, name):
    with pytest.raises(ValueError, match="at most"):
        setter(10**6)


def test_set_get_round_trip(intra, interop):
    intra(np.int64(3))  # any integer type
    assert fw.get_num_threads() == 3
    interop(5)
    assert fw.get_num_interop_threads() == 5


def test_num_threads_context_is_per_thread_and_inherited(intra):
    intra(2)
    with fw.num_threads(1):
        assert fw.get_num_threads() == 1
        assert fw.wait(fw.fork(fw.get_num_threads)) == 1
        # another Python thread is not affected
        import threading

        seen = []
        t = threading.Thread(target=lambda: seen.append(fw.get_num_threads()))
        t.start()
        t.join()
        assert seen == [2]
    assert fw.get_num_threads() == 2
    assert fw.wait(fw.fork(fw.get_num_threads)) == 2
    with pytest.raises(ValueError):
        with fw.num_threads(0):
            pass


def test_probe_sees_the_setting_in_main_thread_and_workers(intra):
    """A compiled probe reports omp_get_num_threads() from inside a prange."""
    have_omp = _team.openmp_info()[0]
    intra(2)
    # shared mode: a team never takes more threads than the CPUs this process may use
    expected = min(2, available_cpus()) if have_omp else 1
    assert _team._probe_team() == expected
    assert fw.wait(fw.fork(_team._probe_team)) == expected
    intra(1)
    assert _team._probe_team() == 1
    assert fw.wait(fw.fork(_team._probe_team)) == 1


def test_intra_op_mode():
    assert fw.get_intra_op_mode() == "shared"
    with pytest.raises(ValueError, match="shared"):
        fw.set_intra_op_mode("turbo")


def _defaults(env, pre=""):
    out = run_python(
        pre + "import forkwait as fw\n"
        "print(fw.get_num_threads(), fw.get_num_interop_threads())",
        env=env,
    )
    return tuple(int(x) for x in out.stdout.split()), out.stderr


def test_defaults_follow_cpu_affinity():
    got, _ = _defaults({}, "import os\nos.sched_setaffinity(0, {0})\n")
    assert got == (1, 1)


def test_defaults_from_environment():
    assert _defaults({"FORKWAIT_NUM_THREADS": "3"})[0][0] == 3
    assert _defaults({"OMP_NUM_THREADS": "5,2"})[0][0] == 5
    assert _defaults({"OMP_NUM_THREADS": "5", "FORKWAIT_NUM_THREADS": "4"})[0][0] == 4
    assert _defaults({"FORKWAIT_NUM_INTEROP_THREADS": "7"})[0][1] == 7


def test_invalid_environment_value_warns_and_falls_back():
    (n, _), err = _defaults(
        {"FORKWAIT_NUM_THREADS": "lots", "OMP_NUM_THREADS": "3"},
    )
    assert n == 3
    assert "FORKWAIT_NUM_THREADS" in err and "RuntimeWarning" in err


def test_parallel_info_reports_settings(intra, interop):
    intra(1)
    interop(3)
    info = fw.parallel_info()
    assert f"forkwait {fw.__version__}" in info
    assert "intra-op threads (set_num_threads): 1" in info
    assert "inter-op threads (set_num_interop_threads): 3" in info
    assert "OpenMP compiled in:" in info
    assert "CPUs available to this process:" in info
    assert "thread pools seen by threadpoolctl:" in info


def _pool_line():
    return next(line for line in fw.parallel_info().splitlines()
                if line.startswith("inter-op pool:"))


def test_parallel_info_reports_the_pool_size_and_live_workers_while_it_shrinks(gate, interop):
    blocked(gate, interop, 3)  # 3 workers, each busy
    fw.set_num_interop_threads(1)
    line = _pool_line()
    assert ", 1 worker (3 live while it shrinks" in line, line
    gate.set()
    assert until(lambda: pool._stats()["workers"] == 1)
    line = _pool_line()
    assert ", 1 worker, " in line and "live" not in line, line


def test_parallel_info_lists_environment():
    out = run_python(
        "import forkwait as fw; print(fw.parallel_info())",
        env={"OMP_WAIT_POLICY": "passive", "FORKWAIT_NUM_INTEROP_THREADS": "2"},
    ).stdout
    assert "OMP_WAIT_POLICY=passive" in out
    assert "FORKWAIT_NUM_INTEROP_THREADS=2" in out


def _info_lines(code="", env=None):
    out = run_python(
        "import forkwait as fw\n" + code + "\nprint(fw.parallel_info())", env=env
    ).stdout
    return {
        key: next(line for line in out.splitlines() if line.startswith(key))
        for key in ("intra-op threads (set_num_threads)", "inter-op threads", "intra-op mode")
    }


def test_parallel_info_says_where_each_setting_came_from():
    # nothing set: defaults
    lines = _info_lines()
    assert lines["intra-op threads (set_num_threads)"].endswith(
        "[default: the CPUs available to this process]"
    )
    assert lines["inter-op threads"].endswith("[default: the CPUs available to this process]")
    assert lines["intra-op mode"] == "intra-op mode: shared [default]"
    # from the environment
    lines = _info_lines(env={"FORKWAIT_NUM_THREADS": "3", "OMP_NUM_THREADS": "5",
                             "FORKWAIT_NUM_INTEROP_THREADS": "2",
                             "FORKWAIT_INTRA_OP_MODE": "fixed"})
    assert lines["intra-op threads (set_num_threads)"].endswith(
        ": 3 [environment: FORKWAIT_NUM_THREADS=3]"
    )
    assert lines["inter-op threads"].endswith(": 2 [environment: FORKWAIT_NUM_INTEROP_THREADS=2]")
    assert lines["intra-op mode"] == (
        "intra-op mode: fixed [environment: FORKWAIT_INTRA_OP_MODE=fixed]"
    )
    lines = _info_lines(env={"OMP_NUM_THREADS": "4,2"})
    assert lines["intra-op threads (set_num_threads)"].endswith(
        ": 4 [environment: OMP_NUM_THREADS=4,2]"
    )
    # set in code, over the environment
    lines = _info_lines(
        "fw.set_num_threads(1); fw.set_num_interop_threads(3); fw.set_intra_op_mode('shared')",
        env={"FORKWAIT_NUM_THREADS": "3", "FORKWAIT_INTRA_OP_MODE": "fixed"},
    )
    assert lines["intra-op threads (set_num_threads)"].endswith(
        ": 1 [set in code: set_num_threads(1)]"
    )
    assert lines["inter-op threads"].endswith(": 3 [set in code: set_num_interop_threads(3)]")
    assert lines["intra-op mode"] == (
        "intra-op mode: shared [set in code: set_intra_op_mode('shared')]"
    )


def test_tools_that_try_settings_put_their_sources_back():
    lines = _info_lines(
        "from forkwait import _threads\n"
        "saved = _threads._save_settings()\n"
        "fw.set_num_threads(1); fw.set_num_interop_threads(1); fw.set_intra_op_mode('fixed')\n"
        "_threads._restore_settings(saved)",
        env={"FORKWAIT_NUM_INTEROP_THREADS": "2"},
    )
    assert lines["intra-op threads (set_num_threads)"].endswith("[default: the CPUs available "
                                                               "to this process]")
    assert lines["inter-op threads"].endswith(": 2 [environment: FORKWAIT_NUM_INTEROP_THREADS=2]")
    assert lines["intra-op mode"] == "intra-op mode: shared [default]"


def test_openmp_wait_policy_is_left_to_the_user():
    """forkwait keeps libgomp's default (short spin, then sleep): measured
    best for kernel scaling here (docs/threads.md); the user's choice stays."""
    code = "import os, forkwait as fw; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert run_python(code).stdout.strip() == "None"
    assert run_python(code, env={"OMP_WAIT_POLICY": "passive"}).stdout.strip() == "passive"
