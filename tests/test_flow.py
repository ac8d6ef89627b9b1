"""The library API: run_all end to end from Python, and the shape of the package's imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import ARCHS, PipelineError, run_all
from pipeline import artifacts as A
from pipeline.errors import FolderLocked, GateFailed
from tests.conftest import ROOT, load_weights, numpy_mlp

PIPELINE = ROOT / "pipeline"
SHARED = {
    "archs",
    "model",
    "contract",
    "onnx_safety",
    "runtimes",
    "manifest",
    "artifacts",
    "errors",
    "plot",
    "tutorial_log",
    "inputs",
    "recipe",
    "data",
    "kernels",
}
STAGES = {"train", "validate", "export", "verify"}


def test_run_all_runs_the_shallow_pipeline_end_to_end(tmp_path):
    import numpy as np

    summary = run_all("shallow", tmp_path, device="cpu", provider="cpu", steps=3000)
    (run,) = summary.models
    assert run.arch == ARCHS["shallow"] and run.validation.accuracy == 1.0
    assert run.verify is not None and run.verify.passed and run.serve_check.passed
    assert run.providers.primary == "CPUExecutionProvider"
    assert run.export.sha256 == A.sha256_file(run.paths.onnx)
    assert all(
        t is not None and t > 0 for t in (run.times.train, run.times.export, run.times.serve_check, run.times.verify)
    )
    manifest = A.read_manifest(run.paths)
    assert manifest.train.final_loss == run.train.final_loss and manifest.verify.passed
    # loss.png, drawn in its own process meanwhile, is committed with the candidate and published
    assert run.published is not None and not run.notices
    version = A.ArtifactPaths.version(tmp_path, "shallow", run.published.number)
    published = A.read_manifest(version)
    assert "loss.png" in manifest.files and published.files["loss.png"] == manifest.files["loss.png"]
    assert A.sha256_file(version.loss_png) == published.files["loss.png"].sha256
    # the shipped file computes what the saved weights compute (independent numpy oracle)
    import onnxruntime as ort

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    out = ort.InferenceSession(str(run.paths.onnx), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(out.reshape(-1), numpy_mlp(load_weights(run.paths.folder), x), atol=1e-6)


def test_run_all_raises_typed_errors_and_holds_the_lock(tmp_path):
    with pytest.raises(GateFailed) as info:
        run_all("shallow", tmp_path, device="cpu", steps=10)
    assert isinstance(info.value, PipelineError) and info.value.exit_code == 8
    with A.run_lock(tmp_path), pytest.raises(FolderLocked):
        run_all("shallow", tmp_path, device="cpu", steps=10)


def test_importing_the_library_imports_no_heavy_module():
    code = "import sys, pipeline; from pipeline import run_all; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "[]", r.stderr


def _imports(module: Path) -> set[str]:
    """The pipeline modules that `module` imports (at any depth: module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found.add(node.module.split(".")[1] if "." in node.module else node.names[0].name)
    return found


def test_imports_point_one_way():
    graph = {p.stem: _imports(p) for p in PIPELINE.glob("*.py") if p.stem != "__init__"}
    assert set(graph) >= SHARED | STAGES | {"flow"}
    for name, deps in graph.items():
        if name in SHARED:
            assert not deps & (STAGES | {"flow", "predict", "ship", "bench"}), (
                f"shared module {name} imports {deps & STAGES}"
            )
        if name in STAGES:
            assert not deps & (STAGES - {name}) and "flow" not in deps, f"stage {name} imports {deps}"
    # and no cycle anywhere
    state: dict[str, int] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        assert state.get(n) != 1, f"import cycle: {' -> '.join((*path, n))}"
        state[n] = 1
        for d in graph.get(n, ()):
            visit(d, (*path, n))
        state[n] = 2

    for n in graph:
        visit(n, ())


def test_cli_holds_no_stage_logic():
    """cli.py wires: it imports the library's public API and constants, never a stage's internals."""
    tree = ast.parse((ROOT / "cli.py").read_text())
    stage_calls = {"run_stage", "train", "export", "run_verify", "run_serve_check", "commit", "stage_file"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in {"T", "E", "V"}:
            pytest.fail(f"cli.py reaches into a stage module: {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module in {f"pipeline.{s}" for s in STAGES}:
            assert not {a.name for a in node.names} & stage_calls, node.module
