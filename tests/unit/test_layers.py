"""The layers' arrows point one way: the import graph of the package, checked rule by rule.

Built by reading every module's imports from its AST (``TYPE_CHECKING`` and function-level
imports included), with ``streamstore/projections`` resolved through its symlink, so a tie hidden
by the link or by a type-only import shows here too.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "streamstore"

#: Pure: no I/O, no clock; everything else stands on it.
CORE = {
    "streamstore.arguments",
    "streamstore.errors",
    "streamstore.events",
    "streamstore.keys",
    "streamstore.operations",
    "streamstore.paths",
    "streamstore.plan",
    "streamstore.schema",
    "streamstore.projections.diff",
    "streamstore.projections.fold",
    "streamstore.projections.upcasting",
}
#: Thin Redis executors: they send what the core planned.
EXECUTORS = {
    "streamstore.connection",
    "streamstore.durability",
    "streamstore.executor",
    "streamstore.routing",
}
#: The model API users call.
MODEL_API = {
    "streamstore.autosave",
    "streamstore.changes",
    "streamstore.enabled",
    "streamstore.fields",
    "streamstore.locking",
    "streamstore.many",
    "streamstore.model",
    "streamstore.pipeline",
    "streamstore.store",
    "streamstore.table",
    "streamstore.timeline",
}
#: What the core must not import: Redis, the event loop, and I/O.
IO_MODULES = {"redis", "asyncio", "socket", "subprocess", "os", "io", "pathlib", "shutil"}


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name; the projections symlink resolved."""
    found: dict[str, Path] = {}
    files = (
        Path(folder, name)
        for folder, _, names in os.walk(PACKAGE, followlinks=True)  # rglob skips the link
        for name in names
        if name.endswith(".py")
    )
    for path in files:
        parts = ["streamstore", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path.resolve()
    return found


MODULES = module_files()


def imported_names(name: str, path: Path) -> Iterator[str]:
    """Yield every absolute name ``name`` imports (modules, and module.attribute pairs)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            subs = [f"{base}.{alias.name}" for alias in node.names]
            inside = [sub for sub in subs if sub in MODULES]
            yield from inside
            if len(inside) < len(subs):  # names taken from the module itself
                yield base


def build_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Return, per module, the package modules it imports and the top-level outside ones."""
    inside: dict[str, set[str]] = {}
    outside: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        names = set(imported_names(name, path))
        inside[name] = {n for n in names if n in MODULES and n != name}
        outside[name] = {n.split(".")[0] for n in names if not n.startswith("streamstore")}
    return inside, outside


GRAPH, EXTERNAL = build_graph()


def arrows(sources: set[str], targets: set[str]) -> list[str]:
    """The imports from a module of ``sources`` to one of ``targets``, as ``a -> b``."""
    return sorted(f"{a} -> {b}" for a in sources for b in GRAPH[a] if b in targets)


def in_package(prefix: str) -> set[str]:
    return {name for name in MODULES if name == prefix or name.startswith(prefix + ".")}


def test_the_graph_sees_the_read_side_through_the_symlink():
    assert "streamstore.projections.fold" in MODULES
    assert "streamstore.operations" in GRAPH["streamstore.projections.fold"]
    assert set(MODULES) >= (CORE | EXECUTORS | MODEL_API)


def test_the_core_imports_nothing_above_it():
    assert arrows(CORE, set(MODULES) - CORE) == []


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_does_no_io(module: str):
    assert EXTERNAL[module] & IO_MODULES == set()


def test_executors_import_no_model_api_and_no_read_side():
    assert arrows(EXECUTORS, MODEL_API | in_package("streamstore.projections")) == []


def test_the_read_side_imports_no_model_api():
    assert arrows(in_package("streamstore.projections"), MODEL_API) == []


def test_the_model_api_reaches_the_read_side_through_timeline_only():
    doors = {a.split(" -> ")[0] for a in arrows(MODEL_API, in_package("streamstore.projections"))}
    assert doors <= {"streamstore.timeline"}


def test_the_model_api_imports_no_cli_or_runner():
    shells = in_package("streamstore.cli") | {"streamstore.projections.runner"}
    assert arrows(MODEL_API, shells) == []


def test_nothing_imports_the_compat_layer():
    compat = in_package("streamstore.compat")
    assert arrows(set(MODULES) - compat - {"streamstore"}, compat) == []


def cycles() -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(GRAPH[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_type_only_imports_included():
    assert cycles() == []
