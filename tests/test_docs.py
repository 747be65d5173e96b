"""The examples in README.md and docs/*.md run (each file in a fresh process,
its python blocks in order, sharing one namespace)."""

import pathlib
import re

import pytest
from _child import run_python

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(path):
    return FENCE.findall(path.read_text())


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_doc_examples_run(path, tmp_path):
    code = blocks(path)
    if not code:
        pytest.skip(f"{path.name} has no python examples")
    program = "\n\n".join(code)
    # run in a scratch directory: examples may write files (traces, plots)
    run_python(program, timeout=300, cwd=tmp_path)


def test_docs_have_examples():
    assert blocks(ROOT / "README.md")
    assert blocks(ROOT / "docs" / "guide.md")
