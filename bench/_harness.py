"""Shared by the benchmark scripts: the timing helpers live in the package
(forkwait._bench, also behind `python -m forkwait bench`).

Speed is measured as a ratio against a peer run in the same process,
interleaved round by round, so that a change of machine load hits both."""

from forkwait._bench import blas_threads, interleaved, loadavg, median_ratio

__all__ = ["blas_threads", "interleaved", "loadavg", "median_ratio"]
