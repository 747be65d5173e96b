"""Shared by the benchmark scripts: the timing helpers live in the package
(forkwait._measure.timing, also behind `python -m forkwait bench`).

Speed is measured as a ratio against a peer run in the same process,
interleaved round by round, so that a change of machine load hits both."""

from forkwait._measure.timing import blas_limit as blas_threads  # a context manager: BLAS at n
from forkwait._measure.timing import interleaved, loadavg, median_ratio

__all__ = ["blas_threads", "interleaved", "loadavg", "median_ratio"]
