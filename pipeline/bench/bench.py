"""`bench`: speed, measured side by side in one run, reported as medians and ratios.

- training: the tutorial's loop against our trainer (fast on CPU, CUDA graph on CUDA), same device,
  same seed, with a check that the weights come out bit-identical;
- inference: torch eager against onnxruntime (CPU provider; CUDA provider with IO binding when it
  really runs), latency p50/p99 at batch 1 and 4, throughput at 1024, 65536 and 1M rows;
- the pipeline's stages (train, export, serve-check, verify) and `cli.py --help` start-up;
- `sweep`: 1000 shallow seeds trained as one batched program against one seed's `train()`, same
  settings, same process (and, with a GPU, seeds per second at 100,000 seeds).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..spec.archs import ARCHS, TUTORIAL
from ..training.model import init_model, xor_tensors
from .measure import MEASURE


@dataclass(frozen=True)
class BenchConfig:
    quick: bool = False

    @property
    def train_steps(self) -> int:
        return 500 if self.quick else TUTORIAL.steps

    @property
    def train_repeats(self) -> int:
        return 1 if self.quick else 5

    @property
    def latency_calls(self) -> int:
        return 200 if self.quick else 2000

    @property
    def stream_rows(self) -> int:
        return 200_000 if self.quick else 10_000_000

    @property
    def throughput_rows(self) -> tuple[int, ...]:
        return (1024, 65536) if self.quick else (1024, 65536, 1_000_000)

    @property
    def sweep_seeds(self) -> int:
        return 100 if self.quick else 1000

    @property
    def sweep_steps(self) -> int:
        return 500 if self.quick else TUTORIAL.steps

    @property
    def sweep_gpu_seeds(self) -> int:
        return 10_000 if self.quick else 100_000


@dataclass(frozen=True)
class TrainBench:
    arch: str
    device: str
    baseline: str
    ours: str
    steps: int
    baseline_steps_per_s: float
    ours_steps_per_s: float
    speedup: float
    identical: bool


@dataclass(frozen=True)
class InferBench:
    arch: str
    runtime: str  # torch-eager-cpu, ort-cpu, ...
    metric: str  # "latency batch 1", "throughput 65536"
    p50_us: float | None = None
    p99_us: float | None = None
    rows_per_s: float | None = None
    vs_torch: float | None = None  # ratio ORT / torch per row (> 1: ORT faster)


@dataclass(frozen=True)
class SweepBench:
    arch: str
    device: str
    seeds: int
    steps: int
    lr: float
    sweep_s: float  # wall time of sweep(): every seed's initialisation, training and gate
    train_s: float | None  # wall time of one seed's train() (default trainer), same settings; None: not measured
    ratio: float | None  # sweep_s / train_s
    seeds_per_s: float
    converged_fraction: float


@dataclass
class BenchReport:
    machine: dict
    training: list[TrainBench] = field(default_factory=list)
    inference: list[InferBench] = field(default_factory=list)
    stages_s: dict[str, float] = field(default_factory=dict)
    help_startup_s: float | None = None
    predict_stream: dict[str, float] = field(default_factory=dict)  # rows, seconds, rows/s, peak RSS MB
    whole_process: dict[str, float] = field(default_factory=dict)  # `all --arch shallow` vs the naive script
    sweep: list[SweepBench] = field(default_factory=list)  # `sweep` vs one seed's train()
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _machine() -> dict:
    import platform

    import onnxruntime as ort
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }


def bench_training(arch_name: str, device: str, cfg: BenchConfig) -> TrainBench:
    import torch

    from ..training.train import Monitor, cuda_graph_loop, explicit_loop, tutorial_loop

    arch = ARCHS[arch_name]
    x, y = xor_tensors(device)
    ours_fn, ours_name = (cuda_graph_loop, "cuda-graph") if device == "cuda" else (explicit_loop, "explicit")

    def timed(loop):
        model = init_model(arch, TUTORIAL.seed).to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses = loop(model, x, y, cfg.train_steps, TUTORIAL.lr, Monitor(100))
        losses.sum().item()  # wait for the device
        return time.perf_counter() - t, model, losses

    # warm-up both (allocator, kernels), then alternate so machine noise hits both alike
    timed(tutorial_loop), timed(ours_fn)
    base_t, ours_t = [], []
    for _ in range(cfg.train_repeats):
        t, base_model, base_losses = timed(tutorial_loop)
        base_t.append(t)
        t, our_model, our_losses = timed(ours_fn)
        ours_t.append(t)
    identical = torch.equal(base_losses, our_losses) and all(
        torch.equal(p, q) for p, q in zip(base_model.parameters(), our_model.parameters())
    )
    # the fastest of the alternating runs: on a shared VM noise only ever adds time (timeit's rule)
    b, o = min(base_t), min(ours_t)
    return TrainBench(
        arch_name,
        device,
        "tutorial loop",
        ours_name,
        cfg.train_steps,
        cfg.train_steps / b,
        cfg.train_steps / o,
        b / o,
        identical,
    )


def bench_sweep(cfg: BenchConfig, device: str = "cpu") -> SweepBench:
    """`sweep(shallow, N seeds, lr 1, steps)` against one seed's `train()` at the same settings, both
    timed as wall time in this process after a warm-up of each. On CUDA: the sweep alone, at
    sweep_gpu_seeds seeds (seeds per second)."""
    from ..training.sweep import sweep
    from ..training.train import TrainConfig, train

    arch = ARCHS["shallow"]
    gpu = device == "cuda"
    seeds = cfg.sweep_gpu_seeds if gpu else cfg.sweep_seeds
    steps = cfg.sweep_steps
    sweep(arch, range(4), [TUTORIAL.lr], steps=10, device=device)  # warm-up: kernels, the linear-layer probes
    train_s = None
    if not gpu:
        config = TrainConfig(arch, steps=steps, lr=TUTORIAL.lr, seed=TUTORIAL.seed, device=device)
        train(TrainConfig(arch, steps=10, device=device))
        times = []
        for _ in range(1 if cfg.quick else 3):
            t = time.perf_counter()
            train(config)
            times.append(time.perf_counter() - t)
        train_s = statistics.median(times)
    t = time.perf_counter()
    result = sweep(arch, range(seeds), [TUTORIAL.lr], steps=steps, device=device)
    sweep_s = time.perf_counter() - t
    return SweepBench(
        "shallow", result.device, seeds, steps, TUTORIAL.lr, sweep_s, train_s,
        sweep_s / train_s if train_s else None, seeds / sweep_s, result.summary.converged_fraction,
    )  # fmt: skip


def _latency(fn, calls: int) -> tuple[float, float]:
    for _ in range(min(50, calls)):
        fn()
    samples = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def _throughput(fn, rows: int) -> float:
    fn()
    reps = max(3, min(50, 2_000_000 // rows))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return rows / statistics.median(times)


def bench_inference(arch_name: str, model: Any, onnx_bytes: bytes, cfg: BenchConfig, report: BenchReport) -> None:
    """torch eager and onnxruntime on the same device, same inputs, the shipped weights; each
    onnxruntime figure is compared with torch on the same device."""
    import numpy as np
    import torch

    from ..checks.runtimes import ort_runner, torch_runner
    from ..errors import DeviceUnavailable

    # (torch runner, onnxruntime runner) per device, named for the table
    pairs = [(("torch-eager-cpu", torch_runner(model, "cpu")), ("ort-cpu", ort_runner(onnx_bytes, "cpu")))]
    try:
        cuda_ort = ort_runner(onnx_bytes, "cuda")
        if cuda_ort.name == "ort-cuda" and torch.cuda.is_available():
            pairs.append((("torch-eager-cuda", torch_runner(model, "cuda")), ("ort-cuda-iobinding", cuda_ort)))
    except DeviceUnavailable as exc:
        note = f"ort-cuda not measured: {exc}"
        if note not in report.notes:
            report.notes.append(note)
    rng = np.random.default_rng(0)
    cases = [(f"latency batch {b}", b) for b in (1, 4)] + [(f"throughput {n}", n) for n in cfg.throughput_rows]
    for metric, rows in cases:
        x = rng.uniform(0, 1, (rows, 2)).astype(np.float32)
        for (torch_name, torch_rt), (ort_name, ort_rt) in pairs:
            if metric.startswith("latency"):
                t50, t99 = _latency(torch_rt.prepare(x), cfg.latency_calls)
                o50, o99 = _latency(ort_rt.prepare(x), cfg.latency_calls)
                report.inference.append(InferBench(arch_name, torch_name, metric, p50_us=t50, p99_us=t99))
                report.inference.append(
                    InferBench(arch_name, ort_name, metric, p50_us=o50, p99_us=o99, vs_torch=t50 / o50)
                )
            else:
                t_rps, o_rps = _throughput(torch_rt.prepare(x), rows), _throughput(ort_rt.prepare(x), rows)
                report.inference.append(InferBench(arch_name, torch_name, metric, rows_per_s=t_rps))
                report.inference.append(
                    InferBench(arch_name, ort_name, metric, rows_per_s=o_rps, vs_torch=o_rps / t_rps)
                )


def bench_stages(root: Path, report: BenchReport) -> dict[str, tuple[Any, bytes]]:
    """One pass of the pipeline (run_all) per arch, timed by stage; returns {arch: (model, ONNX bytes)}."""
    from ..flow import run_all

    summary = run_all("all", root, device="cpu", provider="auto")
    shipped = {}
    for run in summary.models:
        name = run.arch.name
        report.stages_s[f"{name} train"] = run.times.train
        report.stages_s[f"{name} export"] = run.times.export
        report.stages_s[f"{name} serve-check"] = run.times.serve_check
        report.stages_s[f"{name} verify"] = run.times.verify or 0.0
        shipped[name] = (run.train.model, run.paths.onnx.read_bytes())
    return shipped


def bench_predict_stream(cli_path: Path, root: Path, rows: int) -> dict[str, float]:
    """`predict --input big.csv --json --output` on `rows` rows, in its own process: wall time and
    peak resident memory (the whole process: Python, numpy, onnxruntime and the streamed chunks)."""
    import numpy as np

    csv = root / "big.csv"
    rng = np.random.default_rng(0)
    with open(csv, "w") as f:
        f.write("x1,x2\n")
        for start in range(0, rows, 1_000_000):
            block = rng.uniform(0, 1, (min(1_000_000, rows - start), 2))
            f.write("\n".join(f"{a:.6f},{b:.6f}" for a, b in block.tolist()) + "\n")
    out = root / "predictions.json"
    cmd = [sys.executable, "-c", MEASURE, str(cli_path), "predict", "--arch", "shallow", "--artifacts-dir", str(root),
           "--input", str(csv), "--json", "--output", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in r.stderr.splitlines() if x.startswith("MEASURE ")]
    if r.returncode != 0 or not line or line[-1].split()[1] != "0":
        raise RuntimeError(f"predict on {rows} rows failed: {r.stderr.strip()[-300:]}")
    _, _, seconds, rss_kb = line[-1].split()
    csv.unlink()
    out.unlink()
    return {
        "rows": rows,
        "seconds": float(seconds),
        "rows_per_s": rows / float(seconds),
        "peak_rss_mb": int(rss_kb) / 1024,
    }


def whole_process(cli_path: Path, root: Path, runs: int) -> dict[str, float]:
    """`python cli.py all --arch shallow` against `pipeline/naive_all.py` (train with the tutorial's
    loop, torch.onnx.export, one onnxruntime run), each a fresh process, alternating, `runs` times;
    medians and their ratio."""
    naive = Path(__file__).with_name("naive_all.py")
    ours_s: list[float] = []
    naive_s: list[float] = []
    for i in range(runs):
        for cmd, times in (
            ([sys.executable, str(naive), str(root / f"naive-{i}.onnx")], naive_s),
            (
                [sys.executable, str(cli_path), "all", "--arch", "shallow", "--artifacts-dir", str(root / f"all-{i}")],
                ours_s,
            ),
        ):
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[1:3])} failed: {r.stderr.strip()[-300:]}")
    ours, base = statistics.median(ours_s), statistics.median(naive_s)
    return {"runs": runs, "all_s": ours, "naive_s": base, "ratio": ours / base}


def help_startup(cli_path: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, str(cli_path), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(cfg: BenchConfig, cli_path: Path) -> BenchReport:
    import torch

    report = BenchReport(machine=_machine())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for arch in ARCHS:
            report.training.append(bench_training(arch, device, cfg))
    for device in devices:
        report.sweep.append(bench_sweep(cfg, device))
    with tempfile.TemporaryDirectory() as tmp:
        for arch, (model, onnx_bytes) in bench_stages(Path(tmp), report).items():
            bench_inference(arch, model, onnx_bytes, cfg, report)
        report.predict_stream = bench_predict_stream(cli_path, Path(tmp), cfg.stream_rows)
        report.whole_process = whole_process(cli_path, Path(tmp), 1 if cfg.quick else 5)
    report.help_startup_s = help_startup(cli_path, 3 if cfg.quick else 7)
    return report


def table(report: BenchReport) -> str:
    m = report.machine
    out = [
        f"machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, GPU {m['cuda_device'] or 'none'}, {m['date']}",
        "",
    ]
    out.append(
        f"{'training':<10} {'device':<6} {'steps':>6} {'tutorial steps/s':>17} {'ours steps/s':>13} {'ours':<11} {'speed-up':>8}  identical"
    )
    for t in report.training:
        out.append(
            f"{t.arch:<10} {t.device:<6} {t.steps:>6} {t.baseline_steps_per_s:>17.0f} {t.ours_steps_per_s:>13.0f} "
            f"{t.ours:<11} {t.speedup:>7.2f}x  {'yes' if t.identical else 'NO'}"
        )
    out += [
        "",
        f"{'inference':<10} {'runtime':<19} {'metric':<19} {'p50 us':>9} {'p99 us':>9} {'rows/s':>12} {'ORT/torch':>9}",
    ]
    for i in report.inference:
        f = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        out.append(
            f"{i.arch:<10} {i.runtime:<19} {i.metric:<19} {f(i.p50_us, '9.1f'):>9} {f(i.p99_us, '9.1f'):>9} "
            f"{f(i.rows_per_s, '12.3e'):>12} {f(i.vs_torch, '8.2f') + ('x' if i.vs_torch else ''):>9}"
        )
    for sw in report.sweep:
        versus = (
            f" vs one seed's train() {sw.train_s:.2f} s = {sw.ratio:.1f}x (target <= 10x)"
            if sw.ratio is not None
            else ""
        )
        out.append(
            f"sweep {sw.arch} on {sw.device.split(' ')[0]}: {sw.seeds} seeds x {sw.steps} steps in {sw.sweep_s:.2f} s"
            f" ({sw.seeds_per_s:,.0f} seeds/s, converged {sw.converged_fraction:.3f}){versus}"
        )
    out += ["", "stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.stages_s.items())]
    w = report.whole_process
    if w:
        out.append(
            f"all --arch shallow as a process: {w['all_s']:.2f} s vs the naive script {w['naive_s']:.2f} s "
            f"= {w['ratio']:.2f}x (median of {int(w['runs'])}, alternating)"
        )
    out.append(f"cli.py --help start-up: {report.help_startup_s:.3f} s (median)")
    ps = report.predict_stream
    if ps:
        out.append(
            f"predict --input CSV --json --output, {int(ps['rows']):,} rows: {ps['seconds']:.1f} s "
            f"({ps['rows_per_s']:,.0f} rows/s), peak RSS {ps['peak_rss_mb']:.0f} MB (whole process)"
        )
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# `bench --serve`: a bounded load test of `serve` on loopback


@dataclass(frozen=True)
class ServeBench:
    protocol: str  # http (JSON over keep-alive HTTP/1.1) or grpc (tritonclient)
    batch: int
    clients: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    rows_per_s: float


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_client(port: int, body: bytes) -> Any:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call() -> bool:
        conn.request("POST", "/v2/models/xor_shallow/infer", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status == 200

    return call


def _grpc_client(port: int, x: Any) -> Any:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)

    def call() -> bool:
        return client.infer("xor_shallow", [inp]).as_numpy("probability") is not None

    return call


def _load(make_call: Any, clients: int, per_client: int) -> tuple[list[float], int, float]:
    """`clients` threads, each with its own connection, each sending `per_client` requests back to back."""
    import threading

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        call = make_call()
        mine, bad = [], 0
        for _ in range(per_client):
            t = time.perf_counter()
            try:
                ok = call()
            except Exception:
                ok = False
            mine.append(time.perf_counter() - t)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, errors[0], time.perf_counter() - t


def bench_serve(cli_path: Path, root: Path, quick: bool) -> tuple[list[ServeBench], list[str]]:
    """Start `serve` on free loopback ports, drive it with a fixed number of requests from N concurrent
    clients (HTTP JSON and gRPC, batch 1 and 64), stop it with SIGTERM. Bounded: it stops by itself."""
    import json
    import signal
    import urllib.request

    import numpy as np

    http_port, grpc_port = _free_port(), _free_port()
    cmd = [sys.executable, str(cli_path), "serve", "--arch", "shallow", "--artifacts-dir", str(root),
           "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--provider", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    notes: list[str] = []
    results: list[ServeBench] = []
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}"[-300:])
            time.sleep(0.2)
        total = 200 if quick else 2000
        rng = np.random.default_rng(0)
        for batch in (1, 64):
            x = rng.uniform(0, 1, (batch, 2)).astype(np.float32)
            body = json.dumps({"inputs": [{"name": "x", "shape": [batch, 2], "datatype": "FP32",
                                           "data": x.reshape(-1).tolist()}]}).encode()  # fmt: skip
            for protocol in ("http", "grpc"):
                if protocol == "grpc":
                    try:
                        import tritonclient.grpc  # noqa: F401
                    except ImportError:
                        notes.append("gRPC not measured: tritonclient[grpc] is not installed")
                        continue
                for clients in (1, 4):

                    def make(p=protocol, b=body, xx=x):  # noqa: E731
                        return _http_client(http_port, b) if p == "http" else _grpc_client(grpc_port, xx)

                    make(protocol)()  # warm-up
                    lat, errors, seconds = _load(make, clients, total // clients)
                    lat.sort()
                    n = len(lat)
                    results.append(ServeBench(protocol, batch, clients, n, errors, lat[n // 2] * 1e3,
                                              lat[min(n - 1, int(n * 0.99))] * 1e3, n / seconds, n * batch / seconds))  # fmt: skip
        notes.append("server-side batching: serve has none yet (Triton's dynamic batcher is configured by ship)")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if proc.returncode != 0:
        notes.append(f"serve exited with {proc.returncode} after SIGTERM")
    return results, notes


def serve_table(results: list[ServeBench]) -> str:
    out = [
        f"{'serve':<6} {'batch':>5} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>8} {'rows/s':>9}"
    ]
    for r in results:
        out.append(f"{r.protocol:<6} {r.batch:>5} {r.clients:>7} {r.requests:>8} {r.errors:>6} {r.p50_ms:>7.2f} "
                   f"{r.p99_ms:>7.2f} {r.requests_per_s:>8.0f} {r.rows_per_s:>9.0f}")  # fmt: skip
    return "\n".join(out)


def run_serve(cli_path: Path, quick: bool) -> tuple[list[ServeBench], list[str]]:
    """The load test on a freshly trained, verified, published shallow model."""
    from ..flow import run_all

    with tempfile.TemporaryDirectory() as tmp:
        run_all("shallow", Path(tmp), device="cpu", provider="cpu")
        return bench_serve(cli_path, Path(tmp), quick)


# ---------------------------------------------------------------------------------------------
# bench --recipe: the recipe's own data


@dataclass(frozen=True)
class RecipeBench:
    recipe: str
    rows: int
    features: int
    csv_mb: float
    csv_load_s: float
    csv_rows_per_s: float
    train_steps: int
    train_rows_per_s: float  # rows seen by the optimizer per second (steps x batch rows / time)
    train_trainer: str
    train_vs_autograd: float  # the autograd loop's training time / ours, same settings, same run
    train_identical: bool  # same loss history and weights as the autograd loop
    infer_rows: int
    torch_rows_per_s: float
    ort_rows_per_s: float
    sklearn_rows_per_s: float | None  # the peer's predict_proba / predict (None: scikit-learn not installed)
    ort_vs_torch: float
    ort_vs_sklearn: float | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def bench_recipe(recipe: Any, quick: bool = False) -> RecipeBench:
    """For a recipe's data, in one run: CSV load time, training rows/s, and inference rows/s of torch
    eager, onnxruntime (CPU) and the peer (scikit-learn's MLP with the same hidden sizes) on the same
    rows. The peer is fitted briefly on a sample only to have its weights: its fit is not timed."""
    import dataclasses
    import warnings

    import numpy as np
    import torch

    from ..checks.runtimes import ort_runner, torch_runner
    from ..graph.export import model_proto
    from ..spec.archs import arch_for
    from ..spec.data import load_dataset
    from ..training.train import TrainConfig, train

    notes: list[str] = []
    data = load_dataset(recipe)
    size = recipe.data_path.stat().st_size / 1e6 if recipe.data_path is not None else 0.0
    arch = arch_for(recipe, data.features, data.classes, data.task, data.encoding)
    steps = min(recipe.train.steps, 50 if quick else 500)
    t = recipe.train
    config = TrainConfig(
        arch=arch, steps=steps, lr=t.lr, seed=t.seed, device="cpu", optimizer=t.optimizer, batch_size=t.batch_size
    )
    for trainer in ("auto", "autograd"):  # warm-up: the optimizer's first use imports torch._dynamo
        train(dataclasses.replace(config, steps=2, trainer=trainer), None, data)
    result = train(config, None, data)
    reference = train(dataclasses.replace(config, trainer="autograd"), None, data)  # the reference loop, same run
    identical = result.losses == reference.losses and all(
        torch.equal(p, q) for p, q in zip(result.model.state_dict().values(), reference.model.state_dict().values())
    )
    batch_rows = len(data.train_rows) if not t.batch_size else min(t.batch_size, len(data.train_rows))
    model = result.model
    rows = min(data.rows, 100_000 if quick else 1_000_000)
    x = np.ascontiguousarray(data.x[:rows], dtype=np.float32)  # encoded: what torch and the peer take
    raw = data.raw_rows(np.arange(rows))  # as the file takes them: its encoding runs inside onnxruntime
    onnx_bytes = model_proto(model, arch).SerializeToString()
    torch_rt, ort_rt = torch_runner(model, "cpu"), ort_runner(onnx_bytes, "cpu")
    torch_rps = _throughput(torch_rt.prepare(x), rows)
    ort_rps = _throughput(ort_rt.prepare(raw), rows)
    if arch.encoding is not None:
        notes.append(
            "onnxruntime runs the whole file on raw rows (its encoding included); torch and the peer take the encoded rows"
        )
    sk_rps = None
    try:
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    except ImportError:
        notes.append("scikit-learn is not installed (pip install scikit-learn): no peer figure")
    else:
        cls = MLPRegressor if arch.task == "regression" else MLPClassifier
        peer = cls(hidden_layer_sizes=arch.hidden or (1,), max_iter=3, random_state=0)
        sample = data.train_rows[: min(len(data.train_rows), 20_000)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer.fit(data.x[sample], data.y[sample])
        fn = peer.predict if arch.task == "regression" else peer.predict_proba
        sk_rps = _throughput(lambda: fn(x), rows)
        notes.append("the peer is scikit-learn's MLP with the same hidden sizes, float64, on the same rows")
    if result.notices:
        notes.extend(result.notices)
    return RecipeBench(
        recipe=recipe.name, rows=data.rows, features=len(data.features), csv_mb=round(size, 2),
        csv_load_s=data.seconds, csv_rows_per_s=data.rows / data.seconds if data.seconds else float("inf"),
        train_steps=steps, train_rows_per_s=steps * batch_rows / result.seconds, train_trainer=result.trainer,
        train_vs_autograd=reference.seconds / result.seconds, train_identical=identical,
        infer_rows=rows, torch_rows_per_s=torch_rps, ort_rows_per_s=ort_rps, sklearn_rows_per_s=sk_rps,
        ort_vs_torch=ort_rps / torch_rps, ort_vs_sklearn=(ort_rps / sk_rps) if sk_rps else None, notes=tuple(notes),
    )  # fmt: skip


def recipe_table(b: RecipeBench) -> str:
    sk = f"{b.sklearn_rows_per_s:,.0f}" if b.sklearn_rows_per_s else "-"
    ratio = f"{b.ort_vs_sklearn:.2f}x" if b.ort_vs_sklearn else "-"
    lines = [
        f"{b.recipe}: {b.rows:,} rows x {b.features} features ({b.csv_mb:.1f} MB CSV)",
        f"  CSV load            {b.csv_load_s:8.2f} s   ({b.csv_rows_per_s:,.0f} rows/s)",
        f"  training            {b.train_rows_per_s:12,.0f} rows/s  ({b.train_steps} steps, {b.train_trainer}: "
        f"{b.train_vs_autograd:.2f}x the autograd loop, identical {'yes' if b.train_identical else 'NO'})",
        f"  inference ({b.infer_rows:,} rows)",
        f"    torch eager (CPU) {b.torch_rows_per_s:12,.0f} rows/s",
        f"    onnxruntime (CPU) {b.ort_rows_per_s:12,.0f} rows/s  ({b.ort_vs_torch:.2f}x torch)",
        f"    scikit-learn      {sk:>12} rows/s  (onnxruntime {ratio} the peer)",
    ]
    lines += [f"  note: {n}" for n in b.notes]
    return "\n".join(lines)


def write_results(out: Path, doc: dict[str, Any], inputs: Sequence[Path | None] = ()) -> None:
    """bench's JSON results into `out` (`--out`): strict JSON (non-finite figures as null, said so),
    written as `artifacts.write_output` writes any file a user names."""
    from ..store import artifacts as A
    from ..store.jsonout import dumps_bytes

    A.write_output_bytes(out, dumps_bytes(doc), "--out", inputs)


@dataclass(frozen=True)
class BenchRun:
    """What `bench` measured, as the terminal's table, with its notes; the JSON is written to `out`."""

    table: str
    notes: tuple[str, ...] = ()


def run_command(
    cli_path: Path,
    out: Path,
    *,
    quick: bool = False,
    serve: bool = False,
    recipe: Path | None = None,
    scoring: bool = False,
    rows: int | None = None,
    tabular: bool = False,
) -> BenchRun:
    """`bench`: one of its five measurements (the default one, `--serve`'s load test, `--recipe`'s data,
    `--scoring`'s batch scoring of `rows` rows, or `--tabular`'s raw tables against the peer), its JSON
    written to `out` (checked before the run: never a folder, a device we must not write, or the recipe
    or data it reads)."""
    from ..spec.recipe import load_recipe
    from ..store import artifacts as A

    if tabular:
        from .tabular import bench_tabular, tabular_table

        A.check_output(out, "--out", [])  # before a long run
        tab = bench_tabular(cli_path, quick)
        write_results(out, {"tabular": tab.as_dict()})
        return BenchRun(tabular_table(tab))

    inputs: list[Path | None] = [recipe]
    chosen = None
    if recipe is not None:
        chosen = load_recipe(recipe)
        inputs.append(chosen.data_path)
    A.check_output(out, "--out", inputs)  # before a long run
    if chosen is not None:
        result = bench_recipe(chosen, quick)
        write_results(out, {"recipe": result.as_dict()}, inputs)
        return BenchRun(recipe_table(result))
    if scoring:
        from .scoring import bench_scoring, scoring_table

        scored = bench_scoring(cli_path, rows or (100_000 if quick else 1_000_000), quick)
        write_results(out, {"scoring": scored.as_dict()}, inputs)
        return BenchRun(scoring_table(scored))
    if serve:
        results, notes = run_serve(cli_path, quick)
        write_results(out, {"serve": [asdict(r) for r in results], "notes": notes}, inputs)
        return BenchRun(serve_table(results), tuple(notes))
    report = run(BenchConfig(quick=quick), cli_path)
    write_results(out, report.as_dict(), inputs)
    return BenchRun(table(report))
