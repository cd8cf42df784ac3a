"""The import graph of mbengine's own modules has no cycle, counting imports inside functions too.

The data flow is one way (mbengine/weights.py): readers -> canonical tensors ->
pack -> quantize -> engine format -> graph -> runner -> models -> pipelines.
A cycle, even one hidden by a function-level import, means two modules each
need the other; this finds every such loop in the source tree.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# source folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"mbengine": "mbengine", "kernels": "mbengine.kernels", "converters": "mbengine.converters"}


def modules() -> dict[str, str]:
    """{module name: file} of every module the wheel installs."""
    found = {}
    for folder, package in PACKAGES.items():
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith(".py"):
                module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                found[module] = os.path.join(ROOT, folder, name)
    return found


def imports(module: str, file: str, known: set[str]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file."""
    package = module if file.endswith("__init__.py") else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(file, encoding="utf-8").read(), file)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # "from package import submodule" imports the submodule; "from module import name" the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != module)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    found = modules()
    graph = {m: imports(m, f, set(found)) for m, f in found.items()}
    # a package's __init__ runs before any of its modules: an edge into it is not a dependency on its
    # contents (mbengine/__init__ imports nothing at module level; kernels/__init__ and converters/__init__
    # import nothing at all)
    return {m: {t for t in ts if t not in PACKAGES.values()} for m, ts in graph.items()}


def test_the_finder_sees_imports_and_cycles():
    graph = import_graph()
    assert "mbengine.weights" in graph["mbengine.graph"]  # a module-level relative import
    assert "mbengine.converters.engine" in graph["mbengine.modeling"]  # "from .converters import engine"
    assert "mbengine.backend" in graph["mbengine.modeling"]  # a function-level one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None
