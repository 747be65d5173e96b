"""forkwait's compiled core. Importing it from an unbuilt source tree fails
with a message that says how to build."""

try:
    import forkwait._native._team  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without a build
    import os

    raise ImportError(
        "forkwait's compiled modules are missing "
        f"(looked in {os.path.dirname(__file__)}). Install the package with "
        "`pip install .` and run from another directory, or build in place with "
        "`python setup.py build_ext --inplace`."
    ) from exc
