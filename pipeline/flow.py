"""Orchestration: the lock, the clean-up of temporaries, the stages in order, their timings.

The CLI, `bench` and the tests call these functions; Python users can too:

    from pipeline import run_all
    summary = run_all("shallow", "artifacts", device="cpu")
    print(summary.models[0].export.sha256)

Every function here takes the artifacts folder's lock for the whole run (a second writer gets
FolderLocked), removes temporaries a killed run left, and returns frozen dataclasses. None prints:
progress and notices go to the optional callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import artifacts as A
from .archs import TUTORIAL, Arch, expand
from .errors import MissingArtifact

if TYPE_CHECKING:  # pragma: no cover
    from .export import ExportResult
    from .runtimes import ProviderReport
    from .ship import ShipResult
    from .train import TrainConfig, TrainResult
    from .validate import ValidationResult
    from .verify import Report, ServeCheckResult

LogFn = Callable[[str, int, float], None]  # (arch, step, loss) at log steps
NoticeFn = Callable[[str], None]
ReportFn = Callable[["Report"], None]


def _archs(which: str | Arch | Sequence[Arch]) -> list[Arch]:
    if isinstance(which, str):
        return expand(which)
    if isinstance(which, Arch):
        return [which]
    return list(which)


@contextmanager
def _writing(root: Path, create: bool) -> Iterator[None]:
    """The lock for a writing run; temporaries that killed runs left are removed once it is held."""
    with A.run_lock(root, create=create):
        if root.is_dir():
            for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]:
                A.clean_stale_temporaries(folder)
        yield


def _need_folder(root: Path, arch: Arch) -> None:
    if not root.is_dir():
        raise MissingArtifact(f"no trained model for {arch.name} in {root}: run train first")


# ---------------------------------------------------------------------------------------------
# One stage each


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    validation: ValidationResult
    paths: A.ArtifactPaths
    notices: tuple[str, ...]


def _train_one(config: TrainConfig, min_accuracy: float, paths: A.ArtifactPaths, on_log: LogFn | None):
    """Train, gate, save. Nothing is written unless the model passes the gate, so a failed retrain
    leaves the previous artifacts alone."""
    from .train import save, train
    from .validate import evaluate, gate

    log = (lambda step, loss: on_log(config.arch.name, step, loss)) if on_log else None
    result = train(config, log)
    validation = gate(evaluate(result.model, config.arch, result.final_loss, min_accuracy))
    manifest, notices = save(result, validation.record(), paths)
    return result, validation, manifest, notices


def train_models(
    which: str | Arch | Sequence[Arch],
    root: Path | str,
    *,
    steps: int = TUTORIAL.steps,
    lr: float = TUTORIAL.lr,
    seed: int = TUTORIAL.seed,
    device: str = "auto",
    trainer: str = "auto",
    min_accuracy: float = TUTORIAL.min_accuracy,
    on_log: LogFn | None = None,
) -> list[Trained]:
    """Train, gate and save each model: `train`."""
    from .train import TrainConfig

    root = Path(root)
    out = []
    with _writing(root, create=True):
        for arch in _archs(which):
            paths = A.ArtifactPaths(root, arch.name)
            config = TrainConfig(arch=arch, steps=steps, lr=lr, seed=seed, device=device, trainer=trainer)
            result, validation, _, notices = _train_one(config, min_accuracy, paths, on_log)
            out.append(Trained(result, validation, paths, notices))
    return out


def validate_models(
    which: str | Arch | Sequence[Arch], root: Path | str, *, min_accuracy: float = TUTORIAL.min_accuracy
) -> list[ValidationResult]:
    """Re-check saved weights against the gate: `validate`."""
    from .validate import run_stage

    root = Path(root)
    out = []
    with _writing(root, create=False):
        for arch in _archs(which):
            _need_folder(root, arch)
            out.append(run_stage(A.ArtifactPaths(root, arch.name), arch, min_accuracy))
    return out


def export_models(which: str | Arch | Sequence[Arch], root: Path | str) -> list[ExportResult]:
    """Export saved, gated weights to ONNX and check the file: `export`."""
    from .export import run_stage

    root = Path(root)
    out = []
    with _writing(root, create=False):
        for arch in _archs(which):
            _need_folder(root, arch)
            out.append(run_stage(A.ArtifactPaths(root, arch.name), arch))
    return out


def serve_check_models(
    which: str | Arch | Sequence[Arch], root: Path | str, *, provider: str = "auto"
) -> list[ServeCheckResult]:
    """onnxruntime with `provider` against torch: `serve-check`."""
    from .verify import run_serve_check

    root = Path(root)
    out = []
    with _writing(root, create=False):
        for arch in _archs(which):
            _need_folder(root, arch)
            out.append(run_serve_check(A.ArtifactPaths(root, arch.name), arch, provider))
    return out


def verify_models(
    which: str | Arch | Sequence[Arch],
    root: Path | str,
    *,
    require: Sequence[str] = (),
    atol: float | None = None,
    rtol: float | None = None,
    on_report: ReportFn | None = None,
) -> list[Report]:
    """Every runtime against the float64 oracle: `verify`. Each report is recorded and handed to
    `on_report` before a failed verdict raises EquivalenceFailed (fail closed, but shown first)."""
    from .errors import UsageError
    from .verify import REQUIRE_CHOICES, raise_on_failure, run_verify

    for r in require:
        if r not in REQUIRE_CHOICES:
            raise UsageError(f"--require {r!r}: choose from {', '.join(REQUIRE_CHOICES)}")
    root = Path(root)
    out = []
    with _writing(root, create=False):
        for arch in _archs(which):
            _need_folder(root, arch)
            paths = A.ArtifactPaths(root, arch.name)
            report = run_verify(paths, arch, tuple(require), atol, rtol)
            if on_report is not None:
                on_report(report)
            raise_on_failure(report, str(paths.verify))
            out.append(report)
    return out


def ship_models(
    which: str | Arch | Sequence[Arch],
    root: Path | str,
    out: Path | str,
    *,
    max_batch_size: int = 1024,
    instance_kind: str = "auto",
    instances: int = 1,
) -> list[ShipResult]:
    """A Triton model repository from verified artifacts: `ship`."""
    from .ship import ship

    root = Path(root)
    shipped = []
    with _writing(root, create=False):
        for arch in _archs(which):
            _need_folder(root, arch)
            shipped.append(ship(root, arch, Path(out), max_batch_size, instance_kind, instances))
    return shipped


# ---------------------------------------------------------------------------------------------
# The whole chain


@dataclass(frozen=True)
class StageTimes:
    train: float
    export: float
    serve_check: float
    verify: float | None  # None: skipped


@dataclass(frozen=True)
class ModelRun:
    arch: Arch
    paths: A.ArtifactPaths
    train: TrainResult
    validation: ValidationResult
    export: ExportResult
    providers: ProviderReport
    serve_check: Report
    verify: Report | None  # None with skip_verify
    times: StageTimes
    notices: tuple[str, ...] = ()

    @property
    def max_serve_diff(self) -> float:
        worst = self.serve_check.worst()
        return worst.max_abs if worst else float("nan")


@dataclass(frozen=True)
class RunSummary:
    root: Path
    models: tuple[ModelRun, ...] = field(default_factory=tuple)


def run_all(
    which: str | Arch | Sequence[Arch],
    root: Path | str,
    *,
    steps: int = TUTORIAL.steps,
    lr: float = TUTORIAL.lr,
    seed: int = TUTORIAL.seed,
    device: str = "auto",
    trainer: str = "auto",
    min_accuracy: float = TUTORIAL.min_accuracy,
    provider: str = "auto",
    skip_verify: bool = False,
    on_log: LogFn | None = None,
    on_notice: NoticeFn | None = None,
) -> RunSummary:
    """train -> gate -> export -> serve-check -> verify for each model, under one lock, stopping at
    the first failure (a PipelineError). Returns what every stage returned, with its time."""
    from .export import export
    from .train import TrainConfig
    from .verify import raise_on_failure, run_serve_check, run_verify

    root = Path(root)
    runs = []
    with _writing(root, create=True):
        for arch in _archs(which):
            paths = A.ArtifactPaths(root, arch.name)
            config = TrainConfig(arch=arch, steps=steps, lr=lr, seed=seed, device=device, trainer=trainer)
            t = time.perf_counter()
            result, validation, manifest, notices = _train_one(config, min_accuracy, paths, on_log)
            t_train = time.perf_counter() - t
            for n in notices:
                if on_notice:
                    on_notice(n)
            t = time.perf_counter()
            exported = export(result.model, arch, paths, manifest)  # the model in memory: no reload
            t_export = time.perf_counter() - t
            t = time.perf_counter()
            checked = run_serve_check(paths, arch, provider)
            t_serve = time.perf_counter() - t
            if checked.providers.cuda_note and on_notice:
                on_notice(checked.providers.cuda_note)
            report, t_verify = None, None
            if not skip_verify:
                t = time.perf_counter()
                report = run_verify(paths, arch)
                raise_on_failure(report, str(paths.verify))
                t_verify = time.perf_counter() - t
            runs.append(
                ModelRun(
                    arch=arch,
                    paths=paths,
                    train=result,
                    validation=validation,
                    export=exported,
                    providers=checked.providers,
                    serve_check=checked.report,
                    verify=report,
                    times=StageTimes(t_train, t_export, t_serve, t_verify),
                    notices=tuple(notices),
                )
            )
    return RunSummary(root, tuple(runs))
