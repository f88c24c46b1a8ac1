"""The import graph points one way: base <- plug-ins <- orchestration, and reports only read the base.

Built with ``ast`` from the source files (nothing heavy is imported), counting imports inside functions
too: a lazy import is still a dependency. ``benchmark/`` holds two floors, so its orchestration modules
(CLI, pipeline, stages, sweep, cluster, gate) form their own node; every other module's node is its top-level package.
Module by module, the graph has no cycle at all.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "generators", "downstream", "reports")
#: the top floor of ``benchmark/``: it may import everything; nothing below it imports it
ORCHESTRATION = frozenset({"benchmark.__main__", "benchmark.cli", "benchmark.pipeline", "benchmark.stages",
                           "benchmark.sweep", "benchmark.sweep_spec", "benchmark.sweep_plan", "benchmark.sweep_tasks",
                           "benchmark.cluster", "benchmark.gate", "benchmark.campaign"})
BASE = "benchmark"
PLUGINS = frozenset({"generators", "downstream"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Absolute module names that ``path`` imports anywhere in its body (``from x import y`` gives ``x.y``
    as well as ``x``, since ``y`` may be a submodule)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def layer_of(module: str) -> str | None:
    """The graph node of a project module (None for third-party modules)."""
    top = module.split(".")[0]
    if top not in PACKAGES:
        return None
    if any(module == m or module.startswith(f"{m}.") for m in ORCHESTRATION):
        return "orchestration"
    return top


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def module_edges() -> set[tuple[str, str]]:
    """(importer, imported) pairs between project modules."""
    known = {module_name(p) for p in source_files()}
    edges = set()
    for path in source_files():
        for name in imported_modules(path):
            if name in known:
                edges.add((module_name(path), name))
    return edges


def layer_edges() -> dict[tuple[str, str], list[str]]:
    """Edges between different nodes, each with the module imports that create it (for the message)."""
    out: dict[tuple[str, str], list[str]] = {}
    for importer, imported in module_edges():
        a, b = layer_of(importer), layer_of(imported)
        if a is not None and b is not None and a != b:
            out.setdefault((a, b), []).append(f"{importer} -> {imported}")
    return out


def find_cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle of the directed graph as a node list, or None (depth-first search)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt]
            if nxt not in state:
                found = visit(nxt, [*stack, node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [])
            if found:
                return found
    return None


def test_the_graph_walker_sees_lazy_imports_and_finds_cycles() -> None:
    assert ("benchmark.pipeline", "generators.registry") in module_edges()  # imported inside a function
    assert find_cycle({("a", "b"), ("b", "c"), ("c", "a")}) is not None
    assert find_cycle({("a", "b"), ("b", "c"), ("a", "c")}) is None


def test_no_cycle_between_top_level_packages() -> None:
    edges = layer_edges()
    cycle = find_cycle(set(edges))
    detail = {pair: edges[pair] for pair in zip(cycle, cycle[1:], strict=False)} if cycle else {}
    assert cycle is None, f"import cycle {' -> '.join(cycle)}: {detail}"


def test_no_cycle_between_modules() -> None:
    """Module by module (not only between layers), with imports read anywhere in a file: a cycle hides which
    module owns what (the sweep driver and Ray's task runner once imported each other)."""
    cycle = find_cycle({(a, b) for a, b in module_edges() if a != b})
    assert cycle is None, f"module import cycle {' -> '.join(cycle)}"


def test_base_imports_no_plugin_orchestration_or_report() -> None:
    upward = {pair: imports for pair, imports in layer_edges().items() if pair[0] == BASE}
    assert not upward, f"the base layer imports upward: {upward}"


def test_plugins_and_reports_do_not_import_orchestration() -> None:
    bad = {pair: imports for pair, imports in layer_edges().items()
           if pair[1] == "orchestration" or (pair[0] == "reports" and pair[1] in PLUGINS)
           or (pair[0] in PLUGINS and pair[1] == "reports")}
    assert not bad, f"imports that point the wrong way: {bad}"


def test_no_module_imports_another_modules_private_names() -> None:
    """``from x import _name`` couples a module to another's internals; owners give such names a public one."""
    found = []
    for path in [*source_files(), *sorted((ROOT / "scripts").rglob("*.py")), *sorted((ROOT / "tests").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, f"private names imported across modules: {found}"
