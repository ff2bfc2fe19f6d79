"""The code's shape: no import cycles in the product packages, no test hooks in production code.

Imports are read with ``ast`` (nothing is imported or run), including the
ones inside functions: a lazy import hides a cycle from Python, not from
the reader.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("indexer", "web")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports (submodules when ``from pkg import submodule``)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {target})
    return {module for module in found if module in known and module != name}


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_real_imports():
    """Control: the walker finds the edges it must (relative, absolute and lazy imports)."""
    graph = _import_graph()
    assert "indexer.plan" in graph["indexer.build"]
    assert "indexer.engines" in graph["indexer.build"]
    assert "indexer.build" in graph["web.service"]
    assert "indexer.search" in graph["indexer.__main__"]  # imported inside a function
    assert "web.api" in graph["web"]


def test_the_cycle_finder_finds_a_cycle():
    """Control: a planted cycle is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_indexer_and_web():
    assert _find_cycle(_import_graph()) is None


TEST_HOOK = re.compile(r"TEST ONLY|fault injection|fail_once|for tests only", re.IGNORECASE)


@pytest.mark.parametrize("package", PACKAGES)
def test_production_code_has_no_test_hooks(package):
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if TEST_HOOK.search(line)
    ]
    assert offenders == []


# The web layer parses HTTP and renders; searching is the query pipeline's. Only the app
# factory, the service that loads the model and index, and the metrics that read the
# index's state reach further into the indexer (the service's loading).
WEB_MAY_USE = {"indexer.query", "indexer.options", "indexer.config"}
LOADING = {"web", "web.service", "web.metrics"}


def test_web_uses_the_indexer_only_through_the_query_pipeline():
    graph = _import_graph()
    reaching = {
        module: sorted(dep for dep in deps if dep.startswith("indexer") and dep not in WEB_MAY_USE)
        for module, deps in graph.items()
        if module.startswith("web") and module not in LOADING
    }
    assert {module: deps for module, deps in reaching.items() if deps} == {}
    # control: the walker sees the pipeline where it is used
    assert "indexer.query" in graph["web.searching"] and "indexer.options" in graph["web.views"]


def test_the_cli_and_evaluate_search_through_the_pipeline():
    graph = _import_graph()
    assert "indexer.query" in graph["indexer.__main__"]
    assert "indexer.query" in graph["indexer.evaluate"]
    assert "indexer.locate" not in graph["indexer.__main__"]  # no second, shorter path
