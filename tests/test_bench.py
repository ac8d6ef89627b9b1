"""`bench --quick` as a smoke test: it runs, checks bit-identity, and writes its JSON. No timing assertions."""

import json
import sys

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # subprocess end to end: the whole suite runs it, `-m "not slow"` does not


def test_bench_quick_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("bench", "--quick", "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert {t["arch"] for t in data["training"]} == {"shallow", "wide-deep"}
    assert all(t["identical"] for t in data["training"])
    runtimes = {i["runtime"] for i in data["inference"]}
    assert {"torch-eager-cpu", "ort-cpu"} <= runtimes
    assert {"latency batch 1", "latency batch 4", "throughput 1024"} <= {i["metric"] for i in data["inference"]}
    assert data["help_startup_s"] > 0 and "shallow train" in data["stages_s"]
    assert data["whole_process"]["ratio"] > 0 and "naive script" in r.stdout
    assert "speed-up" in r.stdout and "ORT/torch" in r.stdout
    sweep = data["sweep"][0]  # `sweep` against one seed's train(), measured in the same run
    assert (sweep["arch"], sweep["seeds"], sweep["device"]) == ("shallow", 100, "cpu")
    assert sweep["ratio"] == sweep["sweep_s"] / sweep["train_s"] and "sweep shallow on cpu: 100 seeds" in r.stdout


def test_bench_serve_quick_is_a_bounded_load_test_with_no_errors(tmp_path):
    import importlib.util
    import os
    import shutil

    import pytest

    if any(importlib.util.find_spec(m) is None for m in ("uvicorn", "grpc", "tritonclient")):
        pytest.skip("serve's libraries are not installed (pip install -e '.[serve]')")
    missing = [t for t in ("hey", "h2load") if shutil.which(t) is None]
    if missing:  # the load tools are Debian's packages hey and nghttp2-client (.ci/run installs them)
        if os.environ.get("CI") == "true":
            pytest.fail(f"bench --serve needs {', '.join(missing)} (apt-get install hey nghttp2-client)")
        pytest.skip(f"bench --serve needs {', '.join(missing)} (apt-get install hey nghttp2-client)")
    out = tmp_path / "serve.json"
    r = run_cli("bench", "--serve", "--quick", "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["serve"]
    assert {(x["protocol"], x["batch"], x["clients"]) for x in rows} >= {("http", 1, 1), ("http", 64, 4)}
    assert all(x["errors"] == 0 and x["requests"] > 0 and x["p99_ms"] >= x["p50_ms"] > 0 for x in rows)
    if sys.platform == "linux":  # the server's own CPU per request, its workers' included
        assert all(x["server_cpu_us"] > 0 for x in rows)
        one = {(x["protocol"], x["clients"]): x["server_cpu_us"] for x in rows if x["server"] == "serve"
               and x["section"] == "protocol"}  # fmt: skip
        for x in rows:
            if x["server"].startswith("serve --workers"):
                assert x["server_cpu_us"] > 0.3 * one[(x["protocol"], x["clients"])], x
    # a table as it comes (text, a date, gaps): one input per column, against the peer, both protocols
    assert {(x["protocol"], x["server"]) for x in rows if x["section"] == "text"} == {
        (p, s) for p in ("http", "grpc") for s in ("serve", "peer")
    }
    assert "http  1 clients, 1 row(s) (text): serve / peer = " in r.stdout


def test_the_server_cpu_counts_every_process_below_the_server(tmp_path):
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    import pytest

    from pipeline.bench.bench import _tree_cpu

    if sys.platform != "linux":
        pytest.skip("/proc is Linux's")
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"]
    )
    try:
        deadline = time.time() + 30
        while _tree_cpu(parent.pid) < 0.4 and time.time() < deadline:
            time.sleep(0.1)
        assert _tree_cpu(parent.pid) >= 0.4  # the grandchild's burn, counted under the parent
    finally:
        for stat in Path("/proc").glob("[0-9]*/stat"):  # the grandchild: the parent's child
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent.pid:
                    os.kill(int(stat.parent.name), signal.SIGKILL)
            except (OSError, IndexError):
                pass
        parent.kill()
        parent.wait()
    assert _tree_cpu(parent.pid) == 0.0  # gone: nothing


def test_bench_recipe_quick_reports_load_training_and_three_runtimes(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    (tmp_path / "d.csv").write_text(
        "a,b,c,d,y\n" + "".join(",".join(f"{v:.5f}" for v in r) + f",{int(r[0] > 0)}\n" for r in x)
    )
    (tmp_path / "d.toml").write_text(
        'name = "d"\n[data]\npath = "d.csv"\ntarget = "y"\n[train]\nsteps = 100\nbatch_size = 128\n'
        "[gate]\nmin_accuracy = 0.5\n"
    )
    out = tmp_path / "b.json"
    r = run_cli("bench", "--recipe", str(tmp_path / "d.toml"), "--quick", "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    b = json.loads(out.read_text())["recipe"]
    assert b["rows"] == 2000 and b["features"] == 4 and b["csv_load_s"] > 0 and b["train_rows_per_s"] > 0
    assert b["torch_rows_per_s"] > 0 and b["ort_rows_per_s"] > 0
    assert b["ort_vs_torch"] == b["ort_rows_per_s"] / b["torch_rows_per_s"]
    assert b["sklearn_rows_per_s"] is None or b["ort_vs_sklearn"] > 0
    assert "onnxruntime (CPU)" in r.stdout and "data load" in r.stdout
    assert b["train_trainer"] == "explicit" and b["train_identical"] is True and b["train_vs_autograd"] > 0
    assert "the autograd loop, identical yes" in r.stdout


def test_bench_scoring_quick_races_predict_against_the_script_and_the_peer(tmp_path):
    out = tmp_path / "scoring.json"
    r = run_cli("bench", "--scoring", "--quick", "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())["scoring"]
    assert doc["rows"] == 100_000 and doc["features"] == 32
    labels = {run["label"] for run in doc["runs"]}
    assert {"predict csv -> csv", "predict parquet -> parquet", "script  csv -> csv", "sklearn csv -> csv",
            "predict csv -> json", "predict csv -> stdout", "predict jsonl -> csv"} <= labels  # fmt: skip
    assert all(run["peak_rss_mb"] > 0 and run["rows_per_s"] > 0 for run in doc["runs"])
    assert {"csv_vs_script", "parquet_vs_script", "json_out_vs_csv_out", "stdout_vs_file"} <= set(doc["ratios"])
    assert "x the script's rows/s" in r.stdout and "where the time goes" in r.stdout
    assert all(p["read"] >= 0 and p["inference"] >= 0 and p["write"] >= 0 for p in doc["phases"].values())


def test_bench_rows_goes_with_scoring_only():
    r = run_cli("bench", "--rows", "5000")
    assert r.returncode == 2 and "--rows goes with --scoring" in r.stderr
