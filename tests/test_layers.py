"""The package's modules import downward only: read from the source with
``ast``, so that the rule holds for imports inside functions and for
``sys.modules`` and ``importlib`` look-ups too, whatever a test run loads."""

import ast
import re
from pathlib import Path

import forkwait

PACKAGE = Path(forkwait.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["forkwait", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# The floors, bottom to top (the same order is written in forkwait/__init__.py):
# a module may import its own floor and the floors below it, never one above.
LAYERS = (
    ("forkwait._native", "forkwait._version"),
    ("forkwait._measure",),
    ("forkwait.ops", "forkwait._threads", "forkwait._futures", "forkwait._dask"),
    ("forkwait._profile", "forkwait._tune", "forkwait._info"),
    ("forkwait",),  # the package's __init__: it hands the public names on
    ("forkwait.cli", "forkwait.__main__"),
)

MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# extension modules (Cython) and packages count as modules that may be imported
KNOWN = set(MODULES) | {
    _module_name(p.with_suffix(".py")) for p in PACKAGE.rglob("*.pyx")
}


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _constant_prefix(node: ast.expr) -> str | None:
    """The string a module name starts with: a constant, or an f-string's
    constant head ("forkwait.cli." of f"forkwait.cli.{name}")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value.rstrip(".")
    return None


def _is_sys_modules(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "modules"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def imports_in(source: str, module: str, is_package: bool = False) -> list[tuple[int, str, str]]:
    """(line, forkwait module, how) of every import in `source`, the text of
    `module`: import statements at any depth ("import"), ``sys.modules[...]``
    and ``sys.modules.get(...)`` ("sys.modules") and
    ``importlib.import_module(...)`` ("import_module") with a constant name
    (or an f-string's constant head)."""
    out = []
    for node in ast.walk(ast.parse(source, module)):
        names: list[str] = []
        how = "import"
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_package, node)
            # `from forkwait import _threads` imports the module forkwait._threads
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in KNOWN else base
                     for a in node.names]
        elif isinstance(node, ast.Subscript) and _is_sys_modules(node.value):
            names, how = [_constant_prefix(node.slice) or ""], "sys.modules"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("get", "pop") \
                    and _is_sys_modules(func.value):
                names, how = [_constant_prefix(node.args[0]) or ""], "sys.modules"
            elif (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
                    isinstance(func, ast.Name) and func.id == "import_module"):
                names, how = [_constant_prefix(node.args[0]) or ""], "import_module"
        out.extend((node.lineno, n, how) for n in names
                   if n == "forkwait" or n.startswith("forkwait."))
    return out


def imports_of(module: str) -> list[tuple[int, str, str]]:
    """imports_in() of `module`'s source file."""
    path = MODULES[module]
    return imports_in(path.read_text(), module, path.name == "__init__.py")


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def floor_of(module: str) -> int:
    """The index in LAYERS of the floor `module` belongs to (the longest
    prefix wins: forkwait.ops is not the floor of "forkwait")."""
    best, floor = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if _inside(module, name) and len(name) > best:
                best, floor = len(name), i
    if floor < 0:
        raise LookupError(f"{module} is on no floor: add it to LAYERS in tests/test_layers.py")
    return floor


def test_the_walker_sees_every_kind_of_import():
    # the walker itself: lazy imports, from-imports of modules, sys.modules
    seen = {name for _, name, _ in imports_of("forkwait.cli")}
    assert "forkwait.cli" in seen and "forkwait.cli._common" in seen
    source = (
        "import sys, importlib\n"
        "def f(name):\n"
        "    from forkwait import _threads\n"
        "    from . import _dask\n"
        "    sys.modules.get('forkwait.ops')\n"
        "    sys.modules['forkwait._info']\n"
        "    importlib.import_module(f'forkwait.cli.{name}')\n"
        "    import numpy\n"
    )
    found = sorted((name, how) for _, name, how in imports_in(source, "forkwait._some_module"))
    assert found == [("forkwait._dask", "import"), ("forkwait._info", "sys.modules"),
                     ("forkwait._threads", "import"), ("forkwait.cli", "import_module"),
                     ("forkwait.ops", "sys.modules")]


def test_no_module_outside_the_cli_imports_it():
    wrong = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {name}"
        for m in MODULES if not _inside(m, "forkwait.cli") and m != "forkwait.__main__"
        for line, name, _ in imports_of(m) if _inside(name, "forkwait.cli")
    ]
    assert not wrong, "library code imports the CLI:\n" + "\n".join(wrong)


def test_every_module_is_on_a_floor():
    for module in MODULES:
        floor_of(module)
    assert floor_of("forkwait") == 4 and floor_of("forkwait.ops._profiling") == 2


def test_no_import_runs_up_a_floor():
    wrong = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {name} "
        f"(floor {floor_of(name)} > {floor_of(m)})"
        for m in MODULES
        for line, name, _ in imports_of(m) if floor_of(name) > floor_of(m)
    ]
    assert not wrong, ("imports that run up a floor (lower modules offer a hook that the "
                       "upper one installs instead):\n" + "\n".join(wrong))


def test_no_module_looks_another_up_in_sys_modules():
    # a look-up by name hides a dependency from readers (and from the test
    # above): import the module, or let it offer a hook
    wrong = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} looks up {name} in sys.modules"
        for m in MODULES for line, name, how in imports_of(m) if how == "sys.modules"
    ]
    assert not wrong, "\n".join(wrong)


CYTHON_IMPORT = re.compile(r"^\s*(?:from\s+(forkwait[\w.]*)\s+import\b|import\s+(forkwait[\w.]*))")


def test_the_native_floor_imports_only_itself():
    # the .pyx sources, line by line (cimports are compile-time and stay in _native)
    assert CYTHON_IMPORT.match("    from forkwait._tune import tune").group(1) == "forkwait._tune"
    assert not CYTHON_IMPORT.match("from forkwait._native._team cimport team_begin")
    wrong = []
    for path in sorted((PACKAGE / "_native").glob("*.pyx")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = CYTHON_IMPORT.match(line)
            if match:
                name = match.group(1) or match.group(2)
                if floor_of(name) > floor_of("forkwait._native"):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{number} imports {name}")
    assert not wrong, "\n".join(wrong)
