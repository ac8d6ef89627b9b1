"""The shape of the code: layers as folders, imports pointing down only, no cycles, and the torch-free
side (predict, serve, ship) free of torch at import time. Read from the source (ast), so a new module
or a new import is checked as soon as it is written."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"

# Lowest first: a module may import its own layer's modules and those of the layers before it.
LAYERS = ("errors", "spec", "store", "training", "graph", "checks", "serving", "flow", "bench", "__init__")
TORCH_FREE_ENTRY_POINTS = ("pipeline.serving.predict", "pipeline.serving.serve", "pipeline.serving.ship")
HEAVY = ("torch", "onnxscript", "matplotlib")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The pipeline modules an ImportFrom names (a module, or a package's submodules it imports)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        target = node.module or ""
    if not target.startswith("pipeline"):
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if _exists(sub) else target)
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    module = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module level, including `if TYPE_CHECKING:` blocks' siblings but not function bodies
        nodes = [
            n
            for stmt in tree.body
            for n in ast.walk(stmt)
            if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, path.name == "__init__.py", node))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_modules_live_in_layer_folders():
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "errors", "flow"))
    assert flat == [], f"modules outside the layer folders: {flat}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert folders == sorted(set(LAYERS) - {"errors", "flow", "__init__"})


def test_imports_point_down_only():
    """Every import of a pipeline module (at module level or inside a function, type-only included)
    goes to the same layer or one below it."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = []
    for module, path in _modules().items():
        mine = rank[_layer(module)]
        for target in _imports(path):
            if target.startswith("pipeline") and rank[_layer(target)] > mine:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {m: {t for t in _imports(p) if t in modules and t != m} for m, p in modules.items()}
    # a package's __init__ importing its own submodules is not a cycle: packages here import nothing
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycle.extend([*stack[stack.index(t) :], t] if t in stack else [m, t])
                return True
            if state.get(t) is None and visit(t, [*stack, t]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, [m]):
            break
    assert cycle == [], " -> ".join(cycle)


def test_the_torch_free_side_imports_no_torch_even_at_module_level():
    """`predict`, `serve` and `ship` import without torch (run in a fresh interpreter), and no module
    in their import closure imports torch (or another heavy library) at its top."""
    code = (
        "import sys\n"
        f"for m in {TORCH_FREE_ENTRY_POINTS!r}: __import__(m)\n"
        f"print(sorted(m for m in {HEAVY!r} + ('onnxruntime', 'onnx') if m in sys.modules))\n"
        "print(sorted(m for m in sys.modules if m.startswith('pipeline')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    heavy, loaded = (eval(line) for line in out.stdout.strip().splitlines())  # noqa: S307 - our own output
    assert heavy == []
    modules = _modules()
    for name in loaded:
        top = _imports(modules[name], top_level_only=True)
        assert not [t for t in top if t.split(".")[0] in HEAVY], f"{name} imports {top} at its top"


@pytest.mark.parametrize("layer", ["spec", "store"])
def test_spec_and_store_import_no_stage(layer):
    """What a model is and how it is stored know nothing of the stages that use them."""
    for module, path in _modules().items():
        if _layer(module) == layer:
            stages = [t for t in _imports(path) if _layer(t) in ("training", "graph", "checks", "serving", "flow")]
            assert stages == [], f"{module} imports {stages}"
