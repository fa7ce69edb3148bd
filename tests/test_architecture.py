"""The house rules: imports point one way, no circles, no private names across modules.

The pipeline reads top-down::

    writer (cli -> convert -> readers | fixes | tfjs files)
      -> topology (layer graphs, tracing)
        -> topology.vocabulary (tensor references, tree paths, variables, errors, notices)

Inside topology, tracing points one way too: the engine (``topology.trace``) imports the plugins
(``topology.layers``, ``topology.ops``), and they import the kit (``topology.trace_kit``); neither
the kit nor a plugin may load the engine.

Every import of the project's own modules counts, at module level and inside
functions alike (a function-local import only hides a circle until it runs).
Run ``python -m tests.test_architecture`` for the full report.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("topology", "writer")  # the installed package: every rule applies
TOOLS = ("bench",)  # run from a checkout: no circles, no private imports, may import the package
MAX_MODULE_LINES = 600
MAX_LOCAL_IMPORTS = 25
# The floors, top first: a module may import its own floor and the floors below it, never above.
FLOORS = ("bench", "writer", "topology", "topology.vocabulary")
# Tracing: the engine imports every plugin (layer kind, op family); the plugins and the kit they
# import must never load the engine, or the engine's imports would run into half-imported plugins.
TRACE_ENGINE = "topology.trace"
TRACE_KIT = "topology.trace_kit"
TRACE_PLUGINS = ("topology.layers", "topology.ops")


@dataclass(frozen=True)
class Import:
    """One import of a project module: who, what, and whether it sits inside a function."""

    importer: str
    target: str
    names: tuple[str, ...]
    line: int
    local: bool
    typing_only: bool = False  # under ``if TYPE_CHECKING:``: a circle all the same for a reader


def module_files(packages: tuple[str, ...] = PACKAGES + TOOLS) -> dict[str, Path]:
    """Every project module by dotted name, e.g. ``{"writer.cli": Path(...)}``."""
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project imports in one module, each resolved to the module it loads."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, local: bool, typing_only: bool = False) -> None:
        for child in ast.iter_child_nodes(node):
            inside = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] in PACKAGES + ("tests", "bench"):
                        found.append(Import(name, alias.name, (), child.lineno, local, typing_only))
            elif isinstance(child, ast.ImportFrom):
                source = (_resolve_relative(name, is_package, child.level, child.module)
                          if child.level else child.module or "")
                if source.split(".")[0] not in PACKAGES + ("tests", "bench"):
                    continue
                plain = []
                for alias in child.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:  # `from pkg import module`
                        found.append(Import(name, submodule, (), child.lineno, local, typing_only))
                    else:
                        plain.append(alias.name)
                if plain or not child.names:
                    found.append(Import(name, source, tuple(plain), child.lineno, local, typing_only))
            else:
                visit(child, inside, typing_only or _is_type_checking_block(child))

    visit(tree, False)
    return found


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def all_imports() -> list[Import]:
    modules = module_files()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(groups)


def floor_of(module: str) -> int:
    """The index in FLOORS of the floor ``module`` lives on (the longest matching prefix); -1 if none.

    Example:
        >>> floor_of("topology.vocabulary.errors"), floor_of("topology.infer"), floor_of("tests.x")
        (3, 2, -1)
    """
    matches = [i for i, floor in enumerate(FLOORS) if module == floor or module.startswith(floor + ".")]
    return max(matches, key=lambda i: len(FLOORS[i])) if matches else -1


def layering_violations(imports: list[Import]) -> list[Import]:
    """Imports of ``tests``/``bench``, or of a floor above the importer's."""
    return [imp for imp in imports
            if floor_of(imp.target) == -1 or floor_of(imp.target) < floor_of(imp.importer)]


def private_imports(imports: list[Import]) -> list[Import]:
    """``from other_module import _name`` (or ``import pkg._module``) across modules."""
    bad = []
    for imp in imports:
        if imp.target == imp.importer:
            continue
        if any(n.startswith("_") and not n.startswith("__") for n in imp.names) or any(
            part.startswith("_") and not part.startswith("__") for part in imp.target.split(".")
        ):
            bad.append(imp)
    return bad


def long_modules() -> dict[str, int]:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines())
             for name, path in module_files(PACKAGES).items()}
    return {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def engine_reached(imports: list[Import]) -> dict[str, list[str]]:
    """For each module of the trace kit and the plugins that loads the tracing engine: the import chain.

    Every import counts (module-level, function-local, typing-only), and so do the packages an import
    runs first (``import a.b.c`` runs ``a/__init__`` and ``a/b/__init__``).

    Example:
        >>> planted = [Import("topology.trace_kit.v", "topology.graph", (), 1, False),
        ...            Import("topology.graph", "topology.trace.build", (), 1, True)]
        >>> engine_reached(planted)
        {'topology.trace_kit.v': ['topology.trace_kit.v', 'topology.graph', 'topology.trace']}
    """
    graph: dict[str, set[str]] = {}
    for imp in imports:
        parts = imp.target.split(".")
        for n in range(1, len(parts) + 1):
            graph.setdefault(imp.importer, set()).add(".".join(parts[:n]))
    starts = sorted({imp.importer for imp in imports
                     if any(_within(imp.importer, p) for p in (TRACE_KIT, *TRACE_PLUGINS))})
    found = {}
    for start in starts:
        chains = {start: [start]}
        queue = [start]
        while queue:
            module = queue.pop(0)
            if _within(module, TRACE_ENGINE):
                found[start] = chains[module]
                break
            for nxt in sorted(graph.get(module, ())):
                if nxt not in chains:
                    chains[nxt] = chains[module] + [nxt]
                    queue.append(nxt)
    return found


def _show(items: list[Import]) -> str:
    return "\n".join(f"  {i.importer}:{i.line} imports {i.target} {list(i.names) or ''}" for i in items)


def test_lower_layers_never_import_higher_ones():
    bad = layering_violations(all_imports())
    assert not bad, "imports against the direction writer -> topology -> vocabulary:\n" + _show(bad)


def test_no_import_cycles():
    found = cycles(all_imports())
    assert not found, "import circles (module-level and function-local imports both count):\n" + "\n".join(
        "  " + " <-> ".join(group) for group in found)


def test_the_trace_kit_and_the_plugins_never_import_the_tracing_engine():
    bad = engine_reached(all_imports())
    assert not bad, "the trace kit or a plugin loads the engine (topology/trace/):\n" + "\n".join(
        "  " + " -> ".join(chain) for chain in bad.values())


def test_no_private_names_imported_across_modules():
    bad = private_imports(all_imports())
    assert not bad, "private names imported from another module:\n" + _show(bad)


def local_imports(imports: list[Import]) -> list[Import]:
    """Function-local imports of the installed package's own modules (typing-only ones never run)."""
    return [imp for imp in imports if imp.local and not imp.typing_only and imp.importer.split(".")[0] in PACKAGES]


def test_function_local_imports_only_where_they_keep_start_up_fast():
    local = local_imports(all_imports())
    assert len(local) <= MAX_LOCAL_IMPORTS, f"{len(local)} function-local project imports:\n" + _show(local)


def test_no_module_over_the_size_limit():
    assert not long_modules(), f"modules over {MAX_MODULE_LINES} lines: {long_modules()}"


def test_the_checker_sees_a_planted_cycle_and_a_private_import():
    planted = [Import("writer.a", "writer.b", (), 1, True), Import("writer.b", "writer.a", ("_x",), 1, False),
               Import("topology.c", "writer.a", (), 1, False), Import("topology.vocabulary.d", "topology.e", (), 1, False)]
    assert cycles(planted) == [["writer.a", "writer.b"]]
    assert private_imports(planted) == [planted[1]]
    assert layering_violations(planted) == [planted[2], planted[3]]
    kit_to_engine = [Import("topology.trace_kit.values", "topology.layers.base", (), 1, False, True),
                     Import("topology.layers.base", "topology.trace", ("trace_graph",), 1, True)]
    assert engine_reached(kit_to_engine) == {
        "topology.trace_kit.values": ["topology.trace_kit.values", "topology.layers.base", "topology.trace"],
        "topology.layers.base": ["topology.layers.base", "topology.trace"]}


def _report() -> None:
    imports = all_imports()
    local = local_imports(imports)
    print(f"layering violations: {len(layering_violations(imports))}")
    print(_show(layering_violations(imports)))
    print(f"cycles: {len(cycles(imports))}")
    for group in cycles(imports):
        print("  " + " <-> ".join(group))
    reached = engine_reached(imports)
    print(f"trace kit and plugins loading the tracing engine: {len(reached)}")
    for chain in reached.values():
        print("  " + " -> ".join(chain))
    print(f"private cross-module imports: {len(private_imports(imports))}")
    print(_show(private_imports(imports)))
    print(f"function-local project imports: {len(local)}")
    print(_show(local))
    print(f"modules over {MAX_MODULE_LINES} lines: {long_modules()}")


if __name__ == "__main__":
    _report()
