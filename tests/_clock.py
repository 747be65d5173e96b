"""A clock for tests of what a timing leaves out, on any machine.

``JumpingClock`` stands in for a module's ``time`` (``monkeypatch.setattr(
module, "time", clock)``, or an assignment in a child script): its
perf_counter() is the real one plus the jumps made so far with ``skip(s)``;
everything else is the real ``time``. A jump of an hour outside a timed
region, and a figure under an hour, shows that the region left it out,
whatever the machine's speed or load.

This module imports only ``time``, so that child scripts can import it.
"""

import time

HOUR = 3600.0


class JumpingClock:
    def __init__(self):
        self.offset = 0.0

    def skip(self, seconds):
        """Move perf_counter() on by `seconds` at once."""
        self.offset += seconds

    def perf_counter(self):
        return time.perf_counter() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)
