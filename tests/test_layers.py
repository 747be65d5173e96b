"""The package's modules import downward only: read from the source with
``ast``, so that the rule holds for imports inside functions and for
``sys.modules`` and ``importlib`` look-ups too, whatever a test run loads."""

import ast
from pathlib import Path

import forkwait

PACKAGE = Path(forkwait.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["forkwait", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


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


def imports_in(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, forkwait module) of every import in `source`, the text of
    `module`: import statements at any depth, ``sys.modules[...]`` /
    ``sys.modules.get(...)`` and ``importlib.import_module(...)`` with a
    constant name (or an f-string's constant head)."""
    out = []
    for node in ast.walk(ast.parse(source, module)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_package, node)
            # `from forkwait import _threads` imports the module forkwait._threads
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in KNOWN else base
                     for a in node.names]
        elif isinstance(node, ast.Subscript) and _is_sys_modules(node.value):
            names = [_constant_prefix(node.slice) or ""]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("get", "pop") \
                    and _is_sys_modules(func.value):
                names = [_constant_prefix(node.args[0]) or ""]
            elif (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
                    isinstance(func, ast.Name) and func.id == "import_module"):
                names = [_constant_prefix(node.args[0]) or ""]
        out.extend((node.lineno, n) for n in names
                   if n == "forkwait" or n.startswith("forkwait."))
    return out


def imports_of(module: str) -> list[tuple[int, str]]:
    """imports_in() of `module`'s source file."""
    path = MODULES[module]
    return imports_in(path.read_text(), module, path.name == "__init__.py")


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_walker_sees_every_kind_of_import():
    # the walker itself: lazy imports, from-imports of modules, sys.modules
    seen = {name for _, name in imports_of("forkwait.cli")}
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
    found = sorted(name for _, name in imports_in(source, "forkwait._some_module"))
    assert found == ["forkwait._dask", "forkwait._info", "forkwait._threads", "forkwait.cli",
                     "forkwait.ops"]


def test_no_module_outside_the_cli_imports_it():
    wrong = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {name}"
        for m in MODULES if not _inside(m, "forkwait.cli") and m != "forkwait.__main__"
        for line, name in imports_of(m) if _inside(name, "forkwait.cli")
    ]
    assert not wrong, "library code imports the CLI:\n" + "\n".join(wrong)
