"""The layers' import rules (docs/architecture.md) and no import cycles, read from the source.

Every import counts, at module level or inside a function: a cycle through a deferred import
is still a cycle a newcomer has to untangle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "storage", "sim_backends", "ui", "pages", "bench", "scripts")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    out = {"app": ROOT / "app.py"}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if "migrations" not in p.parts:
                out[_module_name(p)] = p
    return out


SOURCES = _sources()


def _imports(path: Path) -> set[str]:
    """Every module name this file imports (``from a.b import c`` gives a.b, and a.b.c when
    that is a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in SOURCES)
    return names


IMPORTS = {mod: _imports(path) for mod, path in SOURCES.items()}


def _in(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer, forbidden", [
    (("ui", "pages", "app"), ("torch", "mujoco", "core.learning", "core.worker", "core.cli", "sim_backends")),
    (("storage",), ("torch", "mujoco", "core.learning", "core.worker", "core.cli", "ui", "pages", "sim_backends")),
    (("core.method",), ("torch", "mujoco", "core.learning", "core.worker", "core.cli", "storage", "ui", "pages",
                        "sim_backends")),
    (("sim_backends",), ("core", "storage", "ui", "pages", "streamlit")),
    (("core.learning",), ("core.worker", "core.cli", "storage", "ui", "pages")),
])
def test_layers_import_only_what_their_rules_allow(layer, forbidden):
    bad = sorted(f"{mod} imports {name}" for mod, names in IMPORTS.items() if _in(mod, *layer)
                 for name in names if _in(name, *forbidden))
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {mod: {n for n in names if n in SOURCES and n != mod} for mod, names in IMPORTS.items()}
    # A package's __init__ re-exporting its own modules is not a cycle with them.
    graph = {m: {n for n in ns if not m == n.rpartition(".")[0]} for m, ns in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_source_tree_was_read():
    assert "core.method.detector" in SOURCES and "core.worker.runner" in SOURCES and "app" in SOURCES
    assert "core.method.detector" in IMPORTS["core.learning.rollout"]
