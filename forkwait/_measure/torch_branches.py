"""A model of independent eager PyTorch branches and its ways of running,
for ``bench/torch_branches.py`` and ``python -m forkwait demo --torch``.

The model: ``branches`` branches, each ``layers`` x (``nn.Linear(dim, dim)``,
ReLU), on one ``(batch, dim)`` float32 input; the output is the sum of the
branches' outputs. The ways of running it (each a callable returning the
output): the branches one after another in eager mode, forked with
forkwait's fork/wait, and the same model scripted, with ``torch.jit.fork``
(which runs in parallel only inside TorchScript; called from eager Python
it runs the branch on the spot).

torch is imported by the functions here, never at import of this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forkwait._native.pool import fork, wait_all


def _model_classes() -> tuple[type, type]:
    import torch

    class Branch(torch.nn.Module):
        """layers x (Linear, ReLU)."""

        def __init__(self, dim: int, layers: int) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(dim, dim) for _ in range(layers)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = torch.relu(layer(x))
            return x

    class Branches(torch.nn.Module):
        """The branches, forked with torch.jit.fork (in parallel once scripted)."""

        def __init__(self, dim: int, layers: int, branches: int) -> None:
            super().__init__()
            self.branches = torch.nn.ModuleList([Branch(dim, layers) for _ in range(branches)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            futs = [torch.jit.fork(b, x) for b in self.branches]
            return torch.stack([torch.jit.wait(f) for f in futs]).sum(0)

    return Branch, Branches


@dataclass
class BranchModel:
    """The model, its input and its scripted twin."""

    model: Any           # Branches (eager)
    scripted: Any        # torch.jit.script(model)
    x: Any               # the input
    batch: int
    dim: int
    layers: int
    branches: int

    def serial(self) -> Any:
        """Eager, the branches one after another (torch's own team inside each op)."""
        import torch

        return torch.stack([b(self.x) for b in self.model.branches]).sum(0)

    def forked(self) -> Any:
        """Eager, the branches forked with forkwait, each in inference mode
        where the caller is (torch's inference and grad modes are per
        thread: a pool thread does not inherit them)."""
        import torch

        run = _inference if torch.is_inference_mode_enabled() else _plain
        futs = [fork(run, b, self.x) for b in self.model.branches]
        return torch.stack(wait_all(futs)).sum(0)

    def jit_fork(self) -> Any:
        """The scripted model: torch.jit.fork on TorchScript's inter-op pool."""
        return self.scripted(self.x)

    def eager_jit_fork(self) -> Any:
        """The eager model as written, torch.jit.fork and all: in eager mode
        each fork runs its branch at once, in the calling thread (torch
        2.13 deprecates torch.jit: its warnings are silenced here)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.model(self.x)


def _inference(module: Any, x: Any) -> Any:
    import torch

    with torch.inference_mode():
        return module(x)


def _plain(module: Any, x: Any) -> Any:
    return module(x)


def build(batch: int, dim: int, layers: int = 4, branches: int = 4, seed: int = 0) -> BranchModel:
    """The model at the given size, in eval mode, with its scripted twin.

    Raises ImportError where torch is not installed.
    """
    import torch

    _, branches_cls = _model_classes()
    torch.manual_seed(seed)
    model = branches_cls(dim, layers, branches).eval()
    x = torch.randn(batch, dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit
        scripted = torch.jit.script(model)
    return BranchModel(model, scripted, x, batch, dim, layers, branches)


def torch_threads(n: int | None) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Wrap a way of running so that it runs with torch at `n` threads in
    the calling thread (None: as it is), putting the count back after."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        if n is None:
            return fn
        import torch

        def run() -> Any:
            was = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                return fn()
            finally:
                torch.set_num_threads(was)

        return run

    return wrap
