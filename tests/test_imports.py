"""The module graph: no module imports a module that imports it, function-local imports too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src"


def module_graph() -> dict[str, set[str]]:
    """Each ``opencdp`` module and the ``opencdp`` modules it imports anywhere in its text."""
    paths = {
        ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): path
        for path in SRC.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in paths}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in paths else base)
        graph[name] = {module for module in found if module in paths and module != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    return seen


def test_no_module_imports_a_module_that_imports_it() -> None:
    graph = module_graph()
    assert len(graph) > 30 and "opencdp.api.tracking" in graph
    cycles = sorted(name for name in graph if name in reachable(graph, name))
    assert cycles == []


def test_metrics_know_nothing_of_the_api() -> None:
    """The metrics middleware reads the route's labels from the ASGI scope instead."""
    graph = module_graph()
    assert not {m for m in reachable(graph, "opencdp.metrics") if m.startswith("opencdp.api")}
    assert "opencdp.metrics" in graph["opencdp.api.routing"]
