"""Measuring and drawing what was measured: the helpers that both the library
(``fw.tune``, ``fw.profile``) and the command line (``python -m forkwait``)
need. ``timing`` holds the machine's load, peers timed interleaved, paired
ratios and their intervals, BLAS's threads and progress bars; ``plots`` the
matplotlib set-up (figures made without pyplot). Both the library and
``forkwait.cli`` import these modules, never the reverse (the floors are
listed in ``forkwait/__init__.py`` and checked by ``tests/test_layers.py``).
"""
