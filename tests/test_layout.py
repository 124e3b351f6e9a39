"""The package's layout (docs/design.md section "Package layers"): no import cycle, imports pointing one way
between the layers, imports at module top unless a comment says why, and no module over about 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "salma"
MAX_LINES = 500

# layer of each sub-package; the method (the package's top-level modules) is "model"; below everything, the
# folders, file writing and device helpers that every layer uses ("base"); above everything, the entry point
LAYERS = {"base": -1, "data": 0, "model": 1, "train": 2, "eval": 2, "bench": 2, "report": 3, "cli": 4}
BASE = {"salma.paths", "salma.io", "salma.device"}
# siblings of layer 2 that may import one another, in this direction only
SIBLING_EDGES = {("train", "eval"), ("bench", "train"), ("bench", "eval")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The package modules that ``path`` imports anywhere (function bodies too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in MODULES:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
    return out


GRAPH = {name: imported_modules(path) - {name, "salma"} for name, path in MODULES.items()}


def layer_of(module: str) -> str:
    if module in BASE:
        return "base"
    if module == "salma.__main__":
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS and parts[1] != "model") else "model"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_one_way_between_layers():
    wrong = []
    for module, deps in GRAPH.items():
        a = layer_of(module)
        for dep in deps:
            b = layer_of(dep)
            if a == b or (a, b) in SIBLING_EDGES:
                continue
            if LAYERS[b] >= LAYERS[a]:
                wrong.append(f"{module} ({a}) imports {dep} ({b})")
    assert not wrong, "imports against the layers (data -> model -> train/eval/bench -> report -> cli):\n" + \
        "\n".join(sorted(wrong))


def test_the_method_does_not_import_the_synthetic_dataset():
    method = [m for m in GRAPH if layer_of(m) == "model"]
    assert not [(m, d) for m in method for d in GRAPH[m] if d.startswith("salma.data")]


@pytest.mark.parametrize("path", MODULES.values(), ids=MODULES.keys())
def test_module_is_small(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines; split it by job"


def test_imports_are_at_module_top_unless_a_comment_says_why():
    hidden = []
    for name, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    here, above = lines[inner.lineno - 1], lines[inner.lineno - 2].strip()
                    if "#" not in here and not above.startswith("#"):
                        hidden.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}: {here.strip()}")
    assert not hidden, "imports inside functions without a comment saying why:\n" + "\n".join(sorted(set(hidden)))


def test_the_public_api_resolves():
    import salma

    missing = [name for name in salma.__all__ if getattr(salma, name, None) is None]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        salma.nope  # noqa: B018
