"""What the parts of the Dask backend share: state, locks, small helpers."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from forkwait._native.pool import Future

_logger = logging.getLogger("forkwait")

_state_lock = threading.Lock()
# A cluster fork's forkwait future -> its Dask future. The Dask future (and
# so the value on the cluster) lives as long as the forkwait future does,
# so that a later fork can take it as a dependency without moving the data.
_dask_of: weakref.WeakKeyDictionary[Future, Any] = weakref.WeakKeyDictionary()
# Clients whose workers have forkwait's settings plugin.
_configured: weakref.WeakSet[Any] = weakref.WeakSet()
_configure_lock = threading.Lock()


class _Dep:
    """Stands for the i-th Dask dependency of a cluster task."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> tuple:
        return (_Dep, (self.i,))


class _Given:
    """A forkwait future that was done when it was sent: its outcome."""

    __slots__ = ("ok", "value", "cancelled")

    def __init__(self, ok: bool, value: Any, cancelled: bool = False) -> None:
        self.ok = ok
        self.value = value
        self.cancelled = cancelled

    def __reduce__(self) -> tuple:
        return (_Given, (self.ok, self.value, self.cancelled))

    @classmethod
    def of(cls, fut: Future) -> _Given:
        if fut.cancelled():
            return cls(False, None, True)
        exc = fut.exception()
        return cls(False, exc) if exc is not None else cls(True, fut.value())


def _task_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__


def _short(obj: Any, limit: int = 80) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
