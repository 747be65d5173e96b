"""Thread settings: the intra-op team size and the inter-op pool size.

Validation and defaults live here; the values themselves live in the native
layer (``_native/_team.pyx`` and ``_native/pool.pyx``).
"""

from __future__ import annotations

import contextlib
import operator
import os
import warnings
from collections.abc import Iterator

from forkwait._native import _blas, _team, pool

#: The largest intra-op team forkwait accepts.
MAX_THREADS = 1024
#: The largest inter-op pool forkwait accepts.
MAX_INTEROP_THREADS: int = pool.MAX_INTEROP_THREADS

_MODES = {"shared": 0, "fixed": 1}


def available_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _check_count(n: object, what: str, limit: int) -> int:
    if isinstance(n, bool):
        raise TypeError(f"{what} must be a positive int, got bool {n!r}")
    try:
        value = operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a positive int, got {type(n).__name__} {n!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be a positive int, got {value}")
    if value > limit:
        raise ValueError(f"{what} must be at most {limit}, got {value}")
    return value


def _count_from_env(names: tuple[str, ...], limit: int) -> tuple[int, str]:
    """The first valid count among environment variables, else the CPU count.

    Returns the count and where it came from (for parallel_info). ``OMP_NUM_THREADS`` may be a
    list ("4,2"); its first entry is the outer level's. An invalid value is
    warned about and skipped, never fatal at import.
    """
    for name in names:
        raw = os.environ.get(name)
        if raw is None or not raw.strip():
            continue
        first = raw.split(",")[0].strip()
        try:
            return _check_count(int(first), name, limit), f"environment: {name}={raw}"
        except (TypeError, ValueError) as exc:
            warnings.warn(
                f"ignoring {name}={raw!r}: {exc if 'must' in str(exc) else 'not an integer'}",
                RuntimeWarning,
                stacklevel=3,
            )
    return min(available_cpus(), limit), "default: the CPUs available to this process"


def set_num_threads(n: int) -> None:
    """Set the intra-op team size: how many threads one kernel may use.

    Kernels read it when they are called, in whatever thread runs them (the
    main thread or an inter-op worker). In the default ``"shared"`` mode,
    kernels that run at the same time share the CPUs instead (see
    :func:`set_intra_op_mode`).

    Parameters
    ----------
    n : int
        A positive number of threads.

    Raises
    ------
    TypeError
        If `n` is not an int.
    ValueError
        If `n` is not positive.

    Examples
    --------
    >>> import forkwait as fw
    >>> old = fw.get_num_threads()
    >>> fw.set_num_threads(2)
    >>> fw.get_num_threads()
    2
    >>> fw.set_num_threads(old)
    """
    value = _check_count(n, "num_threads", MAX_THREADS)
    _team._set_global_threads(value)
    SOURCES["num_threads"] = f"set in code: set_num_threads({value})"


def get_num_threads() -> int:
    """The intra-op team size for the calling thread.

    That is the override of ``with num_threads(n)`` when one is active in this
    thread (or was inherited by this forked task), else the process-wide
    setting of :func:`set_num_threads`.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.get_num_threads() >= 1
    True
    """
    return int(_team._get_requested_threads())


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Use `n` intra-op threads in the calling thread within the block.

    Other threads keep their setting; tasks forked inside the block inherit
    it (as ``torch.set_num_threads`` would not).

    Examples
    --------
    >>> import forkwait as fw
    >>> with fw.num_threads(1):
    ...     inner = fw.get_num_threads()
    ...     in_task = fw.fork(fw.get_num_threads).wait()
    >>> inner, in_task
    (1, 1)
    """
    value = _check_count(n, "num_threads", MAX_THREADS)
    previous = _team._set_local_threads(value)
    try:
        yield
    finally:
        _team._set_local_threads(previous)


def set_num_interop_threads(n: int) -> None:
    """Set the size of the inter-op pool that runs forked calls.

    Unlike ``torch.set_num_interop_threads`` this works at any time, also
    after work has started: growing starts threads at once, shrinking stops
    the extra threads as they finish their current task.

    Parameters
    ----------
    n : int
        A positive number of threads.

    Examples
    --------
    >>> import forkwait as fw
    >>> old = fw.get_num_interop_threads()
    >>> fw.set_num_interop_threads(3)
    >>> fw.get_num_interop_threads()
    3
    >>> fw.set_num_interop_threads(old)
    """
    value = _check_count(n, "num_interop_threads", MAX_INTEROP_THREADS)
    pool._set_interop_threads(value)
    SOURCES["num_interop_threads"] = f"set in code: set_num_interop_threads({value})"


def get_num_interop_threads() -> int:
    """The size of the inter-op pool.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.get_num_interop_threads() >= 1
    True
    """
    return int(pool._get_interop_threads())


def set_intra_op_mode(mode: str) -> None:
    """Choose how kernels that run at the same time size their teams.

    ``"shared"`` (the default): kernels running at once on several threads
    share the CPUs this process may use; each gets at least one thread and at
    most :func:`get_num_threads`. No oversubscription.
    ``"fixed"``: every kernel uses :func:`get_num_threads` threads whatever
    else runs, as PyTorch does.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.set_intra_op_mode("fixed")
    >>> fw.get_intra_op_mode()
    'fixed'
    >>> fw.set_intra_op_mode("shared")
    """
    if mode not in _MODES:
        raise ValueError(f"intra-op mode must be one of {sorted(_MODES)}, got {mode!r}")
    _team._set_mode(_MODES[mode])
    SOURCES["intra_op_mode"] = f"set in code: set_intra_op_mode({mode!r})"


def get_intra_op_mode() -> str:
    """The intra-op mode: ``"shared"`` or ``"fixed"`` (see :func:`set_intra_op_mode`).

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.get_intra_op_mode() in ("shared", "fixed")
    True
    """
    mode = _team._get_mode()
    return next(name for name, value in _MODES.items() if value == mode)


def set_blas_budget(enabled: bool) -> None:
    """Limit NumPy's and SciPy's BLAS threads while several forked tasks run.

    With the budget on, while ``r >= 2`` threads run forked tasks at once,
    every BLAS library that threadpoolctl would call "blas" (OpenBLAS, MKL,
    BLIS; found among the loaded libraries, also ones loaded later) runs at
    most ``max(1, cpus // r)`` threads, so tasks x BLAS threads stay within
    the CPUs this process may use; the user's count comes back as soon as
    fewer tasks run. A task blocked in a wait does not count. This is joblib's
    ``inner_max_num_threads``, applied while the tasks run.

    Off by default: measured on a 2-core machine, NumPy matmul chains in 2 or
    4 forked branches ran slower with the budget than without (see
    docs/performance.md, "BLAS inside forked tasks"). Turn it on where the
    benchmark says so on your machine (``python bench/blas_budget.py``), or
    with ``FORKWAIT_BLAS_BUDGET=1``.

    The budget and ``ops.matmul``'s own pinning of its BLAS (NumPy's and its second
    copy) to 1 thread share one record per library, so neither leaves a library pinned.
    A count the user sets while tasks run (``threadpoolctl``) becomes the
    count restored afterwards.

    Parameters
    ----------
    enabled : bool
        True to turn the budget on, False to turn it off (restoring every
        library's count at once).

    Raises
    ------
    TypeError
        If `enabled` is not a bool.

    Examples
    --------
    >>> import numpy as np
    >>> import forkwait as fw
    >>> fw.set_blas_budget(True)
    >>> fw.get_blas_budget()
    True
    >>> a = np.ones((64, 64))
    >>> float(fw.wait_all([fw.fork(np.dot, a, a) for _ in range(4)])[0][0, 0])
    64.0
    >>> fw.set_blas_budget(False)
    """
    _set_switch("blas_budget", enabled, _blas.set_budget)


def get_blas_budget() -> bool:
    """Whether the BLAS budget is on (see :func:`set_blas_budget`).

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.get_blas_budget() in (True, False)
    True
    """
    return bool(_blas.budget_on())


def set_torch_budget(enabled: bool) -> None:
    """Share the CPUs between PyTorch's intra-op threads in forked tasks.

    PyTorch sizes each intra-op team (``at::parallel_for``, its MKL and
    oneDNN calls) from a per-thread OpenMP setting of its own libgomp, and a
    thread takes ``torch.set_num_threads``'s count once, at its first
    parallel call. Without a budget every forked eager branch runs torch's
    full team, so ``r`` branches at once run ``r x`` that many threads.

    With the budget on (the default), a thread that begins a forked task
    while ``r`` threads run tasks (itself included; a task blocked in a wait
    does not count) sets that per-thread setting, in torch's libgomp and in
    its own thread only, to ``max(1, cpus // r)`` for the task, and to torch's
    own count when the task runs alone; never above the count torch had in
    the thread that forked the task (``torch.set_num_threads``,
    ``OMP_NUM_THREADS``: an upper bound). The thread's setting is put back
    when the task ends. torch's process-wide setting is never changed, and a
    task that calls ``torch.set_num_threads`` itself keeps its count. The
    share is taken when the task begins: a task that began alone keeps its
    full team if others begin after it.

    Nothing happens until torch is imported by the program (forkwait never
    imports it), nor with a torch built without OpenMP. Turn it off with
    ``set_torch_budget(False)`` or ``FORKWAIT_TORCH_BUDGET=0``. See
    docs/pytorch.md.

    Parameters
    ----------
    enabled : bool
        True to turn the budget on, False to turn it off (tasks that begin
        afterwards leave torch's threads as they are).

    Raises
    ------
    TypeError
        If `enabled` is not a bool.

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.set_torch_budget(False)
    >>> fw.get_torch_budget()
    False
    >>> fw.set_torch_budget(True)
    """
    _set_switch("torch_budget", enabled, _blas.set_torch_budget)


def get_torch_budget() -> bool:
    """Whether the torch budget is on (see :func:`set_torch_budget`).

    Examples
    --------
    >>> import forkwait as fw
    >>> fw.get_torch_budget() in (True, False)
    True
    """
    return bool(_blas.torch_budget_on())


def _set_switch(key: str, enabled: object, setter) -> None:
    """set_blas_budget / set_torch_budget: check, set (with the CPUs the
    budgets divide) and record where the setting came from."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
    setter(enabled, available_cpus())
    SOURCES[key] = f"set in code: set_{key}({enabled})"


def _switch_from_env(name: str, default: bool) -> tuple[bool, str]:
    """An on/off environment switch: its value and where it came from."""
    raw = os.environ.get(name, "").strip()
    if raw:
        if raw.lower() in ("1", "true", "on", "yes"):
            return True, f"environment: {name}={raw}"
        if raw.lower() in ("0", "false", "off", "no"):
            return False, f"environment: {name}={raw}"
        warnings.warn(f"ignoring {name}={raw!r}: not 0/1/true/false/on/off",
                      RuntimeWarning, stacklevel=3)
    return default, f"default: {'on' if default else 'off'}"


def _init_from_env() -> dict[str, str]:
    """Apply the environment's defaults at import; return where each came from."""
    intra, intra_src = _count_from_env(("FORKWAIT_NUM_THREADS", "OMP_NUM_THREADS"), MAX_THREADS)
    inter, inter_src = _count_from_env(("FORKWAIT_NUM_INTEROP_THREADS",), MAX_INTEROP_THREADS)
    _team._set_cpu_budget(available_cpus())
    _team._set_global_threads(intra)
    pool._set_interop_threads(inter)
    mode_src = "default"
    mode = os.environ.get("FORKWAIT_INTRA_OP_MODE", "").strip()
    if mode:
        try:
            set_intra_op_mode(mode)
            mode_src = f"environment: FORKWAIT_INTRA_OP_MODE={mode}"
        except ValueError as exc:
            warnings.warn(f"ignoring FORKWAIT_INTRA_OP_MODE: {exc}", RuntimeWarning, stacklevel=2)
    blas_on, budget_src = _switch_from_env("FORKWAIT_BLAS_BUDGET", False)
    if blas_on:
        _blas.set_budget(True, available_cpus())
    torch_on, torch_src = _switch_from_env("FORKWAIT_TORCH_BUDGET", True)
    _blas.set_torch_budget(torch_on, available_cpus())
    return {"num_threads": intra_src, "num_interop_threads": inter_src,
            "intra_op_mode": mode_src, "blas_budget": budget_src, "torch_budget": torch_src}


def _save_settings() -> tuple[int, int, str, dict[str, str]]:
    """The three settings and where each came from (for tools that try
    settings and put them back)."""
    return (int(_team._get_global_threads()), get_num_interop_threads(),
            get_intra_op_mode(), dict(SOURCES))


def _restore_settings(saved: tuple[int, int, str, dict[str, str]]) -> None:
    """Put back what :func:`_save_settings` returned, sources included."""
    intra, inter, mode, sources = saved
    set_num_threads(intra)
    set_num_interop_threads(inter)
    set_intra_op_mode(mode)
    SOURCES.update(sources)


#: Where each setting's value came from: "set in code: ...", "environment:
#: NAME=value" or "default: ...". parallel_info() prints them.
SOURCES: dict[str, str] = {}
SOURCES.update(_init_from_env())
