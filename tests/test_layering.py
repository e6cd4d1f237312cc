"""The package's architecture, read from its imports: layers follow the data flow and import only downward.

simulators → mining → data → estimators → inference → plots → app, with ``sluice.seeding`` beneath them all.
Every import counts, including those inside functions (they hide circles, they do not remove them). Print the
module graph with ``python tests/test_layering.py``.
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "src" / "sluice"
LAYERS = ("seeding", "simulators", "mining", "data", "estimators", "inference", "plots", "app")
LOOSE_MODULES = {"__init__.py", "seeding.py", "plots.py"}  # everything else lives in a layer's folder


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: pathlib.Path, known: dict) -> set[str]:
    """The sluice modules that ``name`` imports, anywhere in its body (absolute and relative imports)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            # `from . import losses` imports the submodule; `from .base import Estimator` the module .base
            candidates = submodules if len(submodules) == len(node.names) else submodules + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:  # `from .x import name`: the module is .x
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_layers_import_only_downward():
    upward = [f"{name} ({LAYERS[layer(name)]}) imports {target} ({LAYERS[layer(target)]})"
              for name, targets in graph().items() if layer(name) is not None
              for target in sorted(targets) if layer(target) is not None and layer(target) > layer(name)]
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_library_never_imports_the_package_root_or_the_application():
    offenders = [f"{name} imports {target}" for name, targets in graph().items()
                 if name != "sluice" and layer(name) is not None and LAYERS[layer(name)] != "app"
                 for target in targets if target == "sluice" or target.startswith("sluice.app")]
    assert not offenders, "\n".join(offenders)


def test_no_import_circles():
    assert cycles(graph()) == []


def test_nothing_imports_the_benchmark_scripts():
    offenders = [str(path.relative_to(ROOT.parent)) for path in ROOT.rglob("*.py")
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0)
                 and any((alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                         == "benchmarks" for alias in node.names)]
    assert not offenders


def test_few_loose_modules_at_the_top():
    loose = {path.name for path in ROOT.glob("*.py")}
    assert loose <= LOOSE_MODULES, f"modules outside a layer folder: {sorted(loose - LOOSE_MODULES)}"


def test_the_cycle_finder_finds_a_cycle():
    """The circle check is only worth something if it can fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


if __name__ == "__main__":  # the import graph, one line per module
    for name, targets in sorted(graph().items()):
        print(f"{name} -> {', '.join(sorted(targets)) or '-'}")
    sys.exit(0)
