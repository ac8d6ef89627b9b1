"""`bench --quick` as a smoke test: it runs, checks bit-identity, and writes its JSON. No timing assertions."""

import json

from tests.conftest import run_cli


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
    assert "speed-up" in r.stdout and "ORT/torch" in r.stdout


def test_bench_serve_quick_is_a_bounded_load_test_with_no_errors(tmp_path):
    import importlib.util

    import pytest

    if importlib.util.find_spec("kserve") is None:
        pytest.skip("kserve is not installed (pip install -e '.[serve]')")
    out = tmp_path / "serve.json"
    r = run_cli("bench", "--serve", "--quick", "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["serve"]
    assert {(x["protocol"], x["batch"], x["clients"]) for x in rows} >= {("http", 1, 1), ("http", 64, 4)}
    assert all(x["errors"] == 0 and x["requests"] > 0 and x["p99_ms"] >= x["p50_ms"] > 0 for x in rows)
