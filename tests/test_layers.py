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


# ------------------------------------------------------------------------------------------- the import rule
def module_level_imports(path: Path) -> list[str]:
    """What ``path`` imports when it is imported: statements outside functions and ``TYPE_CHECKING`` blocks."""
    found: list[str] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append(node.module)
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for handler in node.handlers:
                    walk(handler.body)
                walk(node.orelse)
                walk(node.finalbody)
            elif isinstance(node, (ast.ClassDef, ast.With)):
                walk(node.body)

    walk(ast.parse(path.read_text(), filename=str(path)).body)
    return found


def function_level_imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import statement inside a function of ``path``."""
    for function in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield node.lineno, node.module, [alias.name for alias in node.names]
                elif isinstance(node, ast.Import):
                    yield from ((node.lineno, alias.name, []) for alias in node.names)


def reaches_heavy(module: str, files: dict[str, Path], seen: set[str] | None = None) -> bool:
    """Whether importing the project module ``module`` imports a heavy library, through module-level imports
    (its own, its packages', and those of the project modules they import)."""
    from benchmark.imports import is_heavy

    seen = set() if seen is None else seen
    parts = module.split(".")
    owners = [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in files and m not in seen]
    seen.update(owners)
    for owner in owners:
        for name in module_level_imports(files[owner]):
            if is_heavy(name) or (name in files and reaches_heavy(name, files, seen)):
                return True
    return False


def help_path_modules() -> set[str]:
    """The modules ``python -m benchmark --help`` imports (it builds every subcommand's parser)."""
    import subprocess
    import sys

    code = ("import contextlib, io, runpy, sys\nsys.argv = ['benchmark', '--help']\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        runpy.run_module('benchmark', run_name='__main__')\n    except SystemExit:\n        pass\n"
            "print('\\n'.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    return set(done.stdout.split())


def test_function_level_imports_follow_the_import_rule() -> None:
    """``benchmark.imports``: a project module is imported inside a function only when it pulls a heavy library,
    or when the importer is on ``--help``'s path and the target is not."""
    files = {module_name(p): p for p in source_files()}
    on_help = help_path_modules()
    assert "benchmark.cli" in on_help and "benchmark.gate" in on_help  # the probe saw the parsers being built
    needless = []
    for path in source_files():
        importer = module_name(path)
        for line, module, names in function_level_imports(path):
            targets = [t for t in (module, *(f"{module}.{n}" for n in names)) if t in files]
            if not targets:
                continue  # a third-party or standard-library module
            keeps_help_fast = importer in on_help and not all(t in on_help for t in targets)
            if not keeps_help_fast and not any(reaches_heavy(t, files) for t in targets):
                needless.append(f"{path.relative_to(ROOT)}:{line} {module}")
    assert not needless, f"function-level imports with no reason (benchmark/imports.py): {needless}"
