"""Stage 4: the comparison engine behind `serve-check` and `verify`.

One engine: a reference function, a list of runtimes and a list of seeded input sets go in; every
runtime is run on every set and compared with the reference; a report with a fail-closed verdict
comes out.

- `verify`: the reference is a float64 oracle (the torch model rebuilt from the saved weights, in
  float64 on the CPU); runtimes are torch fp32 (CPU, and CUDA when torch sees a GPU), onnxruntime
  (CPU provider, and CUDA provider when it really comes up), and onnx's pure-Python
  ReferenceEvaluator. Each runtime has its own tolerance (TOLERANCES, measured: docs/verification.md).
- `serve-check`: the reference is the torch fp32 model, the runtime is onnxruntime with the chosen
  provider, the sets are the XOR points and random batches of 1, 4 and 1000.

A row passes when |runtime - reference| <= atol + rtol * |reference| (numpy's allclose rule).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import artifacts as A
from .archs import THRESHOLD, XOR_X, XOR_Y, Arch
from .contract import check_served, parse_checked
from .errors import DeviceUnavailable, EquivalenceFailed
from .manifest import ProvidersRecord, ServeCheckRecord, VerifyRecord
from .model import load_trained
from .runtimes import RUNNER_NAMES, ProviderReport, Runner, ort_runner, reference_runner, torch_runner

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

INPUT_SCALE_CAP = 100.0  # beyond |x| = 100 the first layer's sigmoids of trained models are saturated
REL_FLOOR = 1e-6  # max_rel = |a - b| / max(|reference|, REL_FLOOR): values near 0 do not explode
EDGE_VALUES = (0.0, -0.0, 1e-30, -1e-30, 1e-45, 0.5, 1.0, -1.0, 1e30, -1e30)  # 1e-45: fp32 denormal
WIDE_RANGE = 50.0  # the sigmoid saturates well inside [-50, 50]
BATCHES = (1, 4, 1000, 65536)
SERVE_BATCHES = (1, 4, 1000)
CUDA_ALIAS = ("torch-cuda", "ort-cuda")
REQUIRE_CHOICES: tuple[str, ...] = (*RUNNER_NAMES, "cuda")  # `--require cuda` means both CUDA runtimes


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    basis: str  # where the numbers come from

    def bound(self, reference: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Allowed |runtime - reference| per row. x: (rows, 2) inputs; reference: (rows,)."""
        import numpy as np

        # fp32 rounding in the first Gemm grows with |x| (|w . x| is up to |w| |x|): the absolute
        # allowance grows linearly with the row's largest |x|, from 1 up to INPUT_SCALE_CAP.
        scale = np.clip(np.max(np.abs(x.astype(np.float64)), axis=1), 1.0, INPUT_SCALE_CAP)
        return self.atol * scale + self.rtol * np.abs(reference)


# Measured with `python cli.py verify --arch all --atol 1 --rtol 1` over both archs, three seeds
# each, all input sets (docs/verification.md): fp32 runtimes (torch, onnxruntime, ReferenceEvaluator)
# differ from the float64 oracle by at most 6e-7 on inputs in [0, 1] and 1.65e-5 on [-50, 50], i.e.
# at most 6e-7 per unit of the input scale. atol 5e-6 (per unit scale) gives about 8x headroom.
FP32 = Tolerance(
    atol=5e-6, rtol=1e-5, basis="measured max |fp32 - fp64| 6e-7 per unit input scale on the CPU; ~8x headroom"
)
TOLERANCES: dict[str, Tolerance] = {
    "torch-cpu": FP32,
    "ort-cpu": FP32,
    "onnx-reference": FP32,
    # CUDA kernels (cuBLAS GEMM with TF32 off, __expf-based sigmoid) round differently from the CPU;
    # not measured on a card from this machine (docs/gpu.md): allow 10x the CPU tolerance.
    "torch-cuda": Tolerance(5e-5, 1e-4, "fp32 on CUDA, TF32 off; 10x the CPU tolerance until measured on a card"),
    "ort-cuda": Tolerance(5e-5, 1e-4, "fp32 on CUDA, TF32 off; 10x the CPU tolerance until measured on a card"),
}


@dataclass(frozen=True)
class InputSet:
    name: str
    description: str
    seed: int | None
    x: np.ndarray = field(repr=False)  # (rows, 2) float32
    expected_labels: tuple[int, ...] | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "seed": self.seed, "rows": int(self.x.shape[0])}


def input_sets(
    seed: int = 0, batches: tuple[int, ...] = BATCHES, kinds=("xor", "uniform", "wide", "edge")
) -> list[InputSet]:
    """Seeded input sets; each random set's seed is `seed` plus its position, and is recorded."""
    import numpy as np

    sets: list[InputSet] = []
    if "xor" in kinds:
        sets.append(InputSet("xor", "the four XOR points", None, np.array(XOR_X, dtype=np.float32), tuple(XOR_Y)))
    n = 0
    for kind, low, high in (("uniform", 0.0, 1.0), ("wide", -WIDE_RANGE, WIDE_RANGE)):
        if kind not in kinds:
            continue
        for batch in batches:
            s = seed + n
            n += 1
            x = np.random.default_rng(s).uniform(low, high, size=(batch, 2)).astype(np.float32)
            sets.append(InputSet(f"{kind}-{batch}", f"uniform [{low:g}, {high:g}], {batch} rows", s, x))
    if "edge" in kinds:
        v = np.array(EDGE_VALUES, dtype=np.float32)
        x = np.stack(np.meshgrid(v, v, indexing="ij"), axis=-1).reshape(-1, 2)
        sets.append(InputSet("edge", "all pairs of " + ", ".join(f"{e:g}" for e in EDGE_VALUES), None, x))
    return sets


@dataclass(frozen=True)
class Runtime:
    """A runner (runtimes.Runner) judged with a tolerance."""

    runner: Runner
    tolerance: Tolerance

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def detail(self) -> str:
        return self.runner.detail

    @property
    def deterministic(self) -> bool:
        return self.runner.deterministic

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run(x)


@dataclass(frozen=True)
class Comparison:
    runtime: str
    input_set: str
    rows: int
    max_abs: float
    max_rel: float
    mean_abs: float
    worst_row: int
    worst_input: tuple[float, float]
    worst_value: float
    worst_reference: float
    rows_over_tolerance: int
    label_disagreements: int
    labels_near_threshold: int  # reference within tolerance of 0.5: either label is within tolerance
    expected_labels_ok: bool
    shape: tuple[int, ...]  # the runtime's output shape
    expected_shape: tuple[int, ...]  # the reference's: (rows, outputs)
    passed: bool


@dataclass(frozen=True)
class RuntimeCheck:
    runtime: str
    batch_consistency_max_abs: float  # row alone vs the same row inside a batch
    batch_consistent: bool
    repeatable: bool  # two runs, identical bytes
    repeat_required: bool
    passed: bool


@dataclass(frozen=True)
class Report:
    kind: str  # "verify" or "serve-check"
    arch: str
    onnx_sha256: str
    reference: str
    rel_floor: float
    tolerances: dict[str, dict]
    input_sets: list[dict]
    ran: dict[str, str]  # runtime -> detail
    skipped: dict[str, str]  # runtime -> reason
    required_missing: list[str]
    comparisons: list[Comparison]
    checks: list[RuntimeCheck]
    seconds: float

    @property
    def passed(self) -> bool:
        return (
            not self.required_missing
            and bool(self.comparisons)
            and all(c.passed for c in self.comparisons)
            and all(c.passed for c in self.checks)
        )

    def worst(self, runtime: str | None = None) -> Comparison | None:
        rows = [c for c in self.comparisons if runtime is None or c.runtime == runtime]
        return max(rows, key=lambda c: c.max_abs, default=None)

    def failures(self) -> list[str]:
        out = [
            f"required runtime {r} did not run: {self.skipped.get(r, 'not available')}" for r in self.required_missing
        ]
        for c in self.comparisons:
            if not c.passed:
                why = []
                if c.rows_over_tolerance:
                    why.append(f"{c.rows_over_tolerance} rows over tolerance")
                if c.label_disagreements:
                    why.append(f"{c.label_disagreements} labels disagree")
                if not c.expected_labels_ok:
                    why.append("XOR labels are not [0, 1, 1, 0]")
                if c.shape != c.expected_shape:
                    why.append(f"output shape {list(c.shape)} is not the expected {list(c.expected_shape)}")
                out.append(
                    f"{c.runtime} on {c.input_set}: {', '.join(why)}; worst row {c.worst_row} "
                    f"x={list(c.worst_input)} gave {c.worst_value:.9g}, reference {c.worst_reference:.9g} "
                    f"(|diff| {c.max_abs:.3g})"
                )
        for k in self.checks:
            if not k.batch_consistent:
                out.append(
                    f"{k.runtime}: a row run alone differs from the same row in a batch by {k.batch_consistency_max_abs:.3g}"
                )
            if k.repeat_required and not k.repeatable:
                out.append(f"{k.runtime}: two runs on the same input gave different bytes")
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["failures"] = self.failures()
        return d


# ---------------------------------------------------------------------------------------------
# The engine


def compare_one(runtime: Runtime, s: InputSet, out: np.ndarray, ref: np.ndarray) -> Comparison:
    import numpy as np

    ref_shape, out_shape = ref.shape, out.shape
    shape_ok = tuple(out.shape) == tuple(ref.shape)  # (1, batch) is not (batch, 1), whatever the values
    if not shape_ok and out.size != ref.size:
        out = np.full(ref.shape, np.nan)  # nothing to compare row by row: every row fails
    out64 = out.astype(np.float64).reshape(-1)
    ref = ref.astype(np.float64).reshape(-1)
    diff = np.abs(out64 - ref)
    diff[np.isnan(out64) != np.isnan(ref)] = np.inf  # NaN where the reference has none is a failure
    diff = np.nan_to_num(diff, nan=0.0)
    bound = runtime.tolerance.bound(ref, s.x)
    over = diff > bound
    rel = diff / np.maximum(np.abs(ref), REL_FLOOR)
    worst = int(np.argmax(diff - bound)) if over.any() else int(np.argmax(diff))
    near = np.abs(ref - THRESHOLD) <= runtime.tolerance.bound(np.full_like(ref, THRESHOLD), s.x)
    labels, ref_labels = out64 > THRESHOLD, ref > THRESHOLD
    disagree = int(np.sum((labels != ref_labels) & ~near))
    expected_ok = s.expected_labels is None or tuple(int(v) for v in labels) == s.expected_labels
    return Comparison(
        runtime=runtime.name,
        input_set=s.name,
        rows=int(ref.shape[0]),
        max_abs=float(diff.max()),
        max_rel=float(rel.max()),
        mean_abs=float(diff.mean()),
        worst_row=worst,
        worst_input=(float(s.x[worst, 0]), float(s.x[worst, 1])),
        worst_value=float(out64[worst]),
        worst_reference=float(ref[worst]),
        rows_over_tolerance=int(over.sum()),
        label_disagreements=disagree,
        labels_near_threshold=int(near.sum()),
        expected_labels_ok=expected_ok,
        shape=tuple(int(d) for d in out_shape),
        expected_shape=tuple(int(d) for d in ref_shape),
        passed=not over.any() and disagree == 0 and expected_ok and shape_ok,
    )


def check_runtime(runtime: Runtime, s: InputSet, batch_out: np.ndarray, samples: int = 16) -> RuntimeCheck:
    """Batch consistency on `samples` rows of `s`, and byte repeatability on the whole of `s`."""
    import numpy as np

    idx = np.linspace(0, s.x.shape[0] - 1, num=min(samples, s.x.shape[0])).astype(int)
    if batch_out.size != s.x.shape[0]:  # a wrong output shape: already failed by compare_one
        return RuntimeCheck(runtime.name, float("inf"), False, False, runtime.deterministic, False)
    alone = np.concatenate([runtime.run(s.x[i : i + 1]).reshape(-1) for i in idx]).astype(np.float64)
    inside = batch_out.reshape(-1)[idx].astype(np.float64)
    gap = float(np.max(np.abs(alone - inside)))
    consistent = bool(np.all(np.abs(alone - inside) <= runtime.tolerance.bound(inside, s.x[idx])))
    again = runtime.run(s.x)
    repeatable = again.tobytes() == batch_out.tobytes()
    required = runtime.deterministic
    return RuntimeCheck(
        runtime.name, gap, consistent, repeatable, required, consistent and (repeatable or not required)
    )


def run_engine(
    kind: str,
    arch: str,
    onnx_sha256: str,
    reference_name: str,
    reference: Callable[[np.ndarray], np.ndarray],
    runtimes: list[Runtime],
    sets: list[InputSet],
    skipped: dict[str, str],
    required: list[str],
    check_set: str | None,
) -> Report:
    start = time.perf_counter()
    refs = {s.name: reference(s.x) for s in sets}
    comparisons: list[Comparison] = []
    checks: list[RuntimeCheck] = []
    for rt in runtimes:
        for s in sets:
            out = rt.run(s.x)
            comparisons.append(compare_one(rt, s, out, refs[s.name]))
            if s.name == check_set:
                checks.append(check_runtime(rt, s, out))
    ran = {rt.name: rt.detail for rt in runtimes}
    return Report(
        kind=kind,
        arch=arch,
        onnx_sha256=onnx_sha256,
        reference=reference_name,
        rel_floor=REL_FLOOR,
        tolerances={rt.name: asdict(rt.tolerance) for rt in runtimes},
        input_sets=[s.as_dict() for s in sets],
        ran=ran,
        skipped=skipped,
        required_missing=[r for r in required if r not in ran],
        comparisons=comparisons,
        checks=checks,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# Runtimes: runners from runtimes.py, each with its tolerance


def torch_runtime(
    model: Any, device: str, dtype_name: str = "float32", tol: Tolerance | None = None, name: str | None = None
) -> Runtime:
    runner = torch_runner(model, device, dtype_name, name)
    return Runtime(runner, tol or TOLERANCES.get(runner.name, FP32))


def ort_runtime(onnx: bytes | Path, provider: str, tol: Tolerance | None = None) -> tuple[Runtime, ProviderReport]:
    """(Runtime, ProviderReport). The runtime's name says what really ran, not what was asked."""
    runner = ort_runner(onnx, provider)
    assert runner.providers is not None
    return Runtime(runner, tol or TOLERANCES[runner.name]), runner.providers


def reference_evaluator_runtime(onnx: Any, tol: Tolerance | None = None) -> Runtime:
    """onnx's ReferenceEvaluator on a checked ModelProto (or a file's bytes or path, parsed and checked)."""
    if isinstance(onnx, Path):
        onnx = onnx.read_bytes()
    if isinstance(onnx, bytes):
        onnx = parse_checked(onnx, "model")
    return Runtime(reference_runner(onnx), tol or TOLERANCES["onnx-reference"])


def _override(name: str, atol: float | None, rtol: float | None) -> Tolerance:
    base = TOLERANCES.get(name, FP32)
    if atol is None and rtol is None:
        return base
    return Tolerance(
        atol if atol is not None else base.atol,
        rtol if rtol is not None else base.rtol,
        "set on the command line (--atol/--rtol)",
    )


# ---------------------------------------------------------------------------------------------
# The two stages


def verify(
    model: Any,
    arch: str,
    onnx: bytes | Path,
    onnx_sha256: str,
    require: tuple[str, ...] = (),
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    batches: tuple[int, ...] = BATCHES,
) -> Report:
    """Every runtime available here against the float64 oracle. Does not raise on a failed verdict:
    the caller records the report first, then fails (see `raise_on_failure`)."""
    import torch

    required: list[str] = []
    for r in require:
        required.extend(CUDA_ALIAS if r == "cuda" else [r])
    runtimes: list[Runtime] = []
    skipped: dict[str, str] = {}
    runtimes.append(torch_runtime(model, "cpu", tol=_override("torch-cpu", atol, rtol)))
    if torch.cuda.is_available():
        runtimes.append(torch_runtime(model, "cuda", tol=_override("torch-cuda", atol, rtol)))
    else:
        skipped["torch-cuda"] = f"torch {torch.__version__} sees no CUDA device"
    if isinstance(onnx, Path):
        onnx = onnx.read_bytes()
    cpu_rt, _ = ort_runtime(onnx, "cpu", _override("ort-cpu", atol, rtol))
    runtimes.append(cpu_rt)
    try:
        cuda_rt, _ = ort_runtime(onnx, "cuda", _override("ort-cuda", atol, rtol))
        runtimes.append(cuda_rt)
    except DeviceUnavailable as exc:
        skipped["ort-cuda"] = str(exc).removeprefix("--provider cuda: ")
    runtimes.append(reference_evaluator_runtime(onnx, _override("onnx-reference", atol, rtol)))
    oracle = torch_runtime(model, "cpu", "float64", name="oracle")
    sets = input_sets(seed, batches)
    check_set = next((s.name for s in sets if s.name.startswith("wide-") and s.x.shape[0] >= 1000), sets[-1].name)
    return run_engine(
        "verify",
        arch,
        onnx_sha256,
        "torch float64 on the CPU (weights from the artifact)",
        oracle.run,
        runtimes,
        sets,
        skipped,
        required,
        check_set,
    )


def serve_check(
    model: Any, arch: str, onnx: bytes | Path, onnx_sha256: str, provider: str, seed: int = 0
) -> tuple[Report, ProviderReport]:
    """onnxruntime (chosen provider) against the torch fp32 model: (Report, ProviderReport)."""
    torch_ref = torch_runtime(model, "cpu")
    rt, providers = ort_runtime(onnx, provider)
    # Both sides carry fp32 rounding: the allowed gap is the sum of both tolerances.
    own = TOLERANCES[rt.name]
    tol = Tolerance(
        own.atol + torch_ref.tolerance.atol,
        own.rtol + torch_ref.tolerance.rtol,
        f"{rt.name} tolerance + torch-cpu tolerance (both fp32)",
    )
    rt = Runtime(rt.runner, tol)
    sets = input_sets(seed, SERVE_BATCHES, kinds=("xor", "uniform"))
    report = run_engine(
        "serve-check",
        arch,
        onnx_sha256,
        "torch float32 on the CPU (weights from the artifact)",
        torch_ref.run,
        [rt],
        sets,
        {},
        [],
        "uniform-1000",
    )
    return report, providers


def raise_on_failure(report: Report, where: str) -> None:
    if not report.passed:
        problems = report.failures()
        more = f" (+{len(problems) - 1} more, see {where})" if len(problems) > 1 else ""
        raise EquivalenceFailed(f"{report.kind} failed for {report.arch}: {problems[0]}{more}")


# ---------------------------------------------------------------------------------------------
# From an artifacts folder: load (hash-checked), run, record, then fail closed.


def _load(paths: A.ArtifactPaths, arch: Arch) -> tuple[Any, Any, bytes, str]:
    """(manifest, torch model, ONNX bytes, ONNX sha256): each file read once, hashed, and parsed
    from those same bytes."""
    manifest, model = load_trained(paths, arch)
    data = A.read_verified(paths, manifest, A.ONNX, "export")
    check_served(parse_checked(data, str(paths.onnx)), str(paths.onnx), arch.n_inputs, arch.n_outputs)
    return manifest, model, data, manifest.files[A.ONNX].sha256


@dataclass(frozen=True)
class ServeCheckResult:
    report: Report
    providers: ProviderReport


def run_serve_check(paths: A.ArtifactPaths, arch: Arch, provider: str) -> ServeCheckResult:
    """Recorded in the manifest; raises EquivalenceFailed on a failure."""
    _, model, data, sha = _load(paths, arch)
    report, providers = serve_check(model, arch.name, data, sha, provider)
    worst = report.worst()
    A.update_sections(
        paths,
        {
            "serve_check": ServeCheckRecord(
                passed=report.passed,
                providers=ProvidersRecord(providers.requested, providers.used, providers.cuda_note),
                reference=report.reference,
                tolerance=report.tolerances,
                max_abs_diff=worst.max_abs if worst else None,
                max_rel_diff=max((c.max_rel for c in report.comparisons), default=None),
                input_sets=tuple(report.input_sets),
                failures=tuple(report.failures()),
            )
        },
    )
    raise_on_failure(report, str(paths.manifest))
    return ServeCheckResult(report, providers)


def verify_folder(
    paths: A.ArtifactPaths,
    arch: Arch,
    require: tuple[str, ...] = (),
    atol: float | None = None,
    rtol: float | None = None,
) -> Report:
    """Verify a model folder (the candidate, or a version) and write nothing."""
    _, model, data, sha = _load(paths, arch)
    return verify(model, arch.name, data, sha, tuple(require), atol, rtol)


def run_verify(
    paths: A.ArtifactPaths,
    arch: Arch,
    require: tuple[str, ...] = (),
    atol: float | None = None,
    rtol: float | None = None,
) -> Report:
    """The full report, written to <arch>/verify.json and summarised in the manifest. Does not
    raise on a failed verdict, so the caller can show it first: then `raise_on_failure`."""
    import json

    report = verify_folder(paths, arch, require, atol, rtol)
    staged = A.stage_bytes(paths.folder, A.VERIFY, (json.dumps(report.as_dict(), indent=2) + "\n").encode())
    A.commit(
        paths,
        "verify",
        {A.VERIFY: staged},
        {
            "verify": VerifyRecord(
                passed=report.passed,
                runtimes=report.ran,
                skipped=report.skipped,
                max_abs_vs_oracle={rt: w.max_abs for rt in report.ran if (w := report.worst(rt)) is not None},
                failures=tuple(report.failures()),
            )
        },
    )
    return report
