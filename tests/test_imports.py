"""The layers of the house (DESIGN.md): imports only point down, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sparsegt"
# top to bottom; a module may import its own layer and the layers below it. `sparsify` works on built models
# (Zero-TPrune wraps a GraphTransformer), so it sits above `models`; below `train`, so the trainer can apply it.
LAYERS = ["cli", "train", "sparsify", "models", "nn", "encodings", "data", "patterns", "attention", "graph"]
# inside the bottom layer, one concept a module, top to bottom (a module imports only those below it)
GRAPH_MODULES = ["core", "convert", "batch", "plans", "validate"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _runtime_imports(path: Path, name: str) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every sparsegt import, function-local ones included, except
    those under ``if TYPE_CHECKING:`` (annotations only)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
               for n in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("sparsegt"):
                found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("sparsegt")]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_has_a_place_in_the_layer_order():
    subpackages = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
                   if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert subpackages - {"__init__", "__main__"} == set(LAYERS)


def test_imports_only_point_down():
    upward = []
    for name, path in _modules().items():
        source = _layer(name)
        if source not in LAYERS:  # the package's own __init__ / __main__ gather everything
            continue
        for target, _, line in _runtime_imports(path, name):
            layer = _layer(target)
            if layer in LAYERS and LAYERS.index(layer) < LAYERS.index(source):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_graph_modules_import_only_down_their_order():
    modules = {name: path for name, path in _modules().items() if name.startswith("sparsegt.graph.")}
    assert {name.rsplit(".", 1)[1] for name in modules} == set(GRAPH_MODULES)
    upward = []
    for name, path in modules.items():
        source = GRAPH_MODULES.index(name.rsplit(".", 1)[1])
        for target, _, line in _runtime_imports(path, name):
            parts = target.split(".")  # imports of other layers: test_imports_only_point_down
            if parts[:2] == ["sparsegt", "graph"] and len(parts) > 2 and GRAPH_MODULES.index(parts[2]) <= source:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports inside sparsegt.graph that do not point down:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules():
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = set()
        for target, names, _ in _runtime_imports(path, name):
            # `from .x import y`: y may be a module of package x; a package's __init__ is not a module here
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in modules and modules[candidate].name != "__init__.py":
                    edges[name].add(candidate)
                    break
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for nxt in sorted(edges[module]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
