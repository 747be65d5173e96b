"""Runtime CPU dispatch: every variant this CPU runs computes the same bits."""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest
from _child import run_python

import forkwait as fw
from forkwait import ops
from forkwait._native import _dispatch

RUNNABLE = [name for name, runs in _dispatch.variants() if runs]


@pytest.fixture
def restore_variant():
    old = _dispatch.variant()
    yield
    _dispatch._set_variant(old)


def _inputs(dt):
    rng = np.random.default_rng(12)
    parts = [
        rng.uniform(-20, 20, 5003),
        rng.standard_normal(4099) * 1e-3,
        np.linspace(-120, 100, 3001),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1e300, -1e300]),
    ]
    return np.concatenate(parts).astype(dt)


UNARY = ("neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu")


def _interval_edges(dt):
    """Both sides of every edge of float32 tanh's intervals (0.09375 and the
    half binades above it up to 12, and the clamp at 9.1), with both signs."""
    edges = [0.0625, 0.09375, 9.1] + [b * f for b in 2.0 ** np.arange(-3, 4) for f in (1, 1.5)]
    e = np.array(edges, np.float32)
    x = np.concatenate([np.nextafter(e, -1), e, np.nextafter(e, 20)]).astype(dt)
    return np.concatenate([x, -x])


def _results(dt):
    x = _inputs(dt)
    rows = np.resize(x[np.isfinite(x)], (61, 257))
    w = np.linspace(0.5, 2, 257).astype(dt)
    out = {}
    with np.errstate(all="ignore"):
        for name in UNARY:
            out[name] = getattr(ops, name)(x)
        out["tanh edges"] = ops.tanh(_interval_edges(dt))
        # every length around the vector widths, and every start within a
        # cache line (the unary loops align their stores: a short first part)
        buf = np.resize(x, 200)
        for name in UNARY:
            for n in range(1, 40):
                for start in (0, 1, 3, 8, 15):
                    out[f"{name} {n} at {start}"] = getattr(ops, name)(buf[start : start + n])
            src = buf[1:181].copy()
            y = np.empty(200, dt)[3:183]
            getattr(ops, name)(src, out=y)
            out[f"{name} misaligned out"] = y
        # the reductions' blocks are the variant's too (sum: a fixed tree)
        fin = x[np.isfinite(x)]
        for name in ("sum", "max", "min", "argmax"):
            for n in (1, 31, 32, 33, 63, 64, 65, 255, 257, 4095, 4096, 4097, 8192, 12001):
                out[f"{name} {n}"] = np.asarray(getattr(ops, name)(np.resize(fin, n)))
            out[f"{name} with nan"] = np.asarray(getattr(ops, name)(x))
        out["softmax"] = ops.softmax(rows)
        out["log_softmax"] = ops.log_softmax(rows)
        out["layer_norm"] = ops.layer_norm(rows, w, w)
        # the row kernels' tails: every length around their vector widths
        finite = x[np.isfinite(x)]
        for d in list(range(1, 70)) + [255, 256, 257, 1000]:
            r = np.resize(finite, (3, d))
            out[f"softmax {d}"] = ops.softmax(r)
            out[f"log_softmax {d}"] = ops.log_softmax(r)
            out[f"layer_norm {d}"] = ops.layer_norm(r, None, None)
    return out


def test_the_baseline_is_built_and_runs_and_one_variant_is_chosen():
    names = [n for n, _ in _dispatch.variants()]
    assert names[-1] == "baseline" and "baseline" in RUNNABLE
    assert _dispatch.variant() in RUNNABLE
    # the best runnable variant unless FORKWAIT_CPU_VARIANT chose another
    if not os.environ.get("FORKWAIT_CPU_VARIANT"):
        assert _dispatch.variant() == RUNNABLE[0]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 variants")
def test_x86_64_builds_an_avx2_variant():
    assert "avx2" in [n for n, _ in _dispatch.variants()]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_every_runnable_variant_gives_identical_bits(dt, restore_variant):
    if len(RUNNABLE) < 2:
        pytest.skip("this CPU runs only the baseline")
    ref = None
    for name in RUNNABLE:
        _dispatch._set_variant(name)
        got = _results(dt)
        if ref is None:
            ref = got
            continue
        for op, r in ref.items():
            assert got[op].tobytes() == r.tobytes(), (name, op)


def test_set_variant_refuses_unknown_names():
    with pytest.raises(ValueError, match="no CPU variant"):
        _dispatch._set_variant("sse9")


def test_each_variant_says_what_it_was_compiled_for(restore_variant):
    isa = {}
    for name in RUNNABLE:
        _dispatch._set_variant(name)
        isa[name] = _dispatch.variant_isa().split()
    if platform.machine() in ("x86_64", "AMD64"):
        assert isa["baseline"][0] == "x86-64" and "avx2" not in isa["baseline"]
        if "avx2" in isa:
            assert {"avx2", "fma"} <= set(isa["avx2"]) and "avx512f" not in isa["avx2"]
        if "avx512" in isa:
            assert {"avx2", "fma", "avx512f", "avx512vl"} <= set(isa["avx512"])


def test_parallel_info_names_the_variant():
    assert f"CPU variant of the kernels: {_dispatch.variant()}" in fw.parallel_info()


def test_env_var_chooses_the_variant_in_a_fresh_process():
    code = "from forkwait._native import _dispatch; print(_dispatch.variant())"
    r = run_python(code, env={"FORKWAIT_CPU_VARIANT": "baseline"})
    assert r.stdout.strip() == "baseline"
