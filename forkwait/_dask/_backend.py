"""``fw.backend(client)``: the blocks, per thread, and fork()'s hook."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, NamedTuple

from forkwait._dask._shared import _short, _state_lock
from forkwait._dask._submit import _submit
from forkwait._dask._worker import _configure_workers
from forkwait._native import pool
from forkwait._native.pool import Future

_tls = threading.local()  # .stack: the _Active entries of this thread, innermost last
_n_active = 0  # backend blocks entered and not left, all threads together
_outer_hook: Any = None  # the fork hook that was there before the first block

class _Active(NamedTuple):
    backend: ClusterBackend
    client: Any
    exits: contextlib.ExitStack


class ClusterBackend:
    """A ``with`` block that sends this thread's top-level forks to a Dask cluster.

    Made by :func:`backend`; see there. It may be entered again, nested, and
    from several threads; each thread sees only the blocks it entered.

    Examples
    --------
    >>> import forkwait as fw
    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
    ...                        dashboard_address=None)
    >>> client = Client(cluster)
    >>> b = fw.backend(client)
    >>> with b:
    ...     fw.fork(sum, [1, 2, 3]).wait()
    6
    >>> b.client is client
    True
    >>> client.close(); cluster.close()
    """

    def __init__(self, client: Any) -> None:
        self._client = client  # None: the default client, looked up at entry

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` that this thread's innermost block uses.

        Outside the block: the client it was made with (None for ``"dask"``).

        Examples
        --------
        >>> import forkwait as fw
        >>> fw.backend("dask").client is None
        True
        """
        for entry in reversed(getattr(_tls, "stack", ())):
            if entry.backend is self:
                return entry.client
        return self._client

    def __enter__(self) -> ClusterBackend:
        import distributed

        exits = contextlib.ExitStack()
        client = self._client
        try:
            if _in_dask_task():
                # A task that waits on cluster futures must not hold a
                # worker thread meanwhile: secede now, rejoin at the end.
                inner = exits.enter_context(distributed.worker_client())
                if client is None:
                    client = inner
            elif client is None:
                client = _default_client()
            _check_client(client)
            _configure_workers(client)
        except BaseException:
            exits.close()
            raise
        stack = _tls.__dict__.setdefault("stack", [])
        stack.append(_Active(self, client, exits))
        _activate(+1)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _tls.__dict__.get("stack", [])
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].backend is self:
                entry = stack.pop(i)
                break
        else:  # pragma: no cover - __exit__ without __enter__
            return
        _activate(-1)
        entry.exits.close()

    def __repr__(self) -> str:
        client = self.client
        where = "the default client" if client is None else repr(client)
        return f"<forkwait.backend on {where}>"


def backend(client: Any = "dask") -> ClusterBackend:
    """Run the forks of a ``with`` block on a Dask distributed cluster.

    Inside ``with fw.backend(client):`` the forks made by the thread that
    entered the block, outside any forkwait task, are submitted to the
    cluster (``pure=False``: two identical forks run twice). Forks made inside
    a task, on the cluster or locally, run on the local pool of the machine
    that runs the task; other threads and code outside the block are not
    affected. A cluster fork returns a :class:`forkwait.Future`: ``wait``,
    ``result(timeout)``, ``then``, ``collect_all``, ``await`` ... work as for
    a local one, and a task's exception arrives with its type and the
    remote traceback (a ``SystemExit`` or ``KeyboardInterrupt`` in a cluster
    task ends its Dask worker instead: see docs/distributed.md, "Faults").
    A forkwait future passed as an argument of a cluster
    fork (also inside a list, tuple or dict) becomes a Dask dependency: the
    data moves from worker to worker, and the function receives a finished
    forkwait future, as it would locally.

    Parameters
    ----------
    client : distributed.Client or "dask"
        The client to submit through; ``"dask"`` (the default) means the
        current default client (``distributed.get_client()``), looked up
        when the block is entered. Inside a task running on the cluster,
        entering the block secedes from the worker's thread pool until the
        block ends (as ``distributed.worker_client`` does), so nested waits
        never starve the cluster.

    Returns
    -------
    ClusterBackend
        A context manager; it may be entered again, nested, or from other
        threads.

    Raises
    ------
    ImportError
        If ``distributed`` is not installed (``pip install "forkwait[dask]"``).
    TypeError, ValueError
        If `client` is neither a ``distributed.Client`` nor ``"dask"``; when
        the block is entered with ``"dask"`` and no client is running.

    Notes
    -----
    Each cluster task costs Dask's own round trip (milliseconds, see
    ``docs/distributed.md``): send coarse work there, and let the work inside
    each task fork locally.

    Examples
    --------
    >>> import forkwait as fw
    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
    ...                        dashboard_address=None)
    >>> client = Client(cluster)
    >>> with fw.backend(client):
    ...     a = fw.fork(pow, 2, 10)                      # runs on a worker
    ...     b = fw.fork(lambda f: fw.wait(f) // 4, a)    # gets `a` as a finished future
    ...     fw.wait_all([a, b])
    [1024, 256]
    >>> client.close(); cluster.close()
    """
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            'fw.backend() needs Dask distributed: pip install "forkwait[dask]"'
        ) from exc
    if isinstance(client, str):
        if client != "dask":
            raise ValueError(
                f'fw.backend() takes a distributed.Client or "dask", got the string {client!r}'
            )
        return ClusterBackend(None)
    if not isinstance(client, distributed.Client):
        raise TypeError(
            'fw.backend() takes a distributed.Client or "dask", got '
            f"{type(client).__name__}: {_short(client)}"
        )
    return ClusterBackend(client)


def _default_client() -> Any:
    import distributed

    try:
        return distributed.get_client()
    except ValueError as exc:
        raise ValueError(
            'fw.backend("dask") found no running Dask client: start one first '
            "(distributed.Client(address) or Client(LocalCluster())), or pass it: "
            "fw.backend(client)"
        ) from exc


def _check_client(client: Any) -> None:
    status = getattr(client, "status", "running")
    if status not in ("running", "connecting", "newly-created"):
        raise RuntimeError(f"fw.backend(): the Dask client is {status}, not running: {client!r}")


def _in_dask_task() -> bool:
    """True in a thread that runs a task of a Dask worker."""
    try:
        from distributed.worker import get_worker, thread_state
    except ImportError:  # pragma: no cover
        return False
    if getattr(thread_state, "key", None) is None:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def _activate(delta: int) -> None:
    """Count a block entered (+1) or left (-1); the hook is in place while any is."""
    global _n_active, _outer_hook
    with _state_lock:
        _n_active += delta
        if delta > 0 and _n_active == 1:
            _outer_hook = pool._set_fork_hook(_hook)
        elif delta < 0 and _n_active == 0:
            pool._set_fork_hook(_outer_hook)
            _outer_hook = None


def _hook(fn: Any, args: tuple, kwargs: dict) -> Future | None:
    """fork()'s hook outside any task: submit when this thread is in a block."""
    stack = getattr(_tls, "stack", None)
    if not stack:
        outer = _outer_hook
        return outer(fn, args, kwargs) if outer is not None else None
    return _submit(stack[-1].client, fn, args, kwargs)
