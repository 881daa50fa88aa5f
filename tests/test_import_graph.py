"""Imports flow one way: no cycles among the package's modules (counting imports inside
functions, which would otherwise hide one), and nothing below the front-ends imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import scfeeds

PACKAGE = Path(scfeeds.__file__).parent
FRONT_ENDS = ("scfeeds.notebook", "scfeeds.cli")


def _modules() -> dict[str, Path]:
    out = {}
    # compiled modules are known by their stubs (they import nothing of the package)
    for path in [*PACKAGE.rglob("*.pyi"), *PACKAGE.rglob("*.py")]:
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside |= {id(child) for child in ast.walk(node)}
    return inside


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time (anywhere in its body)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skip:
                continue
            for target in _targets(module, path, node):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_in_the_package() -> None:
    graph = import_graph()
    # the package facade re-exports lazily (module __getattr__); its submodules import it
    # only for names it defines itself, so it is left out of the cycle search
    graph = {m: {t for t in ts if t != "scfeeds"} for m, ts in graph.items() if m != "scfeeds"}
    assert cycles(graph) == []


def test_nothing_below_the_front_ends_imports_them() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if module == "scfeeds" or module.startswith(FRONT_ENDS):
            continue
        assert not {t for t in targets if t.startswith(FRONT_ENDS)}, module
