"""`bench`: speed, measured side by side in one run, reported as medians and ratios.

- training: the tutorial's loop against our trainer (fast on CPU, CUDA graph on CUDA), same device,
  same seed, with a check that the weights come out bit-identical;
- inference: torch eager against onnxruntime (CPU provider; CUDA provider with IO binding when it
  really runs), latency p50/p99 at batch 1 and 4, throughput at 1024, 65536 and 1M rows;
- the pipeline's stages (train, export, serve-check, verify) and `cli.py --help` start-up.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .archs import ARCHS, init_model, xor_tensors


@dataclass(frozen=True)
class BenchConfig:
    quick: bool = False

    @property
    def train_steps(self) -> int:
        return 500 if self.quick else 10001

    @property
    def train_repeats(self) -> int:
        return 1 if self.quick else 3

    @property
    def latency_calls(self) -> int:
        return 200 if self.quick else 2000

    @property
    def throughput_rows(self) -> tuple[int, ...]:
        return (1024, 65536) if self.quick else (1024, 65536, 1_000_000)


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


@dataclass
class BenchReport:
    machine: dict
    training: list[TrainBench] = field(default_factory=list)
    inference: list[InferBench] = field(default_factory=list)
    stages_s: dict[str, float] = field(default_factory=dict)
    help_startup_s: float | None = None
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

    from .train import Monitor, cuda_graph_loop, fast_loop, tutorial_loop

    arch = ARCHS[arch_name]
    x, y = xor_tensors(device)
    ours_fn, ours_name = (cuda_graph_loop, "cuda-graph") if device == "cuda" else (fast_loop, "fast")

    def timed(loop):
        model = init_model(arch, 777).to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses = loop(model, x, y, cfg.train_steps, 1.0, Monitor(100))
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
        torch.equal(p, q) for p, q in zip(base_model.parameters(), our_model.parameters()))
    b, o = statistics.median(base_t), statistics.median(ours_t)
    return TrainBench(arch_name, device, "tutorial loop", ours_name, cfg.train_steps,
                      cfg.train_steps / b, cfg.train_steps / o, b / o, identical)


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


def bench_inference(arch_name: str, paths, cfg: BenchConfig, report: BenchReport) -> None:
    """torch eager and onnxruntime on the same device, same inputs, the shipped weights."""
    import numpy as np
    import torch

    from .errors import DeviceUnavailable
    from .runtime import CUDA_EP, open_session
    from .train import load_model

    model = load_model(ARCHS[arch_name], paths.weights)

    def torch_runner(dev):
        m = model.to(dev)

        def make(x):
            t = torch.from_numpy(x).to(dev)

            def run():
                with torch.no_grad():
                    out = m(t)
                if dev == "cuda":
                    torch.cuda.synchronize()
                return out
            return run
        return make

    def ort_runner(session, io_binding: bool):
        name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name

        def make(x):
            if not io_binding:
                return lambda: session.run([name_out], {name_in: x})
            import onnxruntime as ort

            x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
            binding = session.io_binding()
            binding.bind_ortvalue_input(name_in, x_dev)
            binding.bind_output(name_out, "cuda")
            return lambda: (session.run_with_iobinding(binding), binding.synchronize_outputs())
        return make

    # (torch name, torch runner, ORT name, ORT runner) per device: each ORT figure is compared with
    # torch on the same device.
    pairs = [("torch-eager-cpu", torch_runner("cpu"), "ort-cpu", ort_runner(open_session(paths.onnx, "cpu")[0], False))]
    try:
        cuda_session, prov = open_session(paths.onnx, "cuda")
        if prov.primary == CUDA_EP and torch.cuda.is_available():
            pairs.append(("torch-eager-cuda", torch_runner("cuda"), "ort-cuda-iobinding", ort_runner(cuda_session, True)))
    except DeviceUnavailable as exc:
        note = f"ort-cuda not measured: {exc}"
        if note not in report.notes:
            report.notes.append(note)
    rng = np.random.default_rng(0)
    cases = [(f"latency batch {b}", b) for b in (1, 4)] + [(f"throughput {n}", n) for n in cfg.throughput_rows]
    for metric, rows in cases:
        x = rng.uniform(0, 1, (rows, 2)).astype(np.float32)
        for torch_name, torch_make, ort_name, ort_make in pairs:
            if metric.startswith("latency"):
                t50, t99 = _latency(torch_make(x), cfg.latency_calls)
                o50, o99 = _latency(ort_make(x), cfg.latency_calls)
                report.inference.append(InferBench(arch_name, torch_name, metric, p50_us=t50, p99_us=t99))
                report.inference.append(InferBench(arch_name, ort_name, metric, p50_us=o50, p99_us=o99, vs_torch=t50 / o50))
            else:
                t_rps, o_rps = _throughput(torch_make(x), rows), _throughput(ort_make(x), rows)
                report.inference.append(InferBench(arch_name, torch_name, metric, rows_per_s=t_rps))
                report.inference.append(InferBench(arch_name, ort_name, metric, rows_per_s=o_rps, vs_torch=o_rps / t_rps))


def bench_stages(root: Path, cfg: BenchConfig, report: BenchReport) -> dict:
    """One pass of the pipeline per arch through the stage functions, timed; returns the paths."""
    from . import artifacts as A
    from .export import export
    from .train import TrainConfig, run_stage
    from .verify import raise_on_failure, run_serve_check, run_verify

    shipped = {}
    for arch in ARCHS.values():
        paths = A.ArtifactPaths(root, arch.name)
        t = time.perf_counter()
        result, _, manifest, _ = run_stage(TrainConfig(arch, device="cpu"), 1.0, paths)
        report.stages_s[f"{arch.name} train"] = time.perf_counter() - t
        t = time.perf_counter()
        export(result.model, paths, manifest)
        report.stages_s[f"{arch.name} export"] = time.perf_counter() - t
        t = time.perf_counter()
        run_serve_check(paths, arch, "auto")
        report.stages_s[f"{arch.name} serve-check"] = time.perf_counter() - t
        t = time.perf_counter()
        raise_on_failure(run_verify(paths, arch), str(paths.verify))
        report.stages_s[f"{arch.name} verify"] = time.perf_counter() - t
        shipped[arch.name] = paths
    return shipped


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
    with tempfile.TemporaryDirectory() as tmp:
        for arch, paths in bench_stages(Path(tmp), cfg, report).items():
            bench_inference(arch, paths, cfg, report)
    report.help_startup_s = help_startup(cli_path, 3 if cfg.quick else 7)
    return report


def table(report: BenchReport) -> str:
    m = report.machine
    out = [f"machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, torch {m['torch']}, "
           f"onnxruntime {m['onnxruntime']}, GPU {m['cuda_device'] or 'none'}, {m['date']}", ""]
    out.append(f"{'training':<10} {'device':<6} {'steps':>6} {'tutorial steps/s':>17} {'ours steps/s':>13} {'ours':<11} {'speed-up':>8}  identical")
    for t in report.training:
        out.append(f"{t.arch:<10} {t.device:<6} {t.steps:>6} {t.baseline_steps_per_s:>17.0f} {t.ours_steps_per_s:>13.0f} "
                   f"{t.ours:<11} {t.speedup:>7.2f}x  {'yes' if t.identical else 'NO'}")
    out += ["", f"{'inference':<10} {'runtime':<19} {'metric':<19} {'p50 us':>9} {'p99 us':>9} {'rows/s':>12} {'ORT/torch':>9}"]
    for i in report.inference:
        f = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        out.append(f"{i.arch:<10} {i.runtime:<19} {i.metric:<19} {f(i.p50_us, '9.1f'):>9} {f(i.p99_us, '9.1f'):>9} "
                   f"{f(i.rows_per_s, '12.3e'):>12} {f(i.vs_torch, '8.2f') + ('x' if i.vs_torch else ''):>9}")
    out += ["", "stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.stages_s.items())]
    out.append(f"cli.py --help start-up: {report.help_startup_s:.3f} s (median)")
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)
