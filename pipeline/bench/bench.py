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
# `bench --serve`: `serve` against the minimal endpoints, with real load tools

SERVE_CLIENTS = (1, 16, 64)
QUICK_CLIENTS = (1, 4)
SERVE_ROUNDS = 3
SERVE_SECONDS = 3.0  # per round: 2 s rounds of the same server varied by up to 1.7x on 2 cores
BATCH_CLIENTS = 64  # the batching rows: 1-row requests from this many clients
HEAVY_FEATURES, HEAVY_HIDDEN = 32, (256, 256)  # the heavier recipe: inference a larger share of a request
LOAD_TOOLS = {"http": "hey", "grpc": "h2load"}  # Debian: hey, nghttp2-client


@dataclass(frozen=True)
class ServeBench:
    protocol: str  # http (hey: JSON over keep-alive HTTP/1.1) or grpc (h2load: a pre-framed ModelInfer)
    batch: int  # rows per request
    clients: int  # concurrent connections, one request in flight on each
    requests: int
    errors: int  # answers other than 200 (REST) or that h2load counts failed or errored (gRPC)
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    rows_per_s: float
    server: str = "serve"  # serve | peer | "serve --workers N" | "serve --batch-window-us W"
    model: str = "shallow"
    section: str = "protocol"  # protocol (serve vs peer) | batching (window on vs off)
    round: int = 1
    # the server's own CPU time per request (its process and its workers, from /proc; 0 where there is
    # none): what the load tool, sharing the cores, does not blur
    server_cpu_us: float = 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_load_tools() -> list[str]:
    """The load tools `bench --serve` needs that are not on PATH (Debian packages hey, nghttp2-client)."""
    import shutil

    return [tool for tool in LOAD_TOOLS.values() if shutil.which(tool) is None]


@dataclass
class _Server:
    """A server under test in its own process: `serve` or the peer, on two free loopback ports."""

    label: str
    argv: list[str]
    cwd: Path
    http: int = 0
    grpc: int = 0
    proc: Any = None
    log: Any = None

    def start(self, logdir: Path) -> _Server:
        import urllib.request

        self.log = open(logdir / f"{len(list(logdir.iterdir()))}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv + [str(self.http), str(self.grpc)], cwd=self.cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{self.label} did not start: {Path(self.log.name).read_text()[-400:]}")
            time.sleep(0.2)

    def stop(self) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return int(rc)


def _serve_server(cli_path: Path, root: Path, which: list[str], workers: int, window_us: int) -> _Server:
    """`serve` with its options; the ports are appended as `--http-port P --grpc-port Q` by a shim."""
    label = "serve" if workers == 1 and not window_us else f"serve --workers {workers}"
    if window_us:
        label = f"serve --batch-window-us {window_us}"
    shim = ("import sys; a = sys.argv; sys.argv = [a[1], *a[2:-2], '--http-port', a[-2], '--grpc-port', a[-1]]; "
            "import runpy; runpy.run_path(a[1], run_name='__main__')")  # fmt: skip
    argv = [sys.executable, "-c", shim, str(cli_path), "serve", *which, "--artifacts-dir", str(root),
            "--provider", "cpu", "--workers", str(workers), "--batch-window-us", str(window_us)]  # fmt: skip
    return _Server(label, argv, cli_path.parent, _free_port(), _free_port())


def _peer_server(cli_path: Path, onnx: Path, name: str) -> _Server:
    argv = [sys.executable, "-m", "pipeline.bench.serve_peer", str(onnx), name]
    return _Server("peer", argv, cli_path.parent, _free_port(), _free_port())


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def _hey(port: int, model: str, body: Path, clients: int, seconds: float) -> tuple[int, int, float, float, float]:
    """(requests, errors, p50 ms, p99 ms, req/s) from `hey` (per-request CSV: its times have 0.1 ms
    resolution)."""
    url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
    argv = ["hey", "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-T", "application/json", "-D", str(body),
            "-o", "csv", url]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    lat, errors = [], 0
    for line in out.splitlines()[1:]:
        cells = line.split(",")
        if len(cells) < 8:
            continue
        lat.append(float(cells[0]) * 1e3)
        errors += cells[6] != "200"
    lat.sort()
    return len(lat), errors, _percentile(lat, 0.5), _percentile(lat, 0.99), len(lat) / seconds


def _h2load(port: int, frame: Path, clients: int, seconds: float, log: Path) -> tuple[int, int, float, float, float]:  # noqa: E501
    """(requests, errors, p50 ms, p99 ms, req/s) from `h2load`: `clients` HTTP/2 connections, one stream
    in flight on each, the same pre-framed gRPC ModelInfer request; latencies from its per-request log
    (microseconds). h2load reads HTTP statuses, not gRPC's: the frame is checked against both servers
    with a real gRPC call first (`_check_frame`)."""
    import re

    url = f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"
    seconds = max(1, round(seconds))  # h2load's -D takes whole seconds
    argv = ["h2load", "-D", str(seconds), "-c", str(clients), "-m", "1", "-t", "1", "-d", str(frame),
            "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log), url]  # fmt: skip
    log.unlink(missing_ok=True)  # h2load appends to its log
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120).stdout
    lat: list[float] = []
    bad = 0
    for line in log.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) >= 3:
            lat.append(int(cells[2]) / 1e3)
            bad += cells[1] != "200"
    m = re.search(r"(\d+) failed, (\d+) errored", out)
    errors = bad + (int(m.group(1)) + int(m.group(2)) if m else 0)
    lat.sort()
    return len(lat), errors, _percentile(lat, 0.5), _percentile(lat, 0.99), len(lat) / seconds


def _grpc_frame(model: str, x: Any) -> bytes:
    """One ModelInfer request (raw_input_contents), framed as gRPC sends it (flag, 4-byte length)."""
    from tritonclient.grpc import service_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=list(x.shape))
    msg = pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[x.tobytes()])
    payload = msg.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def _check_frame(port: int, frame: bytes, rows: int) -> None:
    """The pre-framed request, sent as is over a real gRPC channel, gets an answer of `rows` rows."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=lambda b: b,
                                   response_deserializer=pb.ModelInferResponse.FromString)  # fmt: skip
        answer = call(frame[5:], timeout=30)
    if len(answer.raw_output_contents[0]) != 4 * rows * int(answer.outputs[0].shape[1]):
        raise RuntimeError(f"the gRPC request bench --serve sends got a wrong answer on port {port}")


def _heavy_model(cli_path: Path, root: Path) -> Path:
    """A 32 -> 256 -> 256 recipe, trained briefly and published by `all` (its accuracy does not matter
    here, its cost per row does)."""
    import numpy as np

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, HEAVY_FEATURES))
    y = (x[:, :4].sum(axis=1) > 0).astype(int)
    names = [f"f{i}" for i in range(HEAVY_FEATURES)]
    lines = [",".join([*names, "label"])] + [",".join(f"{v:.5f}" for v in r) + f",{c}" for r, c in zip(x, y)]
    (root / "heavy.csv").write_text("\n".join(lines) + "\n")
    recipe = root / "heavy.toml"
    recipe.write_text(
        f'name = "heavy"\n[model]\nhidden = {list(HEAVY_HIDDEN)}\nactivation = "relu"\n'
        '[data]\npath = "heavy.csv"\ntarget = "label"\n'
        '[train]\noptimizer = "adam"\nlr = 0.01\nsteps = 100\n[gate]\nmin_accuracy = 0.5\n'
    )
    subprocess.run([sys.executable, str(cli_path), "all", "--recipe", str(recipe), "--artifacts-dir", str(root)],
                   check=True, capture_output=True, text=True, timeout=900)  # fmt: skip
    return recipe


TEXT_ROW = {"size": 42.5, "colour": "red", "sold": "2024-03-01", "member": "true"}  # one row of the text recipe


def _text_model(cli_path: Path, root: Path) -> Path:
    """A recipe on a table as it comes: a number with gaps, a text category, a date and a true/false
    column, so its graph takes one raw input per column (FP32 and BYTES); trained briefly and published
    by `all`."""
    import numpy as np

    rng = np.random.default_rng(3)
    colours = ["red", "green", "blue", "black", "white"]
    lines = ["size,colour,sold,member,label"]
    for _ in range(600):
        size, colour = rng.uniform(0, 100), colours[int(rng.integers(5))]
        label = int((size > 50) != (colour in ("red", "blue")))
        shown = "" if rng.random() < 0.1 else f"{size:.2f}"
        day = np.datetime64("2023-01-01") + int(rng.integers(700))
        lines.append(f"{shown},{colour},{day},{'true' if rng.random() < 0.5 else 'false'},{label}")
    (root / "text.csv").write_text("\n".join(lines) + "\n")
    recipe = root / "text.toml"
    recipe.write_text(
        'name = "text"\n[data]\npath = "text.csv"\ntarget = "label"\n'
        '[train]\noptimizer = "adam"\nlr = 0.01\nsteps = 200\n[gate]\nmin_accuracy = 0.5\n'
    )
    subprocess.run([sys.executable, str(cli_path), "all", "--recipe", str(recipe), "--artifacts-dir", str(root)],
                   check=True, capture_output=True, text=True, timeout=900)  # fmt: skip
    return recipe


def _column_files(tmp: Path, root: Path, model: str, row: dict[str, Any]) -> dict[str, Path]:
    """One row for a model that takes one input per column, as the REST JSON body and the pre-framed
    gRPC request (raw_input_contents, as tritonclient sends them: little-endian FP32, Triton's BYTES
    encoding), named and typed as the published version's inputs are."""
    import json
    import struct

    from tritonclient.grpc import service_pb2 as pb

    from ..serving.protocol import BYTES, load

    tensors = load(root, model, None, "cpu").tensors
    doc = {
        "inputs": [{"name": t.name, "shape": [1, 1], "datatype": t.datatype, "data": [row[t.name]]} for t in tensors]
    }
    body = tmp / f"{model}-1.json"
    body.write_text(json.dumps(doc))
    msg = pb.ModelInferRequest(model_name=model)
    for t in tensors:
        msg.inputs.add(name=t.name, datatype=t.datatype, shape=[1, 1])
        if t.datatype == BYTES:
            text = str(row[t.name]).encode()
            msg.raw_input_contents.append(len(text).to_bytes(4, "little") + text)
        else:
            msg.raw_input_contents.append(struct.pack("<f", float(row[t.name])))
    payload = msg.SerializeToString()
    frame = tmp / f"{model}-1.grpc"
    frame.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
    return {"http": body, "grpc": frame}


def _body_file(path: Path, x: Any) -> Path:
    import json

    doc = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    path.write_text(json.dumps(doc))
    return path


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` and every live process below it
    (`serve --workers N`'s workers), from /proc; 0.0 where /proc has none."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, CPU seconds)
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        stats[int(entry.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(c for c, (parent, _) in stats.items() if parent == p)
    return total


def _measure(server: _Server, protocol: str, model: str, files: dict[str, Path], batch: int, clients: int,
             seconds: float, section: str, rnd: int, tmp: Path, name: str) -> ServeBench:  # fmt: skip
    cpu = _tree_cpu(server.proc.pid)
    if protocol == "http":
        n, errors, p50, p99, rps = _hey(server.http, model, files["http"], clients, seconds)
    else:
        n, errors, p50, p99, rps = _h2load(server.grpc, files["grpc"], clients, seconds, tmp / "h2load.log")
    cpu_us = (_tree_cpu(server.proc.pid) - cpu) / n * 1e6 if n else 0.0
    return ServeBench(protocol, batch, clients, n, errors, p50, p99, rps, rps * batch, server.label, name, section,
                      rnd, round(cpu_us, 1))  # fmt: skip


def _medians(rows: list[ServeBench]) -> list[ServeBench]:
    """One row per (section, model, protocol, server, clients, batch): the round with the median req/s."""
    groups: dict[tuple, list[ServeBench]] = {}
    for r in rows:
        groups.setdefault((r.section, r.model, r.protocol, r.batch, r.clients, r.server), []).append(r)
    out = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: r.requests_per_s)
        out.append(ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else ordered[len(ordered) // 2])
    return out


def bench_serve(cli_path: Path, root: Path, quick: bool) -> tuple[list[ServeBench], list[ServeBench], list[str]]:
    """(median rows, every round's rows, notes). Protocol section: `serve` (one worker, batching off),
    the minimal endpoint (`serve_peer`) and `serve --workers N` on the shallow model, 1-row requests, at
    1, 16 and 64 clients, REST with hey and gRPC with h2load, the servers alternating within each round,
    3 rounds. Text section: `serve` and the minimal endpoints on a recipe whose graph takes one input
    per column (a number with gaps, text, a date, true/false), 1-row requests at 1 and 16 clients, both
    protocols. Batching section: 1-row REST requests from 64 clients, `--batch-window-us` 0 against the
    default window, on the shallow model and on a 32 -> 256 -> 256 recipe. Every server is started
    fresh, stopped with SIGTERM, and must exit 0."""
    import numpy as np

    from ..serving.serve import BATCH_WINDOW_US_ON, default_workers

    seconds = 0.5 if quick else SERVE_SECONDS
    rounds = 1 if quick else SERVE_ROUNDS
    clients_list = QUICK_CLIENTS if quick else SERVE_CLIENTS
    workers = default_workers()
    tmp = root / "bench-serve"
    tmp.mkdir(exist_ok=True)
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    notes: list[str] = []
    rows: list[ServeBench] = []
    rng = np.random.default_rng(0)

    def files_for(name: str, width: int, batch: int) -> dict[str, Path]:
        if name == "text":
            return _column_files(tmp, root, name, TEXT_ROW)
        x = rng.uniform(0, 1, (batch, width)).astype(np.float32)
        frame = tmp / f"{name}-{batch}.grpc"
        frame.write_bytes(_grpc_frame(name, x))
        return {"http": _body_file(tmp / f"{name}-{batch}.json", x), "grpc": frame}

    def run_section(servers: list[_Server], plan: list[tuple[str, str, str, int, int]], section: str) -> None:
        for s in servers:
            s.start(logs)
        try:
            for protocol, name, model, batch, clients in plan:
                files = files_for(model, 2 if name == "shallow" else HEAVY_FEATURES, batch)
                if protocol == "grpc":
                    for s in servers:
                        _check_frame(s.grpc, files["grpc"].read_bytes(), batch)
                for s in servers:  # warm: sessions, connections, allocator
                    _measure(s, protocol, model, files, batch, clients, 0.3, section, 0, tmp, name)
                for rnd in range(1, rounds + 1):
                    for s in servers:  # alternating: each round runs every server once, in turn
                        rows.append(_measure(s, protocol, model, files, batch, clients, seconds, section, rnd, tmp,
                                             name))  # fmt: skip
        finally:
            for s in servers:
                rc = s.stop()
                if rc != 0:
                    notes.append(f"{s.label} exited with {rc} after SIGTERM")

    shallow = ["--arch", "shallow"]
    onnx = next((root / "shallow").glob("v*/model.onnx"))
    protocol_plan = [(p, "shallow", "xor_shallow", 1, c) for p in ("http", "grpc") for c in clients_list]
    if quick:  # a 64-row request too, 4 clients
        protocol_plan.append(("http", "shallow", "xor_shallow", 64, 4))
    servers = [_serve_server(cli_path, root, shallow, 1, 0), _peer_server(cli_path, onnx, "xor_shallow")]
    if workers > 1:
        servers.append(_serve_server(cli_path, root, shallow, workers, 0))
    run_section(servers, protocol_plan, "protocol")

    # a table as it comes (text, a date, gaps): one input per column, read in full by serve
    text = ["--recipe", str(_text_model(cli_path, root))]
    servers = [_serve_server(cli_path, root, text, 1, 0),
               _peer_server(cli_path, next((root / "text").glob("v*/model.onnx")), "text")]  # fmt: skip
    run_section(servers, [(p, "text", "text", 1, c) for p in ("http", "grpc") for c in clients_list[:2]], "text")

    window = BATCH_WINDOW_US_ON
    models = [("shallow", shallow, "xor_shallow")]
    if not quick:  # training the heavier recipe takes about half a minute
        models.append(("heavy", ["--recipe", str(_heavy_model(cli_path, root))], "heavy"))
    for name, which, model in models:
        servers = [_serve_server(cli_path, root, which, 1, 0), _serve_server(cli_path, root, which, 1, window)]
        run_section(servers, [("http", name, model, 1, BATCH_CLIENTS)], "batching")
    notes.append(f"{rounds} round(s) of {seconds:g} s per figure, servers alternating, median shown; REST: hey "
                 "(latency in 0.1 ms steps), gRPC: h2load with one pre-framed ModelInfer (raw_input_contents, "
                 "as tritonclient sends them); "
                 f"load tool and servers share this machine's {os.cpu_count()} cores; cpu us/req: the server's own "
                 "CPU time per request (its process and workers, from /proc), which the load tool does not share, "
                 "from the median round")  # fmt: skip
    return _medians(rows), rows, notes


def serve_ratios(results: list[ServeBench]) -> list[str]:
    """serve / peer (and serve --workers N / peer) req/s per protocol and clients; batching on / off
    rows/s per model: the ratios the README and docs quote, from this run only."""
    by = {(r.section, r.model, r.protocol, r.clients, r.batch, r.server): r for r in results}
    out = []
    for r in results:
        if r.server != "peer":
            continue
        for s in results:
            if (s.section, s.model, s.protocol, s.clients, s.batch) == (r.section, r.model, r.protocol, r.clients,
                                                                          r.batch) and s.server != "peer":  # fmt: skip
                cpu = (f", server CPU per request {s.server_cpu_us / r.server_cpu_us:.2f}x"
                       if s.server_cpu_us and r.server_cpu_us else "")  # fmt: skip
                model = "" if r.section == "protocol" else f" ({r.model})"
                out.append(f"{s.protocol} {s.clients:>2} clients, {s.batch} row(s){model}: {s.server} / peer = "
                           f"{s.requests_per_s / r.requests_per_s:.2f}x req/s{cpu}")  # fmt: skip
    for r in results:
        if r.section == "batching" and r.server != "serve":
            off = by.get(("batching", r.model, r.protocol, r.clients, r.batch, "serve"))
            if off is not None:
                out.append(f"batching {r.model}, {r.clients} clients, 1-row requests: {r.server} / off = "
                           f"{r.rows_per_s / off.rows_per_s:.2f}x rows/s")  # fmt: skip
    return out


def serve_table(results: list[ServeBench]) -> str:
    out = [f"{'section':<9} {'model':<8} {'proto':<5} {'server':<28} {'batch':>5} {'clients':>7} {'requests':>8} "
           f"{'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>8} {'rows/s':>9} {'cpu us/req':>10}"]  # fmt: skip
    for r in results:
        out.append(f"{r.section:<9} {r.model:<8} {r.protocol:<5} {r.server:<28} {r.batch:>5} {r.clients:>7} "
                   f"{r.requests:>8} {r.errors:>6} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.requests_per_s:>8.0f} "
                   f"{r.rows_per_s:>9.0f} {r.server_cpu_us:>10.1f}")  # fmt: skip
    return "\n".join(out + serve_ratios(results))


def run_serve(cli_path: Path, quick: bool) -> tuple[list[ServeBench], list[ServeBench], list[str]]:
    """The load test on a freshly trained, verified, published shallow model (and the heavier recipe)."""
    from ..errors import UsageError
    from ..flow import run_all

    missing = missing_load_tools()
    if missing:
        raise UsageError(
            f"bench --serve needs the load tools {', '.join(missing)} (Debian/Ubuntu: apt-get install hey "
            "nghttp2-client)"
        )
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
        f"{b.recipe}: {b.rows:,} rows x {b.features} features ({b.csv_mb:.1f} MB data file)",
        f"  data load           {b.csv_load_s:8.2f} s   ({b.csv_rows_per_s:,.0f} rows/s)",
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
    tune: bool = False,
    trials: int | None = None,
) -> BenchRun:
    """`bench`: one of its six measurements (the default one, `--serve`'s load test, `--recipe`'s data,
    `--scoring`'s batch scoring of `rows` rows, `--tabular`'s raw tables against the peer, or `--tune`'s
    search against Optuna + scikit-learn with `trials` trials), its JSON
    written to `out` (checked before the run: never a folder, a device we must not write, or the recipe
    or data it reads)."""
    from ..spec.recipe import load_recipe
    from ..store import artifacts as A

    if tune:
        from .tune_bench import bench_tune, tune_table

        A.check_output(out, "--out", [])  # before a long run
        tuned = bench_tune(cli_path, quick, trials)
        write_results(out, {"tune": tuned.as_dict()})
        return BenchRun(tune_table(tuned))
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
        results, rounds, notes = run_serve(cli_path, quick)
        doc = {"serve": [asdict(r) for r in results], "ratios": serve_ratios(results),
               "rounds": [asdict(r) for r in rounds], "notes": notes}  # fmt: skip
        write_results(out, doc, inputs)
        return BenchRun(serve_table(results), tuple(notes))
    report = run(BenchConfig(quick=quick), cli_path)
    write_results(out, report.as_dict(), inputs)
    return BenchRun(table(report))
