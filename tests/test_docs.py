"""The examples in README.md and docs/*.md run (each file in a fresh process,
its python blocks in order, sharing one namespace)."""

import pathlib
import re

import pytest
from _child import run_python

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# a page whose examples need an optional package says so: <!-- examples need: torch -->
NEEDS = re.compile(r"<!-- examples need: ([\w, ]+) -->")


def blocks(path):
    return FENCE.findall(path.read_text())


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_doc_examples_run(path, tmp_path):
    code = blocks(path)
    if not code:
        pytest.skip(f"{path.name} has no python examples")
    for found in NEEDS.findall(path.read_text()):
        for module in found.replace(",", " ").split():
            pytest.importorskip(module)
    program = "\n\n".join(code)
    # run in a scratch directory: examples may write files (traces, plots)
    run_python(program, timeout=300, cwd=tmp_path)


def test_docs_have_examples():
    assert blocks(ROOT / "README.md")
    assert blocks(ROOT / "docs" / "guide.md")


def test_the_readme_main_job_install_brings_what_the_tools_use():
    # tune's heatmap and trace's picture need matplotlib, tune's BLAS check
    # threadpoolctl: the README's first command installs the extra that has both
    tomllib = pytest.importorskip("tomllib")
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "python -m forkwait demo" in line)
    extra = re.search(r'pip install -e "\.\[(\w+)\]"', command)
    assert extra, command
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["optional-dependencies"][extra.group(1)]
    names = {re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0] for dep in wanted}
    assert {"matplotlib", "threadpoolctl"} <= names
