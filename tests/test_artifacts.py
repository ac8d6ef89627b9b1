"""Reliability: crash-safe writes, integrity, locking, and clear errors for a bad folder."""

import errno
import json
import os
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

import cli
from pipeline import errors
from pipeline.spec.archs import ARCHS
from pipeline.store import artifacts as A
from pipeline.store.manifest import TrainRecord
from pipeline.training.model import load_trained
from tests.conftest import cli_cmd

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, list(args))


def test_atomic_write_replaces_whole_files(tmp_path):
    p = tmp_path / "f.json"
    A.write_atomic(p, b"old")
    A.write_atomic(p, b"new")
    assert p.read_bytes() == b"new"
    assert [x.name for x in tmp_path.iterdir()] == ["f.json"]  # no temporaries left


def test_disk_full_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    A.write_atomic(p, b"old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(p), "write_bytes", full)
    with pytest.raises(errors.ArtifactWriteError, match="disk full; earlier artifacts are untouched"):
        A.write_atomic(p, b"new")
    monkeypatch.undo()
    assert p.read_bytes() == b"old" and [x.name for x in tmp_path.iterdir()] == ["f.json"]


def test_disk_full_during_train_keeps_previous_artifacts(shipped_copy, monkeypatch):
    before = {p.name: p.read_bytes() for p in (shipped_copy / "shallow" / "candidate").iterdir()}
    real = A.stage_file

    def failing(folder, name, write):
        if name == A.HISTORY:
            raise A.write_error(folder / name, OSError(errno.ENOSPC, "full"))
        return real(folder, name, write)

    monkeypatch.setattr(A, "stage_file", failing)
    r = invoke("train", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--steps", "3000")
    assert r.exit_code == errors.ArtifactWriteError.exit_code and "disk full" in r.output
    after = {
        p.name: p.read_bytes()
        for p in (shipped_copy / "shallow" / "candidate").iterdir()
        if not p.name.startswith(A.TMP_PREFIX)
    }
    assert after == before


def test_unwritable_artifacts_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = invoke("train", "--artifacts-dir", str(blocker / "sub"), "--steps", "5")
    assert r.exit_code == errors.ArtifactWriteError.exit_code
    assert "cannot write" in r.output and len(r.output.strip().splitlines()) == 1


def test_permission_denied_is_reported(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(A.tempfile, "mkstemp", denied)
    with pytest.raises(errors.ArtifactWriteError, match="permission denied"):
        A.stage_bytes(tmp_path, "x.json", b"{}")


@pytest.mark.parametrize("target", ["model.onnx", "weights.safetensors"])
def test_changed_files_are_refused_with_both_hashes(shipped_copy, target):
    path = shipped_copy / "shallow" / "candidate" / target
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    r = invoke("serve-check", "--arch", "shallow", "--artifacts-dir", str(shipped_copy))
    assert r.exit_code == errors.IntegrityError.exit_code
    assert "changed after it was written" in r.output and r.output.count("sha256") == 1
    import re

    assert len(set(re.findall(r"\b[0-9a-f]{64}\b", r.output))) == 2  # both hashes shown


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "run train first"),
        ("{not json", "not readable JSON"),
        ('{"schema": 1, "arch": "wide-deep", "files": {}}', "describes arch 'wide-deep'"),
        ("[]", "not a manifest"),
    ],
)
def test_bad_manifests_are_clear_errors(shipped_copy, content, message):
    m = shipped_copy / "shallow" / "candidate" / "manifest.json"
    if content is None:
        m.unlink()
    else:
        m.write_text(content)
    r = invoke("verify", "--arch", "shallow", "--artifacts-dir", str(shipped_copy))
    assert r.exit_code in (errors.MissingArtifact.exit_code, errors.CorruptArtifact.exit_code)
    assert message in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_corrupt_onnx_named_even_when_the_manifest_vouches_for_it(shipped_copy, kind):
    """A file replaced together with its manifest entry still has to parse, check and fit."""
    paths = A.ArtifactPaths(shipped_copy, "shallow")
    good = paths.onnx.read_bytes()
    paths.onnx.write_bytes({"empty": b"", "truncated": good[:100], "random": os.urandom(2000)}[kind])
    manifest = json.loads(paths.manifest.read_text())
    manifest["files"]["model.onnx"]["sha256"] = A.sha256_file(paths.onnx)
    paths.manifest.write_text(json.dumps(manifest))
    r = invoke("serve-check", "--arch", "shallow", "--artifacts-dir", str(shipped_copy))
    assert r.exit_code == errors.CorruptArtifact.exit_code and str(paths.onnx) in r.output


def test_manifest_is_written_last_and_forgets_before_replacing(tmp_path, monkeypatch):
    """Between 'forgotten' and 'committed', the manifest on disk lists nothing that changes."""
    paths = A.ArtifactPaths(tmp_path, "shallow")
    seen = []
    monkeypatch.setattr(
        A,
        "_fault_point",
        lambda name: seen.append((name, json.loads(paths.manifest.read_text()) if paths.manifest.exists() else None)),
    )
    staged = {A.WEIGHTS: A.stage_bytes(paths.folder, A.WEIGHTS, b"w1")}
    A.commit(paths, "train", staged, {"train": TrainRecord("cpu", "fast", 1.0, 0.5, ((0, 0.5),))})
    staged = {A.WEIGHTS: A.stage_bytes(paths.folder, A.WEIGHTS, b"w2")}
    A.commit(paths, "train", staged, {"train": TrainRecord("cpu", "fast", 2.0, 0.25, ((0, 0.25),))})
    forgotten = [m for name, m in seen if name == "train:forgotten"][1]
    assert A.WEIGHTS not in forgotten["files"] and forgotten["train"] is None
    final = json.loads(paths.manifest.read_text())
    assert final["train"]["final_loss"] == 0.25 and final["files"][A.WEIGHTS]["sha256"] == A.sha256_file(paths.weights)


def test_second_writer_is_refused_clearly(tmp_path):
    with A.run_lock(tmp_path):
        r = invoke("train", "--artifacts-dir", str(tmp_path), "--steps", "5")
    assert r.exit_code == errors.FolderLocked.exit_code
    assert f"in use by another run (pid {os.getpid()})" in r.output
    assert invoke("train", "--artifacts-dir", str(tmp_path), "--steps", "3000").exit_code == 0  # released


@pytest.mark.slow
def test_two_concurrent_all_runs(tmp_path):
    cmd = cli_cmd("all", "--arch", "shallow", "--artifacts-dir", str(tmp_path), "--steps", "3000")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / A.LOCK).exists() or not (tmp_path / A.LOCK).read_text():
        assert time.time() < deadline
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == errors.FolderLocked.exit_code and "in use by another run" in second.stderr
    _assert_consistent(tmp_path / "shallow")


def _assert_consistent(folder, old: dict | None = None):
    """The manifest (if any) lists only files that exist with its hashes; every file is complete."""
    import onnx
    from safetensors.numpy import load_file

    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return
    m = json.loads(manifest_path.read_text())  # parses: never partial
    for name, entry in m["files"].items():
        assert (folder / name).exists(), name
        assert A.sha256_file(folder / name) == entry["sha256"], name
    for p in folder.iterdir():
        if p.name.startswith(A.TMP_PREFIX):
            continue
        if old is not None and p.name in old and A.sha256_file(p) == old[p.name]:
            continue  # the complete previous file
        if p.suffix == ".onnx":
            onnx.checker.check_model(str(p), full_check=True)
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.read_bytes()[-8:-4] == b"IEND"


def _snapshot(folder):
    return {p.name: A.sha256_file(p) for p in folder.iterdir() if not p.name.startswith(A.TMP_PREFIX)}


KILL_POINTS = [
    "train:forgotten",
    "train:replaced:loss_history.json",
    "train:committed",
    "export:forgotten",
    "export:replaced:model.onnx",
    "report:forgotten",
    "verify:replaced:verify.json",
]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_at_each_commit_step_leaves_old_or_new(shipped_copy, point):
    folder = shipped_copy / "shallow" / "candidate"
    old = _snapshot(folder)
    env = dict(os.environ, XORSHIP_KILL_AT=point)
    r = subprocess.run(
        cli_cmd("all", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--steps", "3000", "--seed", "3"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == -signal.SIGKILL
    _assert_consistent(folder, old)
    # and the folder recovers: the next run cleans temporaries and completes
    assert (
        subprocess.run(
            cli_cmd("train", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--steps", "3000"),
            capture_output=True,
        ).returncode
        == 0
    )
    assert not [p for p in folder.iterdir() if p.name.startswith(A.TMP_PREFIX)]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.8, 2.0, 3.5, 5.0])
def test_killed_at_random_moments_leaves_old_or_new(shipped_copy, delay):
    folder = shipped_copy / "shallow" / "candidate"
    old = _snapshot(folder)
    proc = subprocess.Popen(
        cli_cmd("all", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--seed", "5"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _assert_consistent(folder, old)


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_old_or_new(shipped_copy):
    folder = shipped_copy / "shallow" / "candidate"
    old = _snapshot(folder)
    proc = subprocess.Popen(
        cli_cmd("all", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--steps", "200000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == errors.EXIT_INTERRUPTED and "interrupted" in err and "Traceback" not in err
    _assert_consistent(folder, old)
    assert _snapshot(folder) == old  # interrupted during training: nothing was written


def test_weights_load_without_unpickling(shipped):
    """safetensors: a header and raw tensors; nothing executable is ever loaded."""
    raw = (shipped / "shallow" / "candidate" / "weights.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    _, model = load_trained(A.ArtifactPaths(shipped, "shallow"), ARCHS["shallow"])
    assert sum(p.numel() for p in model.parameters()) == 9
