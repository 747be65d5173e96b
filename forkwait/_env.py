"""Environment set before any native module loads libgomp.

OpenMP's idle threads spin by default. Measured here (docs/threads.md): on an
idle machine the wait policies are within noise of each other, but with one
other busy process the default spinning made mixed inter-op + intra-op work
1.7x to 2.6x slower than ``OMP_WAIT_POLICY=passive``. libgomp reads the
variable once, when it loads, so forkwait sets ``passive`` here unless the
user chose a policy (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set). If
another library loaded libgomp first (torch imported before forkwait), its
setting stays: set the variable in the environment then.
"""

import os
import sys

#: True when forkwait chose OMP_WAIT_POLICY (the user had set neither variable).
WAIT_POLICY_SET_BY_FORKWAIT = False
#: True when libgomp was already loaded by someone else when forkwait was imported.
LIBGOMP_PRELOADED = False


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:
        return "torch" in sys.modules


if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    LIBGOMP_PRELOADED = _libgomp_loaded()
    os.environ["OMP_WAIT_POLICY"] = "passive"
    WAIT_POLICY_SET_BY_FORKWAIT = True
