"""python -m forkwait {demo,info,bench,tune,trace}, fw.tune() and the rules
behind every sentence the tools print (each driven both ways: fires, stays
quiet). The rules are tested on results built from chosen times, so that no
test depends on this machine's speed, load or CPU count."""

import io
import json
import os
import sys
import textwrap

import numpy as np
import pytest
from _child import TESTS, run_module, start_python
from _clock import HOUR, JumpingClock

import forkwait as fw
from forkwait import _threads, _tune
from forkwait._measure.timing import Load, Progress, blas_thread_count, median_interval
from forkwait._tune import Rounds, Setting, TuneResult, profiled_run
from forkwait.cli import demo as demo_cmd


def cli(*args, timeout=300, cwd=None):
    return run_module("forkwait", *args, timeout=timeout, cwd=cwd)


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


# -- the command line's plumbing -------------------------------------------------------


def test_info_prints_parallel_info():
    proc = cli("info")
    assert proc.returncode == 0
    assert "inter-op threads (set_num_interop_threads)" in proc.stdout


def test_output_into_a_closed_pipe_is_no_traceback():
    proc = start_python(module="forkwait", argv=["info"])
    proc.stdout.close()  # as `| head -0` does
    err = proc.stderr.read()
    assert proc.wait(60) == 1
    assert "Traceback" not in err


def test_main_module_and_script_entry_point_are_the_cli():
    import forkwait.__main__ as main_module
    from forkwait.cli import main

    assert main_module.main is main


def test_demo_prints_table_load_and_computed_sentences():
    proc = cli("demo", "--rounds", "1", "--rows", "8", "--cols", "64", "--steps", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("machine: load average")
    assert lines[2].split()[:1] == ["setting"]
    assert any(line.startswith("fork/wait, default") for line in lines)
    # one round cannot tell noise apart, and the demo says so instead of a claim
    assert "too few to tell a difference from noise" in proc.stdout
    assert "let them run at once" not in proc.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["bogus"], ["demo", "--rows", "0"], ["tune"], ["tune", "--repeat", "x", "s.py"],
     ["bench", "--rounds", "-1"], ["trace", "--timeout", "0", "s.py"],
     ["tune", "--budget", "0", "s.py"]],
)
def test_bad_arguments_exit_2_with_one_line(args):
    proc = cli(*args)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 or err[-1].startswith("python -m forkwait")
    assert "error:" in err[-1]


@pytest.mark.parametrize("cmd", ["trace", "tune"])
def test_missing_script_is_one_line_exit_2(cmd, tmp_path):
    proc = cli(cmd, str(tmp_path / "nosuch.py"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"python -m forkwait {cmd}: error: no such file: {tmp_path / 'nosuch.py'}"
    ]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("cmd", ["demo", "info", "bench", "tune", "trace"])
def test_every_subcommand_has_help(cmd):
    proc = cli(cmd, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout
    assert "%%" not in proc.stdout  # argparse escapes only where it formats
    if cmd == "tune":
        assert "90% interval" in " ".join(proc.stdout.split())


def _without(tmp_path, *modules):
    """An environment in which importing `modules` fails, as if not installed
    (a package of that name, first on the path, that raises on import)."""
    blocked = tmp_path / "blocked"
    for name in modules:
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {name!r}'!r}, name={name!r})\n")
    path = [str(blocked), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def test_tools_without_matplotlib_or_threadpoolctl_say_what_to_install(tmp_path):
    path = script(tmp_path, "work.py", FORKING)
    env = _without(tmp_path, "matplotlib", "threadpoolctl")
    proc = run_module("forkwait", "tune", "--repeat", "1", "--max-rounds", "1",
                      "--max-threads", "1", "--heatmap", str(tmp_path / "h.png"), path,
                      env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "(no heatmap: matplotlib is not installed: pip install matplotlib" in out
    assert "check needs threadpoolctl (pip install threadpoolctl" in out
    assert not (tmp_path / "h.png").exists()
    proc = run_module("forkwait", "trace", "-o", str(tmp_path / "t.json"),
                      "--png", str(tmp_path / "t.png"), path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "(no timeline: matplotlib is not installed: pip install matplotlib" in proc.stdout
    assert (tmp_path / "t.json").exists() and not (tmp_path / "t.png").exists()


FORKING = """
    import numpy as np
    import forkwait as fw
    x = np.random.default_rng(0).random(100_000)
    for i in range(50):
        print("noise from the script", i)
    fw.wait_all([fw.fork(np.sort, x) for _ in range(4)])
"""


def test_tune_script_table_verdict_and_heatmap(tmp_path):
    path = script(tmp_path, "work.py", FORKING)
    png = tmp_path / "heat.png"
    proc = cli("tune", "--repeat", "1", "--max-rounds", "1", "--max-threads", "2",
               "--heatmap", str(png), path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "noise from the script" not in out  # the script's output stays out of the table
    assert "machine: load average" in out and "timed: the whole script" in out
    lines = out.split("\n")
    header = next(i for i, line in enumerate(lines) if line.startswith("setting"))
    rows = [r for r in lines[header + 1:] if " inter-op x " in r and r.startswith(("1 ", "2 "))]
    assert len(rows) == 6  # {1,2} x {1,2} x modes, fixed only where it matters
    # one round: no advice, the reason instead
    assert "Cannot tell: 1 round(s) are too few" in out
    assert "Apply it" not in out and "<- advised" not in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "\r" not in proc.stderr  # no progress bar when stderr is not a terminal


def test_tune_times_only_the_marked_region(tmp_path):
    path = script(
        tmp_path, "region.py",
        f"""
        import sys, time
        sys.path.insert(0, {TESTS!r})
        import forkwait as fw
        from forkwait import _tune
        from _clock import HOUR, JumpingClock
        _tune.time = clock = JumpingClock()
        clock.skip(HOUR)           # set-up: an hour passes, not timed
        with fw.tune_region():
            time.sleep(0.01)
        """,
    )
    proc = cli("tune", "--repeat", "1", "--max-rounds", "1", "--max-threads", "1",
               "--heatmap", "", path)
    assert proc.returncode == 0, proc.stderr
    assert "timed: the marked region" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("1 inter-op"))
    assert float(row.split()[6]) < HOUR * 1000  # the median (ms) leaves the hour out


def test_tune_times_a_named_function(tmp_path):
    path = script(
        tmp_path, "named.py",
        """
        import time
        time.sleep(0.5)            # module code: runs first, not timed
        def main():
            time.sleep(0.01)
        if __name__ == "__main__":
            raise SystemExit("the main guard must stay off")
        """,
    )
    proc = cli("tune", "--repeat", "1", "--max-rounds", "1", "--max-threads", "1",
               "--heatmap", "", "--function", "main", path)
    assert proc.returncode == 0, proc.stderr
    assert "timed: the function main()" in proc.stdout
    proc = cli("tune", "--max-threads", "1", "--heatmap", "", "--function", "nope", path)
    assert proc.returncode == 1 and "defines no function 'nope'" in proc.stderr


def test_tune_script_that_exits_0_is_profiled_to_its_end(tmp_path):
    path = script(tmp_path, "exits.py", textwrap.dedent(FORKING) + "import sys\nsys.exit(0)\n")
    proc = cli("tune", "--repeat", "1", "--max-rounds", "1", "--max-threads", "1",
               "--heatmap", "", path)
    assert proc.returncode == 0, proc.stderr
    assert "No task was forked" not in proc.stdout
    path = script(tmp_path, "exits3.py", "import sys\nsys.exit(3)\n")
    proc = cli("tune", "--max-threads", "1", "--heatmap", "", path)
    assert proc.returncode == 1 and "exit status 3" in proc.stderr


def test_tune_failing_script(tmp_path):
    path = script(tmp_path, "bad.py", "print('partial')\nraise ValueError('broken script')\n")
    proc = cli("tune", "--no-progress", path)
    assert proc.returncode == 1
    assert "failed" in proc.stderr and "broken script" in proc.stderr
    assert "setting" not in proc.stdout


def test_tune_timeout(tmp_path):
    path = script(tmp_path, "slow.py", "import time\ntime.sleep(30)\n")
    proc = cli("tune", "--no-progress", "--timeout", "0.5", path)
    assert proc.returncode == 1 and "did not finish within 0.5 s" in proc.stderr


def test_trace_writes_trace_and_png(tmp_path):
    path = script(tmp_path, "work.py", FORKING)
    out, png = tmp_path / "t.json", tmp_path / "t.png"
    proc = cli("trace", "-o", str(out), "--png", str(png), path)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(out.read_text())
    assert len([e for e in trace["traceEvents"] if e.get("cat") == "task"]) == 4
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "forkwait profile:" in proc.stdout
    assert "noise from the script 49" in proc.stdout  # trace shows the script's output


def test_bench_json():
    proc = cli("bench", "--json", "--rounds", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["rows"] and all(r["ratio"] > 0 for r in data["rows"])
    assert all(r["forkwait_s"] > 0 and r["peer_s"] > 0 for r in data["rows"])
    assert "runs inline" in data["rows"][0]["note"]
    assert any(r["peer"] == "concurrent.futures" for r in data["rows"])
    assert any(r["peer"] == "NumPy" for r in data["rows"])  # forkwait.ops always there
    assert "others_cpus" in data and "loadavg_before" in data


def test_bench_table_shows_the_times_behind_each_ratio_and_says_the_trip_runs_inline():
    from forkwait.cli import bench

    trip = {"measurement": "fork+wait of a no-op", "peer": "concurrent.futures",
            "ratio": 0.1, "forkwait_s": 2e-6, "peer_s": 2e-5, "per": "round trip",
            "lower is better": True, "note": bench.INLINE}
    kernel = {"measurement": "exp", "peer": "NumPy", "ratio": 1.5, "forkwait_s": 0.002,
              "peer_s": 0.003, "per": "call", "lower is better": False}
    lines = bench.table([trip, kernel, {**trip, "measurement": "again"}])
    assert "0.10x  (forkwait 2 us, concurrent.futures 20 us per round trip;" in lines[0]
    assert "1.50x  (forkwait 2 ms, NumPy 3 ms per call; higher is better)" in lines[1]
    notes = " ".join(lines[3:]).split()
    assert " ".join(notes) == " ".join(bench.INLINE.split())  # once, however many rows
    assert "the waiting thread finds the task still queued, claims it and runs it itself" \
        in " ".join(notes)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for tty, drawn in ((True, True), (False, False)):
        err = Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        with Progress(3, True, "tune") as bar:
            for _ in range(3):
                bar.step("x")
        assert bool(err.getvalue()) is drawn
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    with Progress(3, False) as bar:  # --no-progress
        bar.step()
    assert err.getvalue() == ""


# -- fw.tune in this process -------------------------------------------------------------


def test_tune_in_process(intra, interop):
    x = np.random.default_rng(0).random(50_000)
    calls = []

    def work():
        calls.append(1)
        return fw.wait_all([fw.fork(np.sort, x) for _ in range(3)])

    intra(1)
    before = _threads._save_settings()
    result = fw.tune(work, repeat=2, max_rounds=3, budget=30.0, max_threads=2)
    assert _threads._save_settings() == before  # values and where they came from
    assert len(result.times) == 6
    assert len(calls) == 1 + result.n_rounds * len(result.times)
    assert 2 <= result.n_rounds <= 3 and result.rounds.reason in ("stable", "budget",
                                                                   "max_rounds")
    assert result.facts["tasks"] == 3
    assert result.timed == "the whole call"
    text = str(result)
    assert "No task was forked" not in text and "machine: load average" in text
    with pytest.raises(TypeError, match="callable"):
        fw.tune(5)
    with pytest.raises(ValueError, match="repeat"):
        fw.tune(work, repeat=0)
    with pytest.raises(ValueError, match="budget"):
        fw.tune(work, budget=0)


def test_tune_region_in_process(monkeypatch):
    clock = JumpingClock()
    monkeypatch.setattr(_tune, "time", clock)
    entered = []

    def work():
        clock.skip(HOUR)  # set-up: an hour passes outside the region
        with fw.tune_region():
            entered.append(1)
            clock.skip(1.0)  # a second inside it

    result = fw.tune(work, repeat=1, max_rounds=1, max_threads=1)
    assert result.timed == "the marked region"
    runs = result.times[Setting(1, 1)]
    assert len(runs) == 1 and len(entered) == 2  # the profiled run, the timed one
    assert 1.0 <= runs[0] < HOUR  # the second inside counts, the hour outside does not

    def unmarked():
        clock.skip(HOUR)

    result = fw.tune(unmarked, repeat=1, max_rounds=1, max_threads=1)
    assert result.timed == "the whole call"
    assert result.times[Setting(1, 1)][0] >= HOUR  # without a region, the hour counts
    with fw.tune_region():  # outside tune: just runs
        pass


@pytest.mark.skipif(not getattr(sys, "_is_gil_enabled", lambda: True)(),
                    reason="a free-threaded CPython runs forked pure Python in parallel")
def test_profiled_run_sees_pure_python_holding_the_gil():
    def count():
        s = 0
        for i in range(300_000):
            s += i
        return s

    facts = profiled_run(lambda: fw.wait_all([fw.fork(count) for _ in range(4)]), 1)
    assert facts["tasks"] == 4 and facts["kernels"] == 0
    assert facts["cpu_utilisation"] < 1.3  # load from others can only lower it
    assert facts["kernel_share_of_tasks"] == 0.0


def test_profiled_run_tells_whether_blas_ran_its_own_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    a = np.random.default_rng(0).random((512, 512))

    def forked_matmuls():
        fw.wait_all([fw.fork(np.dot, a, a) for _ in range(16)])

    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        quiet = profiled_run(forked_matmuls, 1)
    sorts = profiled_run(lambda: fw.wait_all([fw.fork(np.sort, a.ravel()) for _ in range(4)]), 1)
    assert quiet["blas_cpu_seconds"] == 0.0 and sorts["blas_cpu_seconds"] == 0.0
    from forkwait import _tune

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if not _tune._blas_pool_tids():
            pytest.skip("NumPy's BLAS started no threads of its own (one CPU)")
        if blas_thread_count() < 2:
            pytest.skip("BLAS runs one thread on this machine")
        loud = profiled_run(forked_matmuls, 1)
    assert loud["blas_threads"] >= 2 and loud["blas_cpu_seconds"] > 0.0


# -- the verdict and the "why" lines, both ways ------------------------------------------

S11 = Setting(1, 1)
S21 = Setting(2, 1)
S12 = Setting(1, 2)
S22 = Setting(2, 2)
S22F = Setting(2, 2, "fixed")
QUIET = Load("0.1 0.1 0.1", "0.2 0.1 0.1", 0.0, 10.0)
FACTS = {"tasks": 4, "kernels": 10, "kernel_max_team": 2, "kernel_max_size": 10**6,
         "profiled_intra": 2, "cpu_utilisation": 1.9, "profile_others_cpus": 0.0,
         "kernel_share_of_tasks": 0.9, "blas_threads": 1, "blas_cpu_seconds": 0.0}


def result(speed, rounds=7, jitter=0.01, facts=None, load=QUIET, cpus=2, default=S22):
    """Times of 100 ms / speed-up per setting, with a small alternating wobble."""
    times = {
        s: [0.1 / f * (1 + jitter * (-1) ** (r + i)) for r in range(rounds)]
        for i, (s, f) in enumerate(speed.items())
    }
    return TuneResult(times, {**FACTS, **(facts or {})}, workload="w.py", load=load,
                      rounds=Rounds(rounds, "stable", 1.0), cpus=cpus, default=default)


GRID = {S11: 1.0, S12: 1.02, S21: 1.9, S22: 1.3, S22F: 1.1}


def test_a_clear_winner_is_advised_with_how_to_apply():
    r = result(GRID)
    assert r.recommended == S21
    text = str(r)
    assert "best: 2 inter-op x 1 intra-op (shared), 1.90x" in text and "Apply it" in text
    assert "FORKWAIT_NUM_INTEROP_THREADS=2 FORKWAIT_NUM_THREADS=1" in text
    assert "<- advised" in text
    assert "No setting beats" not in text


def test_no_setting_beats_one_thread_within_the_noise():
    r = result({S11: 1.0, S21: 1.08, S12: 1.02, S22: 1.03}, jitter=0.1)  # 2x1 wobbles against 1x1
    assert r.recommended is None
    text = str(r)
    assert "No setting beats 1 inter-op x 1 intra-op (shared) beyond the noise" in text
    assert "Apply it" not in text and "<- advised" not in text
    # a steady 3% is below the smallest difference worth a change
    r = result({S11: 1.0, S21: 1.03}, jitter=0.001)
    assert r.recommended is None


def test_too_few_rounds_cannot_tell():
    text = str(result(GRID, rounds=4))
    assert "Cannot tell: 4 round(s) are too few" in text and "Apply it" not in text
    assert "Cannot tell" not in str(result(GRID, rounds=5))


def test_only_one_setting():
    assert "Only one setting was tried" in str(result({S11: 1.0}))
    assert "Only one setting was tried" not in str(result(GRID))


def test_ties_prefer_the_default_then_the_cheapest():
    r = result({S11: 1.0, S21: 1.9, S22: 1.92, S12: 1.0})
    assert r.recommended == S22  # as fast as 2x1 within the noise, and the default
    text = str(r)
    assert "beat 1 inter-op x 1 intra-op (shared) beyond the noise but not each other" in text
    assert "because it is the default" in text
    assert "That is forkwait's default: nothing to change." in text
    r = result({S11: 1.0, S21: 1.9, S22: 1.92, S12: 1.0}, default=Setting(4, 4))
    assert r.recommended == S21 and "it uses the fewest threads of them" in str(r)
    assert "nothing to change" not in str(r)
    # a single winner that is the default
    r = result({S11: 1.0, S21: 1.0, S22: 1.9})
    assert "best: 2 inter-op x 2 intra-op (shared)" in str(r)
    assert "That is forkwait's default: nothing to change." in str(r)
    assert "not each other" not in str(r)


def test_median_interval_is_the_sign_test_interval():
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)
    assert median_interval(range(8)) == (1, 6)
    assert median_interval([1.0] * 4) is None


def why(r):
    return "\n".join(r.advice())


def test_why_one_cpu():
    assert "Only one CPU is available" in why(result({S11: 1.0}, cpus=1))
    assert "Only one CPU is available" not in why(result(GRID, cpus=2))


def test_why_busy_machine():
    busy = Load("1.9 1.0 0.5", "2.5 1.2 0.6", 0.8, 10.0)
    assert "The machine was busy: other processes used 0.80" in why(result(GRID, load=busy))
    assert "The machine was busy" not in why(result(GRID))


def test_why_large_spread():
    assert "varied by" in why(result(GRID, jitter=0.2))
    assert "varied by" not in why(result(GRID, jitter=0.01))


def test_why_no_fork():
    assert "No task was forked" in why(result(GRID, facts={"tasks": 0}))
    assert "No task was forked" not in why(result(GRID))


def test_why_gil(monkeypatch):
    gil = {"cpu_utilisation": 1.0, "kernel_share_of_tasks": 0.0}
    monkeypatch.setattr(_tune, "_GIL_ON", True)  # (the usual CPython)
    assert "holds the GIL" in why(result(GRID, facts=gil))
    # quiet: the process did use several CPUs
    assert "holds the GIL" not in why(result(GRID))
    # quiet: the tasks ran forkwait kernels (GIL released); low use came from elsewhere
    assert "holds the GIL" not in why(result(GRID, facts={**gil, "kernel_share_of_tasks": 0.8}))
    # quiet: other processes took the CPUs while profiling
    assert "holds the GIL" not in why(result(GRID, facts={**gil, "profile_others_cpus": 0.9}))
    # quiet: one CPU
    assert "holds the GIL" not in why(result({S11: 1.0}, facts=gil, cpus=1))
    # a free-threaded CPython: low use is not the GIL's doing
    monkeypatch.setattr(_tune, "_GIL_ON", False)
    text = why(result(GRID, facts=gil))
    assert "holds the GIL" not in text and "takes turns on a lock" in text


def test_why_the_baseline_already_ran_two_tasks():
    none_wins = {S11: 1.0, S21: 1.01, S12: 1.0, S22: 1.02}
    assert "already ran two tasks at once" in why(result(none_wins))
    assert "already ran two tasks at once" not in why(result(GRID))  # a setting won
    assert "already ran two tasks at once" not in why(result(none_wins, facts={"tasks": 0}))
    assert "already ran two tasks at once" not in why(result(none_wins, rounds=3))


def test_why_blas_only_when_blas_ran_its_threads():
    ran = {"blas_threads": 2, "blas_cpu_seconds": 0.12}
    assert "NumPy's BLAS ran threads of its own (2)" in why(result(GRID, facts=ran))
    # quiet: BLAS loaded with 2 threads, but they did no work (np.sort, ops.matmul)
    assert "BLAS" not in why(result(GRID, facts={**ran, "blas_cpu_seconds": 0.0}))
    assert "BLAS" not in why(result(GRID, facts={**ran, "blas_threads": 1}))
    assert "BLAS" not in why(result(GRID, facts={**ran, "tasks": 0}))
    # not known (no threadpoolctl): says so and what to install, when tasks were forked
    unknown = why(result(GRID, facts={"blas_threads": None}))
    assert "is not known: that check needs threadpoolctl (pip install threadpoolctl" in unknown
    assert "threadpoolctl" not in why(result(GRID, facts={"blas_threads": None, "tasks": 0}))
    assert "threadpoolctl" not in why(result(GRID))


def test_why_no_kernel_and_small_kernels():
    assert "No forkwait.ops kernel ran" in why(result(GRID, facts={"kernels": 0}))
    assert "No forkwait.ops kernel ran" not in why(result(GRID))
    small = {"kernel_max_team": 1, "kernel_max_size": 100}
    assert "none above its grain size (largest: 100" in why(result(GRID, facts=small))
    assert "grain size" not in why(result(GRID))
    assert "grain size" not in why(result(GRID, facts={**small, "profiled_intra": 1}))


def test_why_a_knob_helped_only_beyond_the_noise():
    text = why(result(GRID))
    assert "More inter-op threads helped beyond the noise: 2 inter-op x 1 intra-op" in text
    assert "More intra-op threads helped" not in text  # 1.02x is no help
    text = why(result({S11: 1.0, S12: 1.6, S21: 1.0}))
    assert "More intra-op threads helped beyond the noise" in text
    assert "More inter-op threads helped" not in text


def test_heatmap_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    for r in (result(GRID), result({S11: 1.0, S21: 1.01}, rounds=3)):
        path = tmp_path / "h.png"
        r.heatmap(path)
        assert path.read_bytes()[:4] == b"\x89PNG"


# -- the demo's sentences, both ways ------------------------------------------------------


def demo_times(speed, rounds=7, jitter=0.01):
    rows = demo_cmd.settings(2)
    by_kind = {row.kind: row for row in rows}
    return {
        by_kind[kind]: [0.1 / f * (1 + jitter * (-1) ** r) for r in range(rounds)]
        for kind, f in speed.items()
    }


DEMO = {"serial": 1.0, "serial-intra": 1.5, "default": 1.9, "one-interop": 1.88, "fixed": 1.4}


def said(times, load=QUIET, ncpu=2, costs=None):
    return "\n".join(demo_cmd.conclusions(times, load, ncpu, 4, 65536, costs))


def test_demo_says_forking_won_only_when_it_did():
    assert "let them run at once: the default fork/wait ran 1.90x" in said(demo_times(DEMO))
    lost = said(demo_times({**DEMO, "default": 1.01}))
    assert "let them run at once" not in lost
    assert "did not beat the serial program beyond the noise" in lost
    few = said(demo_times(DEMO, rounds=3))
    assert "too few to tell" in few and "let them run at once" not in few


def test_demo_says_why_a_row_lost():
    text = said(demo_times(DEMO))
    assert "serial (no fork), 2 intra-op threads was slower than the default" in text
    assert "the Python between the kernels runs on one thread" in text
    assert "fork-join" not in text  # nothing measured, nothing said about it
    # with the costs measured in the run, the sentence quotes them
    costs = demo_cmd.Costs(kernels=96, forkjoin_s=2e-6)
    text = said(demo_times(DEMO), costs=costs)
    # the serial row's median, 0.101 s, over 96 calls: 1052 us a call; 2 us is 0.2% of it
    assert "each of its 96 calls pays a team's fork-join (2.0 us measured here, 0.2% of a " \
           "call's 1052 us on one thread)" in text
    assert "each of the 3 branches running at once (on the pool's 2 threads and the waiting " \
           "main thread) asks for 2 threads: 6 OpenMP threads on 2 CPUs (oversubscription)" in text
    assert "1 inter-op x 1 intra-op was slower" not in text  # within the noise of the default
    text = said(demo_times({**DEMO, "one-interop": 1.3}))
    assert "run at most two branches at once" in text
    quiet = said(demo_times({**DEMO, "serial-intra": 1.9, "fixed": 1.9}))
    assert "was slower than the default" not in quiet


def test_demo_says_when_a_row_beat_the_default():
    text = said(demo_times({**DEMO, "fixed": 2.5}))
    assert "(fixed) beat the default here" in text
    assert "beat the default here" not in said(demo_times(DEMO))


def test_demo_says_when_the_machine_was_busy_or_has_one_cpu():
    busy = Load("2.0 1.0 1.0", "2.0 1.0 1.0", 1.2, 5.0)
    assert "The machine was busy" in said(demo_times(DEMO), load=busy)
    assert "may have no CPU of its own" in said(demo_times(DEMO), load=busy)
    assert "may have no CPU of its own" not in said(demo_times(DEMO))
    assert "The machine was busy" not in said(demo_times(DEMO))
    one = {row: [0.1] * 7 for row in demo_cmd.settings(1)}
    assert [row.kind for row in one] == ["serial", "default"]
    assert "Only one CPU is available" in said(one, ncpu=1)
    assert "Only one CPU is available" not in said(demo_times(DEMO))


def test_demo_torch_without_torch_says_so():
    from _child import run_python

    proc = run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # as if PyTorch were not installed\n"
        "from forkwait.cli import main\n"
        "sys.exit(main(['demo', '--torch']))\n",
        check=False,
    )
    assert proc.returncode == 1
    assert "--torch needs PyTorch, which is not installed here" in proc.stderr


def test_demo_torch_rejects_a_bad_size():
    from forkwait.cli import main

    assert main(["demo", "--torch", "128"]) == 2
