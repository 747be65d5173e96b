"""Submitting a cluster fork: arguments, keys, clear pickling errors."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

from forkwait._dask import _record
from forkwait._dask._complete import _propagate_cancel, _pump_of
from forkwait._dask._shared import _dask_of, _Dep, _Given, _short, _task_name
from forkwait._dask._worker import _run_on_worker
from forkwait._native import pool
from forkwait._native.pool import Future


def _swap(obj: Any, client: Any, deps: list, pending: list) -> Any:
    """`obj` with forkwait futures replaced by what a worker can rebuild them from.

    Looks into plain tuples, lists and dicts (not subclasses, not other
    objects). A cluster future of this client becomes a Dask dependency; a
    done future its outcome; a pending local one is collected in `pending`.
    """
    t = type(obj)
    if t is Future:
        dfut = _dask_of.get(obj)
        if dfut is not None and dfut.client is client:
            for i, d in enumerate(deps):
                if d is dfut:
                    return _Dep(i)
            deps.append(dfut)
            return _Dep(len(deps) - 1)
        if not obj.done():
            pending.append(obj)
            return obj
        return _Given.of(obj)
    if t is tuple or t is list:
        items = [_swap(x, client, deps, pending) for x in obj]
        if any(a is not b for a, b in zip(items, obj, strict=True)):
            return t(items)
        return obj
    if t is dict:
        swapped = {k: _swap(v, client, deps, pending) for k, v in obj.items()}
        if any(swapped[k] is not v for k, v in obj.items()):
            return swapped
        return obj
    return obj


def _submit(client: Any, fn: Any, args: tuple, kwargs: dict) -> Future:
    out: Future = Future()
    _submit_into(client, out, fn, args, kwargs)
    return out


def _submit_into(client: Any, out: Future, fn: Any, args: tuple, kwargs: dict) -> None:
    deps: list = []
    pending: list = []
    sargs = _swap(args, client, deps, pending)
    skwargs = _swap(kwargs, client, deps, pending) if kwargs else None
    if pending:
        # Local futures that are not done yet: submit once they are.
        def later(_: Future) -> None:
            if out.done():  # cancelled meanwhile
                return
            try:
                _submit_into(client, out, fn, args, kwargs)
            except BaseException as exc:
                if not out.done():
                    out.set_exception(exc)

        # forkwait's own collection: a failure of `pending` goes to the cluster
        # fork (submitted with it), never reported as nobody's
        pool._collect_quiet(pending).add_done_callback(later)
        return
    marked = sargs is not args or (skwargs is not None and skwargs is not kwargs) or bool(deps)
    name = _task_name(fn)
    key = f"{name}-{_key_suffix()}"
    rec = _record._recorder
    if rec is not None:  # before the submit: the outcome may come back at once
        rec.submitted(key, name, client)
    me = threading.get_ident()
    _quiet.add(me)  # a pickling error is explained below, not logged by Dask
    try:
        if marked or rec is not None or (kwargs and not _SUBMIT_NAMES.isdisjoint(kwargs)):
            dfut = client.submit(
                _run_on_worker, fn, sargs, skwargs, deps, marked, rec is not None,
                key=key, pure=False,
            )
        else:
            # Nothing to rebuild or record on the worker: the task is the call
            # itself, as raw client.submit(fn, *args, **kwargs) makes it.
            dfut = client.submit(fn, *args, key=key, pure=False, **kwargs)
    except Exception as exc:
        if rec is not None:
            rec.forget(key)
        raise _explain_submit_error(exc, fn, args, kwargs) from exc
    finally:
        _quiet.discard(me)
    _dask_of[out] = dfut
    out.add_done_callback(_propagate_cancel)
    _pump_of(client).add(client, (dfut, out, key, name))


# Client.submit's own parameters: keyword arguments of the call with one of
# these names go through _run_on_worker instead of straight to submit.
_SUBMIT_NAMES = frozenset({
    "self", "func", "key", "workers", "resources", "retries", "priority", "fifo_timeout",
    "allow_other_workers", "actor", "actors", "pure",
})


# Threads inside client.submit for a cluster fork. When the task cannot be
# pickled, Dask logs "Failed to serialize ..." as an ERROR before it raises;
# forkwait raises its own TypeError that names the object instead, so that
# record (only that one, only from these threads) is dropped.
_quiet: set[int] = set()


class _QuietSubmit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread in _quiet and record.levelno >= logging.ERROR
                    and str(record.msg).startswith("Failed to serialize"))


def _install_quiet_filter() -> None:
    logger = logging.getLogger("distributed.protocol.pickle")
    if not any(isinstance(f, _QuietSubmit) for f in logger.filters):
        logger.addFilter(_QuietSubmit())


_install_quiet_filter()


# Dask keys: the function's name, then 32 hex digits unique to this process:
# a random base (24 digits) and a count (8). The base is made at the first
# cluster fork of a process and kept with its pid, so that a child made by
# os.fork() makes its own at its first fork instead of repeating the parent's
# keys (no at-fork handler: os.urandom, which uuid4 calls, costs about 0.1 ms
# here, once per process; os.getpid() costs far less than a submit).
class _KeyBase(NamedTuple):
    pid: int
    base: str
    counter: Iterator[int]


_keys: _KeyBase | None = None


def _key_base() -> _KeyBase:
    """This process's key base (made at its first call in each process)."""
    global _keys
    keys = _keys
    pid = os.getpid()
    if keys is None or keys.pid != pid:
        keys = _keys = _KeyBase(pid, uuid.uuid4().hex[:24], itertools.count())
    return keys


def _key_suffix() -> str:
    """32 hex digits that no other key of any process has."""
    keys = _key_base()
    return f"{keys.base}{next(keys.counter):08x}"


def _without_futures(obj: Any) -> Any:
    """`obj` with the forkwait futures that _swap handles replaced by None."""
    t = type(obj)
    if t is Future:
        return None
    if t is tuple or t is list:
        return t(_without_futures(x) for x in obj)
    if t is dict:
        return {k: _without_futures(v) for k, v in obj.items()}
    return obj


def _explain_submit_error(exc: Exception, fn: Any, args: tuple, kwargs: dict) -> Exception:
    """When Dask could not serialize the task: say which object it was."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - distributed depends on it
        return exc
    parts: list[tuple[str, Any]] = [("the function", fn)]
    parts += [(f"argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
    for what, obj in parts:
        try:
            cloudpickle.dumps(_without_futures(obj))
        except Exception as inner:
            hint = ""
            if "forkwait" in str(inner) and "Future" in str(inner):
                hint = (" A forkwait future can be an argument itself, or inside a plain "
                        "list, tuple or dict, not inside other objects.")
            return TypeError(
                f"fork({_task_name(fn)}) on the Dask cluster: {what} cannot be pickled, "
                f"so it cannot be sent to a worker: {_short(obj)} ({type(inner).__name__}: "
                f"{inner}). Functions and arguments of cluster forks must be picklable "
                f"(module-level functions, plain data).{hint}"
            )
    return exc
