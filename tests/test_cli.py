"""python -m forkwait {demo,info,bench,tune,trace} and fw.tune()."""

import json
import subprocess
import sys
import textwrap

import pytest

import forkwait as fw


def cli(*args, timeout=300, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "forkwait", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_info_prints_parallel_info():
    proc = cli("info")
    assert proc.returncode == 0
    assert "inter-op threads (set_num_interop_threads)" in proc.stdout


def test_demo_prints_table():
    proc = cli("demo", "--rounds", "1", "--size", "64", "--steps", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:1] == ["setting"]
    assert any(line.startswith("fork/wait") and line.endswith("x") for line in lines)
    assert "Speed-up is against the first row" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["bogus"], ["demo", "--size", "0"], ["tune"], ["tune", "--repeat", "x", "s.py"],
     ["bench", "--rounds", "-1"], ["trace", "--timeout", "0", "s.py"]],
)
def test_bad_arguments_exit_2_with_one_line(args):
    proc = cli(*args)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 or err[-1].startswith("python -m forkwait")
    assert "error:" in err[-1]


@pytest.mark.parametrize("cmd", ["demo", "info", "bench", "tune", "trace"])
def test_every_subcommand_has_help(cmd):
    proc = cli(cmd, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout


FORKING = """
    import numpy as np
    import forkwait as fw
    x = np.random.default_rng(0).random(100_000)
    for i in range(50):
        print("noise from the script", i)
    fw.wait_all([fw.fork(np.sort, x) for _ in range(4)])
"""


def test_tune_script_table_best_and_heatmap(tmp_path):
    path = script(tmp_path, "work.py", FORKING)
    png = tmp_path / "heat.png"
    proc = cli("tune", "--repeat", "1", "--no-progress", "--heatmap", str(png), path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "noise from the script" not in out  # the script's output stays out of the table
    table = out.split("\n")
    header = next(i for i, line in enumerate(table) if line.startswith("setting"))
    rows = table[header + 1 :]
    settings = [r for r in rows if "inter-op x" in r and r.rstrip().endswith(("1", "best"))]
    assert len(settings) == 6  # {1,2} x {1,2} x modes, fixed only where it matters
    assert "best:" in out and "forkwait.set_num_interop_threads(" in out
    assert "FORKWAIT_NUM_INTEROP_THREADS=" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_tune_explains_no_fork(tmp_path):
    path = script(tmp_path, "serial.py", "import numpy as np\nnp.sort(np.ones(1000))\n")
    proc = cli("tune", "--repeat", "1", "--no-progress", "--heatmap", "", path)
    assert proc.returncode == 0, proc.stderr
    assert "No task was forked" in proc.stdout


def test_tune_explains_gil_bound_work(tmp_path):
    path = script(
        tmp_path,
        "pure.py",
        """
        import forkwait as fw
        def count(n):
            s = 0
            for i in range(n):
                s += i
            return s
        fw.wait_all([fw.fork(count, 200_000) for _ in range(4)])
        """,
    )
    proc = cli("tune", "--repeat", "1", "--no-progress", "--heatmap", "", path)
    assert proc.returncode == 0, proc.stderr
    assert "holds the GIL" in proc.stdout


def test_tune_failing_script(tmp_path):
    path = script(tmp_path, "bad.py", "print('partial')\nraise ValueError('broken script')\n")
    proc = cli("tune", "--no-progress", path)
    assert proc.returncode == 1
    assert "failed" in proc.stderr and "broken script" in proc.stderr
    assert "setting" not in proc.stdout


def test_tune_timeout_and_missing_script(tmp_path):
    path = script(tmp_path, "slow.py", "import time\ntime.sleep(30)\n")
    proc = cli("tune", "--no-progress", "--timeout", "0.5", path)
    assert proc.returncode == 1 and "did not finish within 0.5 s" in proc.stderr
    proc = cli("tune", str(tmp_path / "missing.py"))
    assert proc.returncode == 1 and "no such script" in proc.stderr


def test_trace_writes_trace_and_png(tmp_path):
    path = script(tmp_path, "work.py", FORKING)
    out, png = tmp_path / "t.json", tmp_path / "t.png"
    proc = cli("trace", "-o", str(out), "--png", str(png), path)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(out.read_text())
    assert len([e for e in trace["traceEvents"] if e.get("cat") == "task"]) == 4
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "forkwait profile:" in proc.stdout


def test_bench_json():
    proc = cli("bench", "--json", "--rounds", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["rows"] and all(r["ratio"] > 0 for r in data["rows"])
    assert any(r["peer"] == "concurrent.futures" for r in data["rows"])


def test_tune_in_process():
    import numpy as np

    x = np.random.default_rng(0).random(50_000)
    calls = []

    def work():
        calls.append(1)
        return fw.wait_all([fw.fork(np.sort, x) for _ in range(3)])

    saved = (fw.get_num_threads(), fw.get_num_interop_threads())
    result = fw.tune(work, repeat=2)
    assert (fw.get_num_threads(), fw.get_num_interop_threads()) == saved
    assert len(calls) == 1 + 2 * len(result.times)
    assert result.facts["tasks"] == 3
    assert result.best in result.times
    text = str(result)
    assert "best:" in text and "No task was forked" not in text
    with pytest.raises(TypeError, match="callable"):
        fw.tune(5)
    with pytest.raises(ValueError, match="repeat"):
        fw.tune(work, repeat=0)


def test_tune_explains_blas_threads(tmp_path):
    pytest.importorskip("threadpoolctl")
    path = script(
        tmp_path,
        "blas.py",
        """
        import numpy as np
        from threadpoolctl import threadpool_limits
        import forkwait as fw
        threadpool_limits(2, user_api="blas")   # as on a 2-CPU machine by default
        a = np.ones((64, 64))
        fw.wait_all([fw.fork(np.dot, a, a) for _ in range(2)])
        """,
    )
    proc = cli("tune", "--repeat", "1", "--no-progress", "--heatmap", "", path)
    assert proc.returncode == 0, proc.stderr
    assert "BLAS runs 2 threads of its own" in proc.stdout
    # limited to one thread, the advice is not given
    path = script(tmp_path, "blas1.py", open(path).read().replace("limits(2", "limits(1"))
    proc = cli("tune", "--repeat", "1", "--no-progress", "--heatmap", "", path)
    assert proc.returncode == 0, proc.stderr
    assert "threads of its own" not in proc.stdout
