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
import os
import re
import subprocess
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
# Each CLI command has one home, writer/commands/<name> (a module or a package): its parser and its body.
COMMANDS = "writer.commands"
PARSER_BUILDER = re.compile(r"build(_\w+)?_parser")
# The only modules outside the homes that may load a command: the dispatcher and a launcher by module name.
COMMAND_LOADERS = {"writer.cli": "imports the one command that runs",
                   "writer.demo": "`python -m writer.demo`, the spelling docs/web_demo.md gives"}
# Where writer/ may test a code or a message: rendering what the user sees, never deciding what to do.
RENDERING_MODULES = {
    "writer.commands.export.savedmodel": "its report lists the assumptions apart from COMPARED_WITH_TFJS (a notice's code, shown apart)",
}
SELECT_MODULE = "writer.variables"  # the select step: reading a checkpoint must not load the model engine
ENGINE_MODULES = ("topology.infer", "topology.trace", "topology.layers")
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


def parser_builders(modules: dict[str, Path]) -> dict[str, list[str]]:
    """Module -> the parser-building functions it defines at top level (``build_parser``, ``build_x_parser``)."""
    found = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and PARSER_BUILDER.fullmatch(node.name)]
        if names:
            found[name] = names
    return found


def command_home_violations(imports: list[Import], builders: dict[str, list[str]]) -> list[str]:
    """Where a command's parser or body lives, or is loaded, outside its one home under writer/commands/."""
    problems = [f"{module} defines {names}: a command's parser belongs in its home, writer/commands/<name>"
                for module, names in builders.items() if not module.startswith(COMMANDS + ".")]
    dispatched = {imp.target for imp in imports if imp.importer == "writer.cli" and imp.local}
    problems += [f"writer.cli runs {target}, which is not a command home under writer/commands/"
                 for target in sorted(dispatched) if not target.startswith(COMMANDS + ".")]
    problems += [f"{home} is dispatched by writer.cli but defines no parser (build_parser / build_<name>_parser)"
                 for home in sorted(dispatched) if home.startswith(COMMANDS + ".") and home not in builders]
    problems += [f"{imp.importer}:{imp.line} imports the command {imp.target}: a command is loaded only by "
                 f"{sorted(COMMAND_LOADERS)}, its body lives in its home"
                 for imp in imports if imp.target.startswith(COMMANDS + ".") and imp.importer.split(".")[0] in PACKAGES
                 and not imp.importer.startswith(COMMANDS + ".") and imp.importer not in COMMAND_LOADERS]
    return problems


def test_every_command_has_one_home():
    imports, builders = all_imports(), parser_builders(module_files(PACKAGES))
    problems = command_home_violations(imports, builders)
    assert not problems, "\n".join(problems)
    dispatched = {imp.target for imp in imports if imp.importer == "writer.cli" and imp.local}
    assert dispatched == {f"{COMMANDS}.{name}" for name in ("convert", "inspect", "verify", "export", "demo", "studio")}


def test_the_checker_sees_a_command_split_in_two():
    planted = [Import("writer.cli", "writer.inspect_tree", (), 1, True), Import("writer.convert", "writer.commands.demo", (), 1, False)]
    problems = command_home_violations(planted, {"writer.inspect_tree": ["build_inspect_parser"]})
    assert len(problems) == 3 and "writer.inspect_tree defines" in problems[0] and "writer.convert:1" in problems[2]


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


@dataclass(frozen=True)
class CodeTest:
    """A comparison that reads an error's (or notice's) ``.code`` or ``.message``: control flow by wording."""

    module: str
    line: int
    text: str


def code_tests_in(module: str, source: str) -> list[CodeTest]:
    """``x.code == ...``, ``x.code != ...``, ``x.code in ...``, ``... in x.message`` (any comparison
    with ``.code`` or ``.message`` as an operand) in ``source``.

    Example:
        >>> [t.text for t in code_tests_in("m", "if err.code != 'A' or 'b' in err.message: pass")]
        ["err.code != 'A'", "'b' in err.message"]
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
                isinstance(o, ast.Attribute) and o.attr in ("code", "message") for o in (node.left, *node.comparators)):
            found.append(CodeTest(module, node.lineno, ast.unparse(node)))
    return sorted(found, key=lambda t: t.line)


def code_tests(package: str = "writer") -> list[CodeTest]:
    """Every code or message test in ``package`` outside :data:`RENDERING_MODULES`."""
    return [test for name, path in module_files((package,)).items() if name not in RENDERING_MODULES
            for test in code_tests_in(name, path.read_text(encoding="utf-8"))]


def modules_loaded_by(module: str) -> list[str]:
    """The project modules that importing ``module`` loads, in a fresh interpreter."""
    script = (f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules "
              f"if m.split('.')[0] in {PACKAGES!r})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return done.stdout.split()


def test_no_error_code_or_message_decides_control_flow_in_writer():
    found = code_tests()
    assert not found, ("writer/ tests error codes or messages to decide what to do (raise a typed error, e.g. "
                       "topology.vocabulary.misfit.Misfit, or return a reason object instead):\n" +
                       "\n".join(f"  {t.module}:{t.line}: {t.text}" for t in found))


def test_the_checker_sees_planted_code_tests_and_the_rendering_modules_exist():
    planted = code_tests_in("writer.x", "if err.code in {'A'}: pass\nok = 'Input type' in err.message\nerr.render()")
    assert [(t.line, t.text) for t in planted] == [(1, "err.code in {'A'}"), (2, "'Input type' in err.message")]
    assert set(RENDERING_MODULES) <= set(module_files(("writer",))), "an allowed rendering module has moved"


def test_select_loads_no_topology_engine():
    loaded = modules_loaded_by(SELECT_MODULE)
    engine = [m for m in loaded if m.startswith(tuple(f"{e}." for e in ENGINE_MODULES) + ENGINE_MODULES)]
    assert SELECT_MODULE in loaded and not engine, f"importing {SELECT_MODULE} loads {engine}"


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
    found = code_tests()
    print(f"code/message tests in writer/ outside rendering ({', '.join(RENDERING_MODULES)}): {len(found)}")
    print("\n".join(f"  {t.module}:{t.line}: {t.text}" for t in found))
    loaded = modules_loaded_by(SELECT_MODULE)
    engine = [m for m in loaded if m.startswith(tuple(f"{e}." for e in ENGINE_MODULES) + ENGINE_MODULES)]
    print(f"importing {SELECT_MODULE} loads {len(loaded)} project modules, {len(engine)} of the engine {engine}")


if __name__ == "__main__":
    _report()
