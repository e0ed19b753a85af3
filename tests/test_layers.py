"""The layers hold: no import circles and no `_private` name taken from another module.

An AST walk over the package (hashbench/ and baselines/), counting every import — at module
level or inside a function, since a lazy import that closes a circle still ties the two
modules together. A cycle or a cross-module private import fails with the modules named.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hashbench", "baselines")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, level: int, importer: str, is_package: bool) -> str:
    if not level:
        return module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, path: Path):
    """(line, imported module, [names taken from it]) for every import statement in a module."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}  # local name -> module, for `module._private` attribute use
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, []))
                if alias.asname:
                    aliases[alias.asname] = alias.name
                elif alias.name in MODULES:
                    aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            names = []
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                if sub in MODULES:  # `from hashbench import records`: an import of the module
                    found.append((node.lineno, sub, []))
                    aliases[alias.asname or alias.name] = sub
                else:
                    names.append(alias.name)
            found.append((node.lineno, module, names))
    for node in ast.walk(tree):  # `evaluate._check_codes` after `from hashbench import evaluate`
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((node.lineno, aliases[node.value.id], [node.attr]))
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, module, _ in _imports(name, path):
            if module in MODULES and module != name:
                graph[name].add(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_private_names_imported_across_modules():
    offenders = [f"{name} line {line}: {module}.{n}"
                 for name, path in MODULES.items()
                 for line, module, names in _imports(name, path)
                 for n in names
                 if module in MODULES and module != name and n.startswith("_") and not n.startswith("__")]
    assert offenders == []


def test_the_checks_see_a_cycle_and_a_private_import():
    # the walk itself must be able to fail: a two-module circle and a private import are caught
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert ("hashbench.commands.common" in import_graph()["hashbench.cli"])


PROBE = """
import sys
sys.argv = ["hashbench", *sys.argv[1:]]
from hashbench.cli import app
try:
    app(standalone_mode=False)
except BaseException:
    pass
heavy = sorted(m for m in sys.modules if m in ("torch", "numba") or m.startswith(("hashbench.methods.", "baselines.")))
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [
    ["report", "--format", "csv", "--results", str(ROOT / "results")],
    ["report", "--format", "latex", "--results", str(ROOT / "results")],
    ["list"],
    ["--help"],
    ["run", "--help"],
    ["run", "--bits", "63", "--datasets", "synthetic"],
    ["run", "-m", "proposed", "-d", "synthetic", "-p", "proposed.epochs=abc"],
    ["run", "-m", "lsh", "-d", "synthetic", "--ks", "0"],
])
def test_report_list_help_and_argument_errors_import_no_torch_and_no_method(args, tmp_path):
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    heavy = next(line for line in run.stdout.splitlines() if line.startswith("HEAVY:"))
    assert heavy == "HEAVY:", (heavy, run.stderr[-2000:])
