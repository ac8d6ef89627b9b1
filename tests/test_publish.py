"""Publication and versions: only a verified model is ever served, and a failed or killed run never
takes it away. Also the holes closed with it: links, swapped files, output shapes, exit codes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import errors
from pipeline.spec.archs import ARCHS
from pipeline.store import artifacts as A
from pipeline.store import versions
from pipeline.store.manifest import Manifest
from tests.conftest import ROOT, cli_cmd, invoke_cli, load_weights, numpy_mlp, run_cli

XOR = ("0,0", "0,1", "1,0", "1,1")


def _predict(root, *args, **kw):
    r = run_cli("predict", "--arch", "shallow", "--artifacts-dir", str(root), "--json", *args, *XOR, **kw)
    return r, (json.loads(r.stdout) if r.returncode == 0 else None)


def _tree(root):
    """Every file under root with its sha256 (and every folder), to prove nothing was written."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.join(dirpath, d)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[p] = A.sha256_file(__import__("pathlib").Path(p))
    return out


def test_a_passing_run_publishes_version_1_with_everything_it_passed(shipped):
    for arch in ARCHS:
        assert (shipped / arch / "PUBLISHED").read_text() == "1\n"
        v1 = shipped / arch / "v1"
        m = Manifest.from_json((v1 / "manifest.json").read_bytes(), "m")
        assert m.version == 1 and m.verify.passed and m.serve_check.passed and m.validation.passed
        assert set(m.files) >= {"weights.safetensors", "loss.png", "model.onnx", "verify.json", "MODEL_CARD.md"}
        for name, rec in m.files.items():
            assert A.sha256_file(v1 / name) == rec.sha256
        assert "Verdict: PASS" in (v1 / "MODEL_CARD.md").read_text()


def test_predict_serves_the_published_version(shipped):
    r, data = _predict(shipped)
    assert r.returncode == 0, r.stderr
    assert data["version"] == 1 and data["verified"] is True and data["sha256_checked"] is True
    assert "v1" in data["model"]
    ref = numpy_mlp(load_weights(shipped / "shallow" / "v1"), np.array([[0, 0], [0, 1], [1, 0], [1, 1]]))
    np.testing.assert_allclose([p["probability"] for p in data["predictions"]], ref, atol=1e-6)


@pytest.mark.slow
def test_skip_verify_leaves_an_unpublished_candidate(shipped_copy):
    before = (shipped_copy / "shallow" / "PUBLISHED").read_text()
    r = run_cli(
        "all",
        "--arch",
        "shallow",
        "--artifacts-dir",
        str(shipped_copy),
        "--steps",
        "3000",
        "--seed",
        "1",
        "--skip-verify",
    )
    assert r.returncode == 0, r.stderr
    assert "not published" in r.stdout
    assert (shipped_copy / "shallow" / "PUBLISHED").read_text() == before
    assert versions.list_versions(shipped_copy, "shallow") == [1]
    _, data = _predict(shipped_copy)
    assert data["version"] == 1


@pytest.mark.slow
def test_a_failed_verify_keeps_the_published_version_serving(shipped_copy):
    cand = A.ArtifactPaths(shipped_copy, "shallow")
    # a candidate whose ONNX file computes something else, consistently recorded in its manifest
    model = onnx.load(str(cand.onnx))
    init = model.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.05
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    cand.onnx.write_bytes(model.SerializeToString())
    m = json.loads(cand.manifest.read_text())
    m["files"]["model.onnx"]["sha256"] = A.sha256_file(cand.onnx)
    m["files"]["model.onnx"]["bytes"] = cand.onnx.stat().st_size
    cand.manifest.write_text(json.dumps(m))
    r = run_cli("verify", "--arch", "shallow", "--artifacts-dir", str(shipped_copy))
    assert r.returncode == errors.EquivalenceFailed.exit_code
    assert versions.read_published(shipped_copy, "shallow") == 1 and versions.list_versions(
        shipped_copy, "shallow"
    ) == [1]
    r, data = _predict(shipped_copy)
    assert r.returncode == 0 and data["version"] == 1


@pytest.mark.slow
def test_versions_publish_rollback_and_keep(shipped_copy):
    root = str(shipped_copy)
    for seed in ("1", "2"):
        r = run_cli(
            "all", "--arch", "shallow", "--artifacts-dir", root, "--steps", "3000", "--seed", seed, "--keep", "2"
        )
        assert r.returncode == 0, r.stderr
    # v1 (not published any more) was pruned: two versions kept, the newest published
    assert (
        versions.list_versions(shipped_copy, "shallow") == [2, 3]
        and versions.read_published(shipped_copy, "shallow") == 3
    )
    listing = json.loads(run_cli("versions", "--arch", "shallow", "--artifacts-dir", root, "--json").stdout)["versions"]
    assert [(v["number"], v["published"]) for v in listing] == [(2, False), (3, True)]
    assert all(v["onnx_sha256"] and v["final_loss"] and v["created"] for v in listing)
    r = run_cli("publish", "--arch", "shallow", "--version", "2", "--artifacts-dir", root)
    assert r.returncode == 0 and "PUBLISHED -> 2" in r.stdout
    _, data = _predict(shipped_copy)
    assert data["version"] == 2
    _, data3 = _predict(shipped_copy, "--version", "3")
    assert data3["version"] == 3 and data3["predictions"] != data["predictions"]
    r = run_cli("publish", "--arch", "shallow", "--version", "9", "--artifacts-dir", root)
    assert r.returncode == errors.MissingArtifact.exit_code and "no version 9" in r.stderr
    # a tampered version cannot be re-published
    (shipped_copy / "shallow" / "v3" / "model.onnx").write_bytes(b"\x08\x01")
    r = run_cli("publish", "--arch", "shallow", "--version", "3", "--artifacts-dir", root)
    assert r.returncode == errors.IntegrityError.exit_code and versions.read_published(shipped_copy, "shallow") == 2


@pytest.mark.slow
def test_verify_version_rechecks_and_writes_nothing(shipped_copy):
    before = _tree(shipped_copy)
    r = run_cli("verify", "--arch", "all", "--version", "1", "--artifacts-dir", str(shipped_copy), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # one document for two models
    assert doc["passed"] is True and set(doc["models"]) == {"shallow", "wide-deep"}
    assert _tree(shipped_copy) == before


@pytest.mark.slow
def test_verify_all_json_is_one_document_even_when_one_model_fails(shipped_copy):
    shutil.rmtree(shipped_copy / "wide-deep" / "candidate")
    r = run_cli("verify", "--arch", "all", "--artifacts-dir", str(shipped_copy), "--json")
    doc = json.loads(r.stdout)
    assert doc["passed"] is False and doc["models"]["shallow"]["passed"] is True
    assert doc["models"]["wide-deep"]["exit_code"] == errors.MissingArtifact.exit_code
    assert r.returncode == errors.MissingArtifact.exit_code  # the worst code; shallow still ran


def _legacy(shipped, tmp_path, verified=True):
    """A folder in the layout of the previous release: files directly in <root>/shallow/."""
    root = tmp_path / "old"
    (root / "shallow").mkdir(parents=True)
    v1 = shipped / "shallow" / "v1"
    m = json.loads((v1 / "manifest.json").read_text())
    m["schema"] = 1
    m.pop("version"), m.pop("published_at")
    m["files"].pop("MODEL_CARD.md")
    if not verified:
        m["verify"] = None
    for name in m["files"]:
        shutil.copy(v1 / name, root / "shallow" / name)
    (root / "shallow" / "manifest.json").write_text(json.dumps(m))
    return root


@pytest.mark.slow
def test_a_folder_of_the_older_layout_is_read_as_version_1_if_it_verifies(shipped, tmp_path):
    root = _legacy(shipped, tmp_path)
    r, data = _predict(root)
    assert r.returncode == 0, r.stderr
    bad = _legacy(shipped, tmp_path / "b", verified=False)
    r, _ = _predict(bad)
    assert (
        r.returncode == errors.CorruptArtifact.exit_code
        and "made by an older version" in r.stderr
        and "run all again" in r.stderr
    )
    # a writer migrates it: the verified folder becomes v1, the new run v2
    r = run_cli("all", "--arch", "shallow", "--artifacts-dir", str(root), "--steps", "3000", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert versions.list_versions(root, "shallow") == [1, 2] and not (root / "shallow" / "manifest.json").exists()
    r = run_cli("all", "--arch", "shallow", "--artifacts-dir", str(bad), "--steps", "3000")
    assert r.returncode == 0 and "not verified" in r.stderr and versions.list_versions(bad, "shallow") == [1]


@pytest.mark.slow
def test_predict_during_a_rerun_always_answers_from_the_published_version(shipped_copy):
    proc = subprocess.Popen(cli_cmd("all", "--arch", "shallow", "--artifacts-dir",
                             str(shipped_copy), "--seed", "6"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    answers = 0
    while proc.poll() is None:
        r, data = _predict(shipped_copy)
        assert r.returncode == 0, r.stderr
        assert data["version"] in (1, 2)
        answers += 1
    assert proc.returncode == 0 and answers >= 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", ["publish:version-staged", "publish:pointer", "verify:replaced:verify.json", "export:forgotten"]
)
def test_killed_while_publishing_still_serves(shipped_copy, point):
    env = dict(os.environ, XORSHIP_KILL_AT=point)
    r = subprocess.run(cli_cmd("all", "--arch", "shallow", "--artifacts-dir",
                        str(shipped_copy), "--steps", "3000", "--seed", "3"), env=env, capture_output=True)  # fmt: skip
    assert r.returncode == -signal.SIGKILL
    r, data = _predict(shipped_copy)
    assert r.returncode == 0, r.stderr
    assert data["version"] == (2 if point == "publish:pointer" else 1)
    # the next run cleans what the killed one left and publishes
    r = run_cli("all", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--steps", "3000", "--seed", "4")
    assert r.returncode == 0, r.stderr
    assert not [p for p in (shipped_copy / "shallow").iterdir() if p.name.startswith(A.TMP_PREFIX)]


@pytest.mark.slow
def test_sigterm_is_like_ctrl_c(shipped_copy):
    proc = subprocess.Popen(cli_cmd("all", "--arch", "shallow", "--artifacts-dir",
                             str(shipped_copy), "--steps", "200000"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == errors.EXIT_TERMINATED and "terminated" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    r, data = _predict(shipped_copy)
    assert r.returncode == 0 and data["version"] == 1


# ---------------------------------------------------------------------------------------------
# Links: nothing we lock, create or replace follows one


def test_a_lock_symlink_is_refused_and_its_target_untouched(shipped_copy, tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    (shipped_copy / ".lock").unlink(missing_ok=True)
    (shipped_copy / ".lock").symlink_to(target)
    r = invoke_cli("train", "--artifacts-dir", str(shipped_copy), "--steps", "5")
    assert r.returncode == errors.IntegrityError.exit_code and "symbolic link" in r.stderr
    assert target.read_text() == "precious"
    dangling = tmp_path / "created-by-us"
    (shipped_copy / ".lock").unlink()
    (shipped_copy / ".lock").symlink_to(dangling)
    r = invoke_cli("train", "--artifacts-dir", str(shipped_copy), "--steps", "5")
    assert r.returncode == errors.IntegrityError.exit_code and not dangling.exists()


def test_a_symlinked_candidate_or_pointer_is_refused(shipped_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cand = shipped_copy / "shallow" / "candidate"
    shutil.rmtree(cand)
    cand.symlink_to(elsewhere)
    r = invoke_cli("train", "--artifacts-dir", str(shipped_copy), "--steps", "3000")
    assert r.returncode == errors.IntegrityError.exit_code and list(elsewhere.iterdir()) == []
    pointer = shipped_copy / "wide-deep" / "PUBLISHED"
    (tmp_path / "one").write_text("1\n")
    pointer.unlink()
    pointer.symlink_to(tmp_path / "one")
    r = invoke_cli("predict", "--arch", "wide-deep", "--artifacts-dir", str(shipped_copy), "0,1")
    assert r.returncode == errors.IntegrityError.exit_code


def test_a_symlinked_artifacts_dir_itself_is_fine(shipped_copy, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(shipped_copy)
    r, data = _predict(link)
    assert r.returncode == 0 and data["version"] == 1


# ---------------------------------------------------------------------------------------------
# Check-then-use, output shapes, loose files


def test_the_bytes_that_were_hashed_are_the_bytes_that_run(shipped_copy):
    from pipeline.serving import predict as P

    served = P.resolve_model(shipped_copy, "shallow", None)
    onnx_path = shipped_copy / "shallow" / "v1" / "model.onnx"
    os.chmod(onnx_path, 0o644)
    other = (shipped_copy / "wide-deep" / "v1" / "model.onnx").read_bytes()
    onnx_path.write_bytes(other)  # swapped after the check
    x = np.array([[0, 1], [1, 1]], np.float32)
    probs = P.Predictor(served, "cpu").probabilities(x)
    ref = numpy_mlp(load_weights(shipped_copy / "shallow" / "candidate"), x)
    np.testing.assert_allclose(probs, ref, atol=1e-6)  # the shallow model ran, not the swapped-in file


def _transposing_model(path):
    """Declares output (batch, 1) but really returns (1, batch)."""
    w = numpy_helper.from_array(np.ones((1, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["z"], transB=1), helper.make_node("Sigmoid", ["z"], ["s"]),
         helper.make_node("Transpose", ["s"], ["probability"], perm=[1, 0])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        [w],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


def test_a_wrong_output_shape_fails_verify_and_predict(tmp_path):
    from pipeline.checks import verify as V
    from pipeline.checks.runtimes import ort_runner

    path = tmp_path / "model.onnx"
    _transposing_model(path)
    rt = V.Runtime(ort_runner(path.read_bytes(), "cpu"), V.FP32)
    s = V.InputSet("four", "4 rows", None, np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32))
    ref = rt.run(s.x).T  # the same values, in the declared (batch, 1) shape
    cmp = V.compare_one(rt, s, rt.run(s.x), ref)
    assert not cmp.passed and cmp.shape == (1, 4) and cmp.expected_shape == (4, 1)
    r = invoke_cli("predict", "--model", str(path), "--allow-unverified", "0,1", "1,1")
    assert r.returncode == errors.CorruptArtifact.exit_code and "returned shape [1, 2]" in r.stderr


def test_a_loose_file_needs_allow_unverified(shipped, tmp_path):
    loose = tmp_path / "model.onnx"
    shutil.copy(shipped / "shallow" / "v1" / "model.onnx", loose)
    r = invoke_cli("predict", "--model", str(loose), "0,1")
    assert r.returncode == errors.UsageError.exit_code and "--allow-unverified" in r.stderr
    r = invoke_cli("predict", "--model", str(loose), "--allow-unverified", "--json", "0,1")
    assert r.returncode == 0 and json.loads(r.stdout)["verified"] is False


def test_predict_model_in_a_copied_renamed_folder_on_a_relative_path(shipped, tmp_path):
    shutil.copytree(shipped / "shallow" / "v1", tmp_path / "whatever-name")
    r = run_cli("predict", "--model", "whatever-name/model.onnx", "--json", "0,1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True


def test_predict_output_file_is_written_atomically(shipped, tmp_path):
    out = tmp_path / "preds.json"
    r = invoke_cli(
        "predict", "--arch", "shallow", "--artifacts-dir", str(shipped), "--json", "--output", str(out), *XOR
    )
    assert r.returncode == 0 and r.stdout == ""
    assert [p["label"] for p in json.loads(out.read_text())["predictions"]] == [0, 1, 1, 0]
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2\n0,1\n1,oops\n")
    r = invoke_cli(
        "predict", "--arch", "shallow", "--artifacts-dir", str(shipped), "--input", str(bad), "--output", str(out)
    )
    assert r.returncode == 2 and "line 3" in r.stderr
    assert json.loads(out.read_text())["predictions"]  # the previous output is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(A.TMP_PREFIX)] == []


def test_a_closed_stdout_ends_quietly(shipped):
    cmd = f"{sys.executable} {ROOT / 'cli.py'} predict --arch shallow --artifacts-dir {shipped} " + " ".join(
        ["0,1"] * 20000
    )
    r = subprocess.run(f"{cmd} | head -1", shell=True, capture_output=True, text=True)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr and "Broken" not in r.stderr, r.stderr
    assert all(line.startswith("note:") for line in r.stderr.strip().splitlines()), r.stderr


# ---------------------------------------------------------------------------------------------
# Exit 1 is for bugs only


@pytest.mark.parametrize(
    "manifest",
    [
        '{"schema": 2, "arch": "shallow", "files": {"model.onnx": {"sha256": 5, "bytes": 1}}}',
        '{"schema": 2, "arch": "shallow", "files": {}, "train": {"device": [], "trainer": 1}}',
        '{"schema": 2, "arch": "shallow", "files": {}, "verify": ' + "[" * 50000 + "]" * 50000 + "}",
        '{"schema": 99, "arch": "shallow", "files": {}}',
    ],
)
def test_malformed_manifests_are_exit_5(shipped_copy, manifest):
    (shipped_copy / "shallow" / "candidate" / "manifest.json").write_text(manifest)
    r = invoke_cli("export", "--arch", "shallow", "--artifacts-dir", str(shipped_copy))
    assert r.returncode == errors.CorruptArtifact.exit_code, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [("--seed", "-1"), ("--seed", str(2**63)), ("--lr", "1e39"), ("--steps", "10000001")],
)
def test_out_of_range_training_options_are_usage_errors(tmp_path, args):
    r = invoke_cli("train", "--artifacts-dir", str(tmp_path), *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_bad_predict_inputs_are_usage_errors(shipped, tmp_path):
    import zipfile

    npz = tmp_path / "rows.npy"
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("x.npy", b"junk")
    huge = tmp_path / "huge.npy"
    huge.write_bytes(
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 2), }".ljust(
            128, b" "
        )[:127]
        + b"\n"
    )
    latin = tmp_path / "latin.csv"
    latin.write_bytes("x1,x2\n0,1\n\xe9,1\n".encode("latin-1"))
    longfield = tmp_path / "long.csv"
    longfield.write_text("x1,x2\n" + "1" * 200_000 + ",1\n")
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffx1,x2\n0,1\n".encode())
    typo = tmp_path / "typo.csv"
    typo.write_text("0,1x\n1,1\n")
    for f in (npz, huge, latin, longfield, typo):
        r = invoke_cli("predict", "--arch", "shallow", "--artifacts-dir", str(shipped), "--input", str(f))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (f.name, r.stderr)
    r = invoke_cli("predict", "--arch", "shallow", "--artifacts-dir", str(shipped), "--input", str(bom), "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["predictions"]) == 1  # the BOM header is a header


def test_bench_out_is_checked_before_the_run(tmp_path):
    t = time.perf_counter()
    r = invoke_cli("bench", "--quick", "--out", str(tmp_path / "missing" / "bench.json"))
    assert r.returncode == 2 and "--out" in r.stderr and time.perf_counter() - t < 30


@pytest.mark.slow
def test_a_broken_matplotlib_is_a_notice_not_a_lost_model(tmp_path):
    env = dict(os.environ, MPLBACKEND="no-such-backend")
    r = run_cli("train", "--artifacts-dir", str(tmp_path), "--steps", "3000", env=env)
    assert r.returncode == 0, r.stderr
    assert "no loss.png" in r.stderr or "loss.png not written" in r.stderr
    cand = tmp_path / "shallow" / "candidate"
    assert (cand / "weights.safetensors").exists() and not (cand / "loss.png").exists()
    assert not [p for p in cand.iterdir() if p.name.startswith(A.TMP_PREFIX)]


def test_the_manifest_loss_log_is_bounded():
    from pipeline.training.train import MAX_LOGGED, TrainConfig, TrainResult

    for steps in (10001, 250_001, 10_000_000):
        r = TrainResult(
            ARCHS["shallow"], TrainConfig(ARCHS["shallow"], steps=steps), "cpu", "fast", (0.5,) * steps, 0.0, None
        )
        logged = r.logged()
        assert len(logged) <= MAX_LOGGED + 2 and logged[0][0] == 0 and logged[-1][0] == steps - 1
        assert all(s % 100 == 0 for s, _ in logged[:-1])  # still log steps


def test_onnxruntime_failing_at_run_time_is_exit_5(tmp_path):
    """A file the checker accepts but onnxruntime cannot run (a Gather index out of range)."""
    idx = numpy_helper.from_array(np.array([5], np.int64), "idx")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "idx"], ["g"], axis=1), helper.make_node("Sigmoid", ["g"], ["probability"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        [idx],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    r = invoke_cli("predict", "--model", str(path), "--allow-unverified", "0,1")
    assert r.returncode == errors.CorruptArtifact.exit_code and "onnxruntime failed running" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_loose_file_with_external_data_is_refused_wherever_it_is_run_from(tmp_path):
    w = numpy_helper.from_array(np.ones((1, 2), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "w.bin"
    w.ClearField("raw_data")
    (tmp_path / "w.bin").write_bytes(np.ones(2, np.float32).tobytes())
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["z"], transB=1), helper.make_node("Sigmoid", ["z"], ["probability"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        [w],
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10).SerializeToString()
    )
    r = run_cli("predict", "--model", "model.onnx", "--allow-unverified", "0,1", cwd=tmp_path)
    assert r.returncode == errors.IntegrityError.exit_code and "external" in r.stderr


# ---------------------------------------------------------------------------------------------
# Found by a red-team pass


@pytest.mark.slow
def test_a_damaged_old_version_is_never_published_again(shipped_copy):
    root = str(shipped_copy)
    # v1 is the default run; damage it, then re-run the same settings: a new version, not v1
    v1_onnx = shipped_copy / "shallow" / "v1" / "model.onnx"
    v1_onnx.write_bytes(v1_onnx.read_bytes() + b"\x00")
    r = run_cli("all", "--arch", "shallow", "--artifacts-dir", root)
    assert r.returncode == 0, r.stderr
    assert versions.read_published(shipped_copy, "shallow") == 2
    r, data = _predict(shipped_copy)
    assert r.returncode == 0 and data["version"] == 2
    listing = json.loads(run_cli("versions", "--artifacts-dir", root, "--json").stdout)["versions"]
    assert [(v["number"], v["verified"]) for v in listing] == [(1, False), (2, True)]


def test_a_damaged_file_anywhere_in_the_version_is_refused(shipped_copy, tmp_path):
    weights = shipped_copy / "shallow" / "v1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    r, _ = _predict(shipped_copy)
    assert r.returncode == errors.IntegrityError.exit_code
    r = invoke_cli("ship", "--artifacts-dir", str(shipped_copy), "--out", str(tmp_path / "repo"))
    assert r.returncode == errors.IntegrityError.exit_code and not (tmp_path / "repo" / "xor_shallow" / "1").exists()


@pytest.mark.parametrize("name", ["/etc/hostname", "../../etc/hostname", "/dev/zero", ".hidden"])
def test_manifest_file_names_must_be_plain_names(shipped_copy, name):
    m = shipped_copy / "shallow" / "v1" / "manifest.json"
    data = json.loads(m.read_text())
    data["files"][name] = {"sha256": "0" * 64, "bytes": 10}
    m.write_text(json.dumps(data))
    for args in (("publish", "--version", "1"), ("verify", "--version", "1")):
        r = invoke_cli(*args, "--arch", "shallow", "--artifacts-dir", str(shipped_copy))
        assert r.returncode == errors.CorruptArtifact.exit_code and "plain file name" in r.stderr, r.stderr


@pytest.mark.slow
def test_a_version_number_taken_by_junk_is_skipped(shipped_copy, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (shipped_copy / "shallow" / "v2").write_text("not a version")
    (shipped_copy / "shallow" / "v3").symlink_to(outside)
    r = run_cli("all", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--steps", "3000", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert versions.read_published(shipped_copy, "shallow") == 4 and list(outside.iterdir()) == []


def test_an_interrupt_wrapped_by_the_exporter_is_still_an_interrupt(monkeypatch, tmp_path):
    import torch

    from pipeline.graph import export as E

    def wrapped(*a, **k):
        try:
            raise KeyboardInterrupt()
        except KeyboardInterrupt as exc:
            raise RuntimeError("\x1b[96mFailed to export\x1b[0m") from exc

    monkeypatch.setattr(torch.onnx, "export", wrapped)
    with pytest.raises(KeyboardInterrupt):
        E._to_onnx(torch.nn.Linear(2, 1), 2, tmp_path / "m.onnx")
    monkeypatch.setattr(
        torch.onnx, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("\x1b[96mboom\x1b[0m"))
    )
    with pytest.raises(errors.ExportFailed, match=r"^torch.onnx.export failed: boom$"):
        E._to_onnx(torch.nn.Linear(2, 1), 2, tmp_path / "m.onnx")


def _plot_children(monkeypatch):
    """Every LossPlot started from now on (to look at its child process afterwards)."""
    from pipeline.training import plot

    started = []
    init = plot.LossPlot.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        started.append(self)

    monkeypatch.setattr(plot.LossPlot, "__init__", spy)
    return started


def test_an_interrupt_while_plotting_leaves_no_temporaries_and_no_child(monkeypatch, tmp_path):
    import pipeline
    from pipeline.training import plot

    started = _plot_children(monkeypatch)

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt()

    monkeypatch.setattr(plot.LossPlot, "result", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_models("shallow", tmp_path, overrides=pipeline.Overrides(steps=3000), device="cpu")
    cand = tmp_path / "shallow" / "candidate"
    assert not [p for p in cand.iterdir() if p.name.startswith(A.TMP_PREFIX)]
    assert (
        not (cand / "loss.png").exists()
        and "loss.png" not in A.read_manifest(A.ArtifactPaths(tmp_path, "shallow")).files
    )
    (child,) = started
    assert child._proc.poll() is not None  # stopped, not left drawing


def _broken_matplotlib(monkeypatch, tmp_path):
    """The parent believes matplotlib works; the drawing process imports one that raises."""
    from pipeline.training import plot

    fake = tmp_path / "fake-site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setattr(plot, "matplotlib_missing", lambda: None)


def test_a_failing_plot_process_is_a_notice_and_the_model_is_still_published(monkeypatch, tmp_path):
    from pipeline import run_all

    _broken_matplotlib(monkeypatch, tmp_path)
    notes: list[str] = []
    root = tmp_path / "art"
    summary = run_all("shallow", root, device="cpu", provider="cpu", steps=3000, on_notice=notes.append)
    (run,) = summary.models
    assert run.published is not None and run.published.number == 1
    expected = "loss.png not written: matplotlib failed (RuntimeError: broken on purpose); the model is saved"
    assert expected in notes and expected in run.notices
    v1 = root / "shallow" / "v1"
    manifest = Manifest.from_json((v1 / "manifest.json").read_bytes(), "m")
    assert "loss.png" not in manifest.files and not (v1 / "loss.png").exists()
    assert {"weights.safetensors", "model.onnx", "verify.json"} <= set(manifest.files)
    assert not [p for p in (root / "shallow").rglob("*") if p.name.startswith(A.TMP_PREFIX)]


def test_a_retrain_never_keeps_the_previous_runs_picture(monkeypatch, tmp_path):
    import pipeline

    pipeline.train_models("shallow", tmp_path, overrides=pipeline.Overrides(steps=3000), device="cpu")
    paths = A.ArtifactPaths(tmp_path, "shallow")
    assert "loss.png" in A.read_manifest(paths).files and paths.loss_png.exists()
    _broken_matplotlib(monkeypatch, tmp_path)
    (outcome,) = pipeline.train_models(
        "shallow", tmp_path, overrides=pipeline.Overrides(steps=3000, seed=3), device="cpu"
    )
    assert outcome.ok and any("loss.png not written" in n for n in outcome.result.notices)
    assert "loss.png" not in A.read_manifest(paths).files and not paths.loss_png.exists()


def test_a_fifo_input_is_refused_not_waited_on(shipped, tmp_path):
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    r = run_cli("predict", "--arch", "shallow", "--artifacts-dir", str(shipped), "--input", str(fifo), timeout=60)
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_json_errors_are_one_json_document(shipped, tmp_path):
    for args in (("verify", "--require", "bogus", "--artifacts-dir", str(shipped)),
                 ("verify", "--version", "1", "--artifacts-dir", str(tmp_path / "none")),
                 ("predict", "--arch", "shallow", "--artifacts-dir", str(tmp_path / "none"), "0,1")):  # fmt: skip
        r = invoke_cli(*args, "--json")
        doc = json.loads(r.stdout)
        assert r.returncode != 0 and doc["passed"] is False and doc["exit_code"] == r.returncode
    r = invoke_cli("versions", "--arch", "all", "--artifacts-dir", str(shipped), "--json")
    assert set(json.loads(r.stdout)["models"]) == {"shallow", "wide-deep"}


# ---------------------------------------------------------------------------------------------
# Integrity, round 3: an edited manifest is refused everywhere a version is read


def _edit(manifest_path, how, indent=2):
    doc = json.loads(manifest_path.read_text())
    how(doc)
    manifest_path.write_text(json.dumps(doc, indent=indent) + "\n")


EDITS = {
    "final loss set to 0": lambda d: d["train"].__setitem__("final_loss", 0.0),
    "classes reversed": lambda d: d["model"].__setitem__("classes", list(reversed(d["model"]["classes"]))),
    "verify passed": lambda d: d["verify"].__setitem__("max_abs_vs_oracle", {}),
    "reformatted": None,  # same content, other bytes: another tool rewrote it
}


@pytest.mark.slow
@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_version_manifest_is_refused_by_every_reader_and_marked_by_versions(shipped_copy, tmp_path, edit):
    v1 = shipped_copy / "shallow" / "v1"
    assert (v1 / A.SEAL).read_text() == f"{A.sha256_file(v1 / A.MANIFEST)}  {A.MANIFEST}\n"  # `sha256sum -c` reads it
    how = EDITS[edit]
    _edit(v1 / A.MANIFEST, how or (lambda d: None), indent=2 if how else 4)
    base = ("--arch", "shallow", "--artifacts-dir", str(shipped_copy))
    for args in (
        ("publish", "--version", "1", *base),
        ("predict", *base, "0,1"),
        ("ship", *base, "--out", str(tmp_path / "repo")),
        ("verify", "--version", "1", *base),
    ):
        r = run_cli(*args)
        assert r.returncode == errors.IntegrityError.exit_code, (args, r.stderr)
        assert "manifest.json was changed after the version was made" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "repo" / "xor_shallow").exists()
    r = run_cli("versions", *base, "--json")
    (info,) = json.loads(r.stdout)["versions"]
    assert info["verified"] is False and "manifest.json was changed" in info["problem"]
    assert info["final_loss"] is None  # the forged figure is not shown


def test_a_version_whose_seal_is_missing_is_refused_and_an_old_unsealed_version_still_reads(shipped_copy):
    v1 = shipped_copy / "shallow" / "v1"
    (v1 / A.SEAL).unlink()
    r = invoke_cli("predict", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "0,1")
    assert r.returncode == errors.IntegrityError.exit_code and "its seal manifest.sha256 is missing" in r.stderr
    # a version made before manifests were sealed (schema 3) reads as it did
    _edit(v1 / A.MANIFEST, lambda d: (d.__setitem__("schema", 3), d.pop("sealed")))
    r = invoke_cli("predict", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "0,1")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("flip", ["sealed false", "schema 3"])
def test_a_seal_is_checked_whatever_the_manifest_says_of_itself(shipped_copy, flip):
    """An edit that also says 'not sealed' (or an older schema) is still refused while the seal is there."""
    v1 = shipped_copy / "shallow" / "v1"
    change = (
        (lambda d: d.__setitem__("sealed", False)) if flip == "sealed false" else (lambda d: d.__setitem__("schema", 3))
    )
    _edit(v1 / A.MANIFEST, lambda d: (change(d), d["config"].__setitem__("seed", 778)))
    r = invoke_cli("predict", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "0,1")
    assert r.returncode == errors.IntegrityError.exit_code and "was changed after the version was made" in r.stderr
