"""The library API: run_all end to end from Python, and the shape of the package's imports."""

import ast
import subprocess
import sys

import pytest

from pipeline import ARCHS, PipelineError, run_all
from pipeline.errors import FolderLocked, GateFailed
from pipeline.store import artifacts as A
from tests.conftest import ROOT, load_weights, numpy_mlp

PIPELINE = ROOT / "pipeline"


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


# What cli.py may use of the library: the public API and the command functions (`pipeline`,
# `pipeline.flow`), the error family, reading the user's selection (`pipeline.spec.recipe`), and
# constants (vocabularies and limits for the options) and `*table` formatters from anywhere.
WIRING_MODULES = {
    "pipeline", "pipeline.flow", "pipeline.errors", "pipeline.spec.recipe", "pipeline.store.jsonout", "pipeline.bench.bench",
}  # fmt: skip
# Work that belongs to the library: writing files, running stages, reading inputs, resolving models.
FORBIDDEN_CALLS = {
    "open", "write_atomic", "write_output", "write_output_bytes", "stage_file", "stage_bytes", "commit",
    "replace", "rename", "unlink", "write_text", "write_bytes", "mkdir", "rmtree",
    "run_stage", "train", "export", "run_verify", "run_serve_check", "verify_folder", "evaluate", "gate",
    "resolve_model", "Predictor", "open_input", "validate", "read_manifest", "read_verified", "check_version",
}  # fmt: skip


def _cli_problems(source: str) -> list[str]:
    """What in `source` (a cli.py) is not wiring: imports of library internals, and calls that do
    the library's work (by the name called, whatever object it is called on)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            if node.module in WIRING_MODULES:
                continue
            for alias in node.names:
                if not (alias.name.isupper() or alias.name.endswith("table")):
                    problems.append(f"imports {node.module}.{alias.name}")
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name == "open" and isinstance(f, ast.Attribute):  # os.open(os.devnull) for a closed stdout is wiring
                continue
            if name in FORBIDDEN_CALLS:
                problems.append(f"calls {name}() (line {node.lineno})")
    return problems


def test_cli_holds_no_stage_logic():
    """cli.py wires: options in, one library call per command, results printed. The check can fail:
    it finds the kinds of logic it guards against in a cli.py that holds them."""
    assert _cli_problems((ROOT / "cli.py").read_text()) == []
    bad = (
        "from pipeline.serving import predict as P\n"
        "from pipeline.training.train import train\n"
        "def predict(output):\n"
        "    served = P.resolve_model('a', 'b', None)\n"
        "    with open(output, 'w') as f: f.write('x')\n"
        "    os.replace(output, output)\n"
    )
    found = _cli_problems(bad)
    assert {p.split(" (")[0] for p in found} == {
        "imports pipeline.serving.predict", "imports pipeline.training.train.train", "calls resolve_model()",
        "calls open()", "calls replace()",
    }, found  # fmt: skip


def test_each_stage_command_reads_the_candidates_manifest_once(shipped_copy, monkeypatch):
    """The candidate's manifest is read once per command, under the lock, and handed to the stage (and
    to the commit that records its result): no stage reads it again."""
    from pipeline import flow

    real = A.read_manifest_bytes
    reads: list[str] = []

    def counted(paths):
        reads.append(paths.folder.name)
        return real(paths)

    monkeypatch.setattr(A, "read_manifest_bytes", counted)
    for command, kwargs in [
        (flow.validate_models, {}),
        (flow.export_models, {}),
        (flow.serve_check_models, {"provider": "cpu"}),
        (flow.verify_models, {}),
    ]:
        reads.clear()
        [outcome] = command("shallow", shipped_copy, **kwargs)
        assert outcome.ok, outcome.error
        assert reads.count("candidate") == 1, (command.__name__, reads)
    assert reads.count("v1") == 1  # verify's publication finds the same version once, checked in one read
