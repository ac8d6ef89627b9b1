"""The CLI end to end, with exit codes, through CliRunner (in-process) and subprocesses."""

import json

import pytest
from typer.testing import CliRunner

import cli
from pipeline import errors
from tests.conftest import invoke_cli, run_cli

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, list(args))


@pytest.mark.slow
def test_all_end_to_end_both_archs(tmp_path):
    r = run_cli("all", "--arch", "all", "--artifacts-dir", str(tmp_path), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["model", "device", "steps"]
    assert lines[1].startswith("shallow") and lines[2].startswith("wide-deep")
    assert "CPUExecutionProvider" in lines[1] and "pass" in lines[1]
    assert "Traceback" not in r.stderr
    for arch in ("shallow", "wide-deep"):
        m = json.loads((tmp_path / arch / "v1" / "manifest.json").read_text())
        assert set(m["files"]) >= {"model.onnx", "weights.safetensors", "loss_history.json", "verify.json"}


@pytest.mark.slow
def test_stage_commands_in_sequence(tmp_path):
    d = str(tmp_path)
    assert invoke("train", "--arch", "shallow", "--artifacts-dir", d, "--steps", "3000").exit_code == 0
    assert invoke("validate", "--arch", "shallow", "--artifacts-dir", d).exit_code == 0
    r = invoke("export", "--arch", "shallow", "--artifacts-dir", d)
    assert r.exit_code == 0 and "opset 18" in r.output
    r = invoke("serve-check", "--arch", "shallow", "--artifacts-dir", d, "--provider", "cpu")
    assert r.exit_code == 0 and "CPUExecutionProvider" in r.output
    r = invoke("verify", "--arch", "shallow", "--artifacts-dir", d, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["passed"] is True


@pytest.mark.parametrize(
    "args,message",
    [
        (("train", "--arch", "resnet"), "shallow"),
        (("train", "--steps", "0"), "--steps"),
        (("train", "--lr", "-1"), "--lr"),
        (("train", "--lr", "nan"), "--lr"),
        (("train", "--min-accuracy", "2"), "--min-accuracy"),
        (("all", "--device", "tpu"), "--device"),
        (("verify", "--atol", "-1"), "--atol"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, message):
    r = invoke_cli(*args, "--artifacts-dir", str(tmp_path))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "shallow").exists()


def test_unknown_arch_names_the_valid_values(tmp_path):
    r = invoke_cli("train", "--arch", "resnet", "--artifacts-dir", str(tmp_path))
    assert "'shallow'" in r.stderr and "'wide-deep'" in r.stderr and "'all'" in r.stderr


def test_gate_failure_exits_with_the_gate_code_and_ships_nothing(tmp_path):
    r = invoke("all", "--arch", "shallow", "--artifacts-dir", str(tmp_path), "--steps", "10")
    assert r.exit_code == errors.GateFailed.exit_code
    assert "failed the gate: accuracy" in r.output and "final loss" in r.output
    assert not (tmp_path / "shallow" / "candidate" / "model.onnx").exists()
    assert not (tmp_path / "shallow" / "candidate" / "manifest.json").exists()


def test_divergence_exits_with_the_training_code(tmp_path):
    r = invoke("all", "--arch", "shallow", "--artifacts-dir", str(tmp_path), "--lr", "1e6")
    assert r.exit_code == errors.TrainingFailed.exit_code and "diverged at step 1" in r.output
    assert not (tmp_path / "shallow" / "candidate" / "model.onnx").exists()


@pytest.mark.parametrize("command", ["validate", "export", "serve-check", "verify"])
def test_stages_before_train_say_run_train_first(tmp_path, command):
    r = invoke(command, "--arch", "shallow", "--artifacts-dir", str(tmp_path))
    assert r.exit_code == errors.MissingArtifact.exit_code
    assert f"no trained model for shallow in {tmp_path}: run train first" in r.output


def test_predict_before_train(tmp_path):
    r = invoke("predict", "--arch", "shallow", "--artifacts-dir", str(tmp_path), "0,1")
    assert r.exit_code == errors.MissingArtifact.exit_code and "no published version of shallow" in r.output


@pytest.mark.slow
def test_cuda_where_there_is_none_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = run_cli("train", "--device", "cuda", "--artifacts-dir", "/tmp/never-written")
    assert r.returncode == errors.DeviceUnavailable.exit_code
    assert len(r.stderr.strip().splitlines()) == 1 and "sees no CUDA device" in r.stderr


@pytest.mark.slow
def test_provider_cuda_where_there_is_none(shipped_copy):
    from pipeline.checks.runtimes import cuda_device_problem

    if cuda_device_problem() is None:
        pytest.skip("a CUDA device is present")
    r = run_cli("serve-check", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--provider", "cuda")
    assert r.returncode == errors.DeviceUnavailable.exit_code
    assert r.stderr.strip().startswith("error: --provider cuda:") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_verify_require_cuda_fails_cleanly(shipped_copy):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = run_cli("verify", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--require", "cuda")
    assert r.returncode == errors.EquivalenceFailed.exit_code
    assert "required runtime torch-cuda did not run" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((shipped_copy / "shallow" / "candidate" / "verify.json").read_text())["passed"] is False


def test_help_does_not_import_torch_or_onnx():
    import subprocess
    import sys

    code = "import sys; sys.argv=['cli.py','--help']\nimport cli\ntry:\n    cli.app()\nexcept SystemExit: pass\nprint(sorted(m for m in ('torch','onnx','onnxruntime') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cli.__file__.rsplit("/", 1)[0])
    assert r.stdout.strip().endswith("[]"), r.stdout + r.stderr


def test_help_does_not_import_numpy_either():
    """The encoding (spec.encoding, graph.encoding_graph) is imported by serve, verify and archs: its
    numpy comes when arrays are made, not at start-up."""
    import subprocess
    import sys

    code = "import sys; sys.argv=['cli.py','--help']\nimport cli\ntry:\n    cli.app()\nexcept SystemExit: pass\nprint(sorted(m for m in ('numpy', 'pyarrow') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cli.__file__.rsplit("/", 1)[0])
    assert r.stdout.strip().endswith("[]"), r.stdout + r.stderr


def test_exit_codes_are_distinct():
    codes = [e.exit_code for e in errors.ALL_ERRORS if e is not errors.UsageError]
    assert len(codes) == len(set(codes)) and 0 not in codes and 1 not in codes and 2 not in codes


@pytest.mark.parametrize("command", ["validate", "export", "serve-check", "verify"])
def test_stages_that_need_artifacts_do_not_create_the_folder(tmp_path, command):
    missing = tmp_path / "nowhere"
    r = invoke(command, "--arch", "shallow", "--artifacts-dir", str(missing))
    assert r.exit_code == errors.MissingArtifact.exit_code and not missing.exists()


TINY = """name = "tiny"
[model]
hidden = [4]
activation = "tanh"
[data]
builtin = "xor"
[train]
optimizer = "adam"
lr = 0.05
steps = 400
[gate]
min_accuracy = 0.5
"""


def _hinted(output: str) -> list[str]:
    """The command a message names, as arguments for the CLI (after `python cli.py`)."""
    import re
    import shlex

    found = re.search(r"`python cli\.py ([^`]+)`", output)
    assert found, output
    return shlex.split(found.group(1))


@pytest.mark.slow
@pytest.mark.parametrize(
    "first",
    [
        ("predict", "0,1"),
        ("verify",),
        ("validate",),
        ("export",),
        ("ship", "--out", "REPO"),
    ],
    ids=["predict", "verify", "validate", "export", "ship"],
)
def test_every_hint_names_a_command_that_fixes_what_it_names(tmp_path, first):
    """A missing artifact's message names the command (with the same --recipe and --artifacts-dir) that
    makes it; running that command, then the first one again, succeeds."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    root = tmp_path / "artifacts"
    root.mkdir()
    args = [a.replace("REPO", str(tmp_path / "repo")) for a in first]
    cmd = [args[0], "--recipe", str(recipe), "--artifacts-dir", str(root), *args[1:]]
    r = invoke(*cmd)
    assert r.exit_code == errors.MissingArtifact.exit_code, r.output
    fix = _hinted(r.output)
    assert "--recipe" in fix and str(recipe) in fix and str(root) in fix
    r = invoke(*fix)
    assert r.exit_code == 0, r.output
    if fix[0] == "train" and first[0] != "validate":  # a chain: each step names the next
        for _ in range(3):
            r = invoke(*cmd)
            if r.exit_code == 0:
                break
            fix = _hinted(r.output)
            assert invoke(*fix).exit_code == 0
    r = invoke(*cmd)
    assert r.exit_code == 0, r.output


def test_hints_are_shell_quoted(tmp_path):
    import shlex

    folder = tmp_path / "with space"
    folder.mkdir()
    recipe = folder / "tiny.toml"
    recipe.write_text(TINY)
    r = invoke("predict", "--recipe", str(recipe), "--artifacts-dir", str(folder / "a b"), "0,1")
    assert r.exit_code == errors.MissingArtifact.exit_code
    fix = _hinted(r.output)  # shlex.split reads it back as the arguments it names
    assert fix[fix.index("--recipe") + 1] == str(recipe) and fix[fix.index("--artifacts-dir") + 1] == str(
        folder / "a b"
    )
    assert shlex.quote(str(recipe)) in r.output
