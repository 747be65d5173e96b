"""Every public name has a numpydoc docstring whose examples run."""

import doctest
import inspect

import pytest

import forkwait as fw
from forkwait._profile import Profile

# Returned by public calls, so their methods are public too.
RETURNED_TYPES = [Profile]


def _public_objects():
    for name in fw.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(fw, name)
        yield name, obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    yield f"{name}.{attr}", member
        if inspect.ismodule(obj):
            for attr in getattr(obj, "__all__", []):
                yield f"{name}.{attr}", getattr(obj, attr)
    for cls in RETURNED_TYPES:
        yield cls.__name__, cls
        for attr, member in vars(cls).items():
            if not attr.startswith("_") and callable(member):
                yield f"{cls.__name__}.{attr}", member


PUBLIC = list(_public_objects())


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_name_has_docstring_with_example(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    assert "Examples" in doc and ">>>" in doc, f"{name} has no example"


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_docstring_examples_run(name, obj):
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, name, globs={"fw": fw})
    assert tests and any(t.examples for t in tests), f"{name}: no doctest found"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} example(s) failed"
