"""The package's import graph runs one way: every module imports only modules in layers below
its own (or, inside a package, modules it does not import back). Read from the source with
`ast`, function-level imports included, so a new import that runs back up fails here."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import relayforge

PACKAGE = Path(relayforge.__file__).parent
# Bottom to top. A unit is a top-level module or a subpackage; each may import only units in
# the layers below it.
LAYERS = [
    {"__version__", "_kernels_py", "_native", "errors", "ids", "batcher", "db"},
    {"kernels", "events", "deliveries", "roles", "benchmark"},
    {"jobs", "settings"},
    {"models", "connectors", "broker", "observability"},
    {"stores"},
    {"retention"},
    {"security", "ingest", "messages", "upkeep", "outcomes", "shares"},
    {"destinations", "relay"},
    {"actions", "consumer"},
    {"http", "runtime"},
    {"console"},
    {"app", "cli"},
    {"__main__"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the relayforge modules it imports (a `from pkg import submodule` included)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = _module(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                    node.module.split(".")[0] == "relayforge":
                for alias in node.names:
                    sub = PACKAGE.parent / (node.module + "." + alias.name).replace(".", "/")
                    is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                    graph[module].add(f"{node.module}.{alias.name}" if is_module
                                      else node.module)
            elif isinstance(node, ast.Import):
                graph[module].update(a.name for a in node.names
                                     if a.name.split(".")[0] == "relayforge")
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_unit_is_in_one_layer():
    units = {_unit(_module(p)) for p in PACKAGE.rglob("*.py")} - {"relayforge"}
    declared = [u for layer in LAYERS for u in layer]
    assert len(declared) == len(set(declared)), "a unit is in two layers"
    assert units <= set(declared), f"not in any layer: {sorted(units - set(declared))}"


def test_no_import_runs_back_up_the_layers():
    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in _imports().items() for target in targets
        if _unit(target) not in ("relayforge", _unit(module))
        and rank[_unit(target)] >= rank[_unit(module)])
    assert not upward, "\n".join(upward)


def test_no_two_modules_import_each_other_even_within_a_package():
    graph = _imports()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph.get(module, ())):
            if seen.get(target) == 1:
                raise AssertionError(" -> ".join([*path, module, target]))
            if target not in seen:
                visit(target, [*path, module])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [])
