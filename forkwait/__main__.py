"""``python -m forkwait``: the command line lives in :mod:`forkwait.cli`."""

import sys

from forkwait.cli import main

if __name__ == "__main__":
    sys.exit(main())
