"""Orchestration: the lock, the clean-up of temporaries, the stages in order, their timings, and
publication.

The CLI, `bench` and the tests call these functions; Python users can too:

    from pipeline import run_all
    summary = run_all("shallow", "artifacts", device="cpu")
    print(summary.models[0].published)

Every writing function takes the artifacts folder's lock for the whole run (a second writer gets
FolderLocked), removes temporaries a killed run left, and returns frozen dataclasses. Functions over
several models run every model even when one fails and return one `Outcome` per model (its result or
its error); `run_all` and the single-model helpers raise. None prints: progress and notices go to
the optional callbacks.

Publication: a `verify` that passes copies the candidate into a new immutable version folder and
points PUBLISHED at it. predict, ship and serve only ever read a published (or named) version.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from . import artifacts as A
from .archs import TUTORIAL, Arch, expand
from .errors import CorruptArtifact, MissingArtifact, PipelineError, UsageError, raise_if_stopped
from .manifest import FileRecord, Manifest

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
T = TypeVar("T")
MAX_STEPS = 10_000_000


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One model's result, or the error that stopped it."""

    arch: Arch
    result: T | None = None
    error: PipelineError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def worst_exit_code(outcomes: Sequence[Outcome]) -> int:
    return max((o.error.exit_code for o in outcomes if o.error is not None), default=0)


def _archs(which: str | Arch | Sequence[Arch]) -> list[Arch]:
    if isinstance(which, str):
        return expand(which)
    if isinstance(which, Arch):
        return [which]
    return list(which)


def _each(archs: list[Arch], fn: Callable[[Arch], T]) -> list[Outcome[T]]:
    out: list[Outcome[T]] = []
    for arch in archs:
        try:
            out.append(Outcome(arch, result=fn(arch)))
        except PipelineError as exc:
            out.append(Outcome(arch, error=exc))
    return out


@contextmanager
def _writing(root: Path, create: bool) -> Iterator[None]:
    """The lock for a writing run; temporaries that killed runs left are removed once it is held."""
    with A.run_lock(root, create=create):
        if root.is_dir():
            A.clean_stale_temporaries(root)
            for model in (p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
                A.clean_stale_temporaries(model)
                A.clean_stale_temporaries(model / A.CANDIDATE)
        yield


def _need_folder(root: Path, arch: Arch) -> None:
    if not root.is_dir():
        raise MissingArtifact(f"no trained model for {arch.name} in {root}: run train first")
    A.check_model_dirs(root, arch.name)


def check_train_options(steps: int, lr: float, seed: int) -> None:
    import math

    if not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps {steps}: must be between 1 and {MAX_STEPS}")
    if not math.isfinite(lr) or lr <= 0 or lr > 3.4e38:
        raise UsageError(f"--lr {lr}: must be a finite number > 0 within float32's range")
    if not 0 <= seed <= 2**63 - 1:
        raise UsageError(f"--seed {seed}: must be between 0 and 2**63-1")


# ---------------------------------------------------------------------------------------------
# Versions: resolution for readers, publication for writers


@dataclass(frozen=True)
class VersionInfo:
    number: int
    published: bool
    created: str | None
    final_loss: float | None
    onnx_sha256: str | None
    verified: bool  # every file intact and a passing verify record


def resolve_version(root: Path | str, arch: Arch, version: int | None = None) -> A.ArtifactPaths:
    """The folder of the published version (or of version `version`). A folder in the layout of
    older releases is read as version 1 when it verifies, else refused."""
    root = Path(root)
    name = arch.name
    if version is None:
        number = A.read_published(root, name)
        if number is None:
            if A.has_legacy_layout(root, name):
                return _legacy(root, arch)
            raise MissingArtifact(f"no published version of {name} in {root}: run all (or train, export, verify) first")
    else:
        number = version
    paths = A.ArtifactPaths.version(root, name, number)
    if not paths.folder.is_dir() or paths.folder.is_symlink():
        if version is None:
            raise CorruptArtifact(f"{root / name / A.PUBLISHED} names version {number}, which is missing")
        have = ", ".join(map(str, A.list_versions(root, name))) or "none"
        raise MissingArtifact(f"{name} has no version {number} in {root} (versions: {have})")
    return paths


def _legacy(root: Path, arch: Arch) -> A.ArtifactPaths:
    """Files directly in <root>/<arch>/ (an older release): version 1 if its record says verified and
    every file still has its recorded sha256."""
    paths = A.ArtifactPaths(root, arch.name, "")
    try:
        manifest = A.read_manifest(paths)
        if manifest.verify is None or not manifest.verify.passed:
            raise CorruptArtifact("not verified")
        for name in manifest.files:
            A.read_verified(paths, manifest, name, "all")
    except PipelineError:
        raise CorruptArtifact(
            f"{paths.folder} was made by an older version of this tool and does not verify; run all again"
        ) from None
    return paths


def _migrate_legacy(root: Path, arch: Arch, on_notice: NoticeFn | None) -> None:
    """Under the lock: an older release's folder becomes version 1 if it verifies; otherwise its
    files (never verified, never servable) are removed, with a notice."""
    import contextlib

    if not A.has_legacy_layout(root, arch.name):
        return
    paths = A.ArtifactPaths(root, arch.name, "")
    try:
        _legacy(root, arch)
        manifest = A.read_manifest(paths)
        files = {n: A.read_verified(paths, manifest, n, "all") for n in manifest.files if n in A.VERSION_FILES}
        if not A.list_versions(root, arch.name):
            records = {n: FileRecord(hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items()}
            number = A.create_version(
                root, arch.name, files, manifest.replace(schema=2, files=records, published_at=manifest.updated)
            )
            A.set_published(root, arch.name, number)
            if on_notice:
                on_notice(f"{paths.folder}: made by an older version of this tool; verified, kept as version {number}")
    except CorruptArtifact:
        if on_notice:
            on_notice(f"{paths.folder}: made by an older version of this tool and not verified; its files were removed")
    for name in (A.MANIFEST, *A.VERSION_FILES):  # the manifest first: never one that describes missing files
        with contextlib.suppress(FileNotFoundError):
            (paths.folder / name).unlink()


@dataclass(frozen=True)
class Published:
    arch: Arch
    number: int
    new: bool  # False: this candidate already was version `number`; the pointer moved back to it
    pruned: tuple[int, ...] = ()


def _publish_candidate(root: Path, arch: Arch, report: Report, keep: int) -> Published:
    """The candidate just passed verify: copy it into a new version (with its model card) and point
    PUBLISHED at it; keep the newest `keep` versions (never the published one)."""
    from .ship import model_card

    paths = A.ArtifactPaths(root, arch.name)
    manifest = A.read_manifest(paths)
    if manifest.verify is None or not manifest.verify.passed:
        raise CorruptArtifact(f"{paths.manifest} does not record a passing verify")
    files = {n: A.read_verified(paths, manifest, n, "verify") for n in manifest.files if n in A.VERSION_FILES}
    onnx, weights = manifest.file(A.ONNX), manifest.file(A.WEIGHTS)
    for number in reversed(A.list_versions(root, arch.name)):
        try:
            existing = A.read_manifest(A.ArtifactPaths.version(root, arch.name, number))
            if existing.file(A.ONNX) != onnx or existing.file(A.WEIGHTS) != weights:
                continue
            check_version(root, arch, number)  # every file intact: never point at a damaged version
        except PipelineError:
            continue
        A.set_published(root, arch.name, number)
        return Published(arch, number, new=False)
    files[A.CARD] = model_card(manifest, report.as_dict()).encode()
    records = {n: FileRecord(hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items()}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    number = A.create_version(root, arch.name, files, manifest.replace(files=records, published_at=now))
    A.set_published(root, arch.name, number)
    return Published(arch, number, new=True, pruned=tuple(A.prune_versions(root, arch.name, keep)))


def list_model_versions(root: Path | str, arch: Arch) -> list[VersionInfo]:
    """Every version of `arch`, oldest first (read-only)."""
    root = Path(root)
    try:
        published = A.read_published(root, arch.name)
    except PipelineError:
        published = None
    out = []
    for number in A.list_versions(root, arch.name):
        try:
            m: Manifest | None = A.read_manifest(A.ArtifactPaths.version(root, arch.name, number))
        except PipelineError:
            m = None
        onnx = m.file(A.ONNX) if m else None
        try:
            check_version(root, arch, number)
            intact = True
        except PipelineError:
            intact = False
        out.append(
            VersionInfo(
                number=number,
                published=number == published,
                created=m.published_at if m else None,
                final_loss=m.train.final_loss if m and m.train else None,
                onnx_sha256=onnx.sha256 if onnx else None,
                verified=intact,
            )
        )
    return out


def check_version(root: Path | str, arch: Arch, number: int) -> A.ArtifactPaths:
    """Version `number` exists, every file has its recorded sha256, and it passed verify."""
    paths = resolve_version(root, arch, number)
    manifest = A.read_manifest(paths)
    for name in manifest.files:
        A.read_verified(paths, manifest, name, "verify")
    if manifest.verify is None or not manifest.verify.passed:
        raise CorruptArtifact(f"{paths.folder} has no passing verify record")
    return paths


def publish_models(which: str | Arch | Sequence[Arch], root: Path | str, *, version: int) -> list[Outcome[Published]]:
    """Point PUBLISHED at an existing, intact, verified version (a rollback): `publish`."""
    root = Path(root)

    def one(arch: Arch) -> Published:
        A.check_model_dirs(root, arch.name)
        check_version(root, arch, version)
        A.set_published(root, arch.name, version)
        return Published(arch, version, new=False)

    with _writing(root, create=False):
        return _each(_archs(which), one)


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
    on_notice: NoticeFn | None = None,
) -> list[Outcome[Trained]]:
    """Train, gate and save each model into its candidate: `train`."""
    from .train import TrainConfig

    check_train_options(steps, lr, seed)
    root = Path(root)

    def one(arch: Arch) -> Trained:
        A.check_model_dirs(root, arch.name)
        _migrate_legacy(root, arch, on_notice)
        paths = A.ArtifactPaths(root, arch.name)
        config = TrainConfig(arch=arch, steps=steps, lr=lr, seed=seed, device=device, trainer=trainer)
        result, validation, _, notices = _train_one(config, min_accuracy, paths, on_log)
        return Trained(result, validation, paths, notices)

    with _writing(root, create=True):
        return _each(_archs(which), one)


def _on_candidates(
    which: str | Arch | Sequence[Arch], root: Path | str, stage: Callable[[A.ArtifactPaths, Arch], T]
) -> list[Outcome[T]]:
    """Run `stage` on each model's candidate, under the lock; the folder must exist already."""
    root = Path(root)

    def one(arch: Arch) -> T:
        _need_folder(root, arch)
        return stage(A.ArtifactPaths(root, arch.name), arch)

    with _writing(root, create=False):
        return _each(_archs(which), one)


def validate_models(
    which: str | Arch | Sequence[Arch], root: Path | str, *, min_accuracy: float = TUTORIAL.min_accuracy
) -> list[Outcome[ValidationResult]]:
    """Re-check the candidate's weights against the gate: `validate`."""
    from .validate import run_stage

    return _on_candidates(which, root, lambda paths, arch: run_stage(paths, arch, min_accuracy))


def export_models(which: str | Arch | Sequence[Arch], root: Path | str) -> list[Outcome[ExportResult]]:
    """Export the candidate's gated weights to ONNX and check the file: `export`."""
    from .export import run_stage

    return _on_candidates(which, root, run_stage)


def serve_check_models(
    which: str | Arch | Sequence[Arch], root: Path | str, *, provider: str = "auto"
) -> list[Outcome[ServeCheckResult]]:
    """onnxruntime with `provider` against torch, on the candidate: `serve-check`."""
    from .verify import run_serve_check

    return _on_candidates(which, root, lambda paths, arch: run_serve_check(paths, arch, provider))


@dataclass(frozen=True)
class Verified:
    report: Report
    published: Published | None  # None: a named version re-checked (nothing written)


def verify_models(
    which: str | Arch | Sequence[Arch],
    root: Path | str,
    *,
    require: Sequence[str] = (),
    atol: float | None = None,
    rtol: float | None = None,
    version: int | None = None,
    keep: int = A.DEFAULT_KEEP,
    on_report: ReportFn | None = None,
) -> list[Outcome[Verified]]:
    """Every runtime against the float64 oracle: `verify`. Without `version`: verifies the
    candidate, records the report, and publishes it as a new version when it passes. With
    `version`: re-checks that version and writes nothing. Each report goes to `on_report` before a
    failed verdict becomes the model's EquivalenceFailed (fail closed, but shown first)."""
    from .verify import REQUIRE_CHOICES, raise_on_failure, run_verify, verify_folder

    for r in require:
        if r not in REQUIRE_CHOICES:
            raise UsageError(f"--require {r!r}: choose from {', '.join(REQUIRE_CHOICES)}")
    if keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 version")
    root = Path(root)

    def one(arch: Arch) -> Verified:
        _need_folder(root, arch)
        if version is not None:
            paths = check_version(root, arch, version)
            report = verify_folder(paths, arch, tuple(require), atol, rtol)
            if on_report is not None:
                on_report(report)
            raise_on_failure(report, f"version {version}")
            return Verified(report, None)
        paths = A.ArtifactPaths(root, arch.name)
        report = run_verify(paths, arch, tuple(require), atol, rtol)
        if on_report is not None:
            on_report(report)
        raise_on_failure(report, str(paths.verify))
        raise_if_stopped()
        return Verified(report, _publish_candidate(root, arch, report, keep))

    if version is not None:  # reads only
        if not root.is_dir():
            raise MissingArtifact(f"no published version in {root}: run all first")
        return _each(_archs(which), one)
    with _writing(root, create=False):
        return _each(_archs(which), one)


def ship_models(
    which: str | Arch | Sequence[Arch],
    root: Path | str,
    out: Path | str,
    *,
    version: int | None = None,
    max_batch_size: int = 1024,
    instance_kind: str = "auto",
    instances: int = 1,
) -> list[Outcome[ShipResult]]:
    """A Triton model repository from the published (or a named) version: `ship`."""
    from .ship import ship_version

    root = Path(root)

    def one(arch: Arch) -> ShipResult:
        paths = resolve_version(root, arch, version)
        if paths.number is not None:
            check_version(root, arch, paths.number)  # every file intact, verified
        manifest = A.read_manifest(paths)
        if manifest.verify is None or not manifest.verify.passed:
            raise CorruptArtifact(f"{paths.folder} has no passing verify record; ship takes verified versions only")
        names = [n for n in (A.ONNX, A.VERIFY, A.CARD) if n in manifest.files]
        files = {n: A.read_verified(paths, manifest, n, "verify") for n in names}
        files[A.MANIFEST] = paths.manifest.read_bytes()
        if Manifest.from_json(files[A.MANIFEST], str(paths.manifest)) != manifest:
            raise CorruptArtifact(f"{paths.manifest} changed while it was being read")
        number = paths.number or 1
        return ship_version(
            arch,
            number,
            files,
            Path(out),
            max_batch_size=max_batch_size,
            instance_kind=instance_kind,
            instances=instances,
        )

    return _each(_archs(which), one)


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
    published: Published | None  # None with skip_verify: the candidate is not published
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
    failures: tuple[Outcome, ...] = ()  # models whose chain stopped, with their error

    @property
    def exit_code(self) -> int:
        return worst_exit_code(self.failures)


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
    keep: int = A.DEFAULT_KEEP,
    keep_going: bool = False,
    on_log: LogFn | None = None,
    on_notice: NoticeFn | None = None,
) -> RunSummary:
    """train -> gate -> export -> serve-check -> verify -> publish for each model, under one lock.
    A model's chain stops at its first failure. With keep_going=False (the library default) that
    failure is raised; with keep_going=True the other models still run and the failures are in
    `RunSummary.failures` (what the CLI does)."""
    from .export import export
    from .train import TrainConfig
    from .verify import raise_on_failure, run_serve_check, run_verify

    check_train_options(steps, lr, seed)
    if keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 version")
    root = Path(root)

    def one(arch: Arch) -> ModelRun:
        A.check_model_dirs(root, arch.name)
        _migrate_legacy(root, arch, on_notice)
        paths = A.ArtifactPaths(root, arch.name)
        config = TrainConfig(arch=arch, steps=steps, lr=lr, seed=seed, device=device, trainer=trainer)
        t = time.perf_counter()
        result, validation, manifest, notices = _train_one(config, min_accuracy, paths, on_log)
        t_train = time.perf_counter() - t
        raise_if_stopped()
        for n in notices:
            if on_notice:
                on_notice(n)
        t = time.perf_counter()
        exported = export(result.model, arch, paths, manifest)  # the model in memory: no reload
        t_export = time.perf_counter() - t
        raise_if_stopped()
        t = time.perf_counter()
        checked = run_serve_check(paths, arch, provider)
        t_serve = time.perf_counter() - t
        if checked.providers.cuda_note and on_notice:
            on_notice(checked.providers.cuda_note)
        report, t_verify, published = None, None, None
        if not skip_verify:
            t = time.perf_counter()
            report = run_verify(paths, arch)
            raise_on_failure(report, str(paths.verify))
            raise_if_stopped()  # a stop asked for during verify: publish nothing
            published = _publish_candidate(root, arch, report, keep)
            t_verify = time.perf_counter() - t
        return ModelRun(
            arch=arch, paths=paths, train=result, validation=validation, export=exported,
            providers=checked.providers, serve_check=checked.report, verify=report, published=published,
            times=StageTimes(t_train, t_export, t_serve, t_verify), notices=tuple(notices),
        )  # fmt: skip

    with _writing(root, create=True):
        if not keep_going:
            return RunSummary(root, tuple(one(arch) for arch in _archs(which)))
        outcomes = _each(_archs(which), one)
    return RunSummary(
        root,
        tuple(o.result for o in outcomes if o.result is not None),
        tuple(o for o in outcomes if o.error is not None),
    )
