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

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union

from . import artifacts as A
from .archs import ALL, Arch, arch_for
from .errors import CorruptArtifact, MissingArtifact, PipelineError, UsageError, raise_if_stopped
from .manifest import SCHEMA, FileRecord, Manifest

if TYPE_CHECKING:  # pragma: no cover
    from .data import Dataset
    from .export import ExportResult
    from .plot import LossPlot
    from .recipe import Recipe
    from .runtimes import ProviderReport
    from .ship import ShipResult
    from .train import TrainResult
    from .validate import Gate, ValidationResult
    from .verify import Report, ServeCheckResult

Named = Union[Arch, "Recipe"]  # what names a model folder: its `.name`


@dataclass(frozen=True)
class _Named:
    """A model known by its name only (what `resolve_version` needs of it)."""

    name: str


LogFn = Callable[[str, int, float], None]  # (arch, step, loss) at log steps
NoticeFn = Callable[[str], None]
ReportFn = Callable[["Report"], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One model's result, or the error that stopped it. `arch` is the recipe that named the model
    (its `.name` is the model's folder)."""

    arch: Recipe
    result: T | None = None
    error: PipelineError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def worst_exit_code(outcomes: Sequence[Outcome]) -> int:
    return max((o.error.exit_code for o in outcomes if o.error is not None), default=0)


def _recipes(which: str | Recipe | Arch | Sequence[Recipe | Arch]) -> list[Recipe]:
    """A built-in name, "all" (every built-in), a Recipe, or several."""
    from .recipe import BUILTIN_NAMES, Recipe, builtin_recipe

    if isinstance(which, str):
        return [builtin_recipe(n) for n in BUILTIN_NAMES] if which == ALL else [builtin_recipe(which)]
    items = [which] if isinstance(which, (Recipe, Arch)) else list(which)
    return [builtin_recipe(r.name) if isinstance(r, Arch) else r for r in items]


def recipes_of(which: str | Recipe | Arch | Sequence[Recipe | Arch]) -> list[Recipe]:
    """The recipes a command runs on (public form of `_recipes`)."""
    return _recipes(which)


def _each(recipes: list[Recipe], fn: Callable[[Recipe], T]) -> list[Outcome[T]]:
    out: list[Outcome[T]] = []
    for recipe in recipes:
        try:
            out.append(Outcome(recipe, result=fn(recipe)))
        except PipelineError as exc:
            out.append(Outcome(recipe, error=exc))
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


def _selector(named: Any) -> str:
    """How the command line names a model (for hints): a Recipe knows its file; otherwise by name."""
    from .recipe import Recipe, selector

    return named.selector if isinstance(named, Recipe) else selector(named.name)


def _need_folder(root: Path, arch: Arch | Recipe) -> None:
    if not root.is_dir():
        raise MissingArtifact(f"no trained model for {arch.name} in {root}: {_hint('train', arch, root)}")
    A.check_model_dirs(root, arch.name)


def _hint(cmd: str, named: Any, root: Path, when: str = "first") -> str:
    """The command that fixes what a message about model `named` names (`recipe.hint`)."""
    return A.ArtifactPaths(root, named.name, selector=_selector(named)).hint(cmd, when)


@dataclass(frozen=True)
class Overrides:
    """The command-line flags a user typed (None: the recipe's value)."""

    steps: int | None = None
    lr: float | None = None
    seed: int | None = None
    min_accuracy: float | None = None
    max_rmse: float | None = None

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.with_overrides(
            steps=self.steps, lr=self.lr, seed=self.seed, min_accuracy=self.min_accuracy, max_rmse=self.max_rmse
        )

    def check(self) -> None:
        """Bad values fail before any work (and before the lock)."""
        from .recipe import builtin_recipe

        self.apply(builtin_recipe("shallow"))


def load_data(recipe: Recipe, on_progress: NoticeFn | None = None, on_notice: NoticeFn | None = None) -> Any:
    """The recipe's dataset (None for the built-in XOR points: the stages use them directly)."""
    if recipe.data.builtin is not None:
        return None
    from .data import load_dataset

    return load_dataset(recipe, on_progress, on_notice)


def recorded_data(manifest: Manifest, where: str) -> Any:
    """The dataset a model was trained on, read again from its recorded recipe; refused when the data
    file no longer has the sha256 recorded at training time (its validation rows would differ)."""
    from .recipe import recipe_from_record

    if manifest.recipe is None or manifest.recipe.get("data", {}).get("builtin") is not None:
        return None
    recipe = recipe_from_record(manifest.recipe, where)
    data = load_data(recipe)
    recorded = (manifest.data or {}).get("sha256")
    if recorded is not None and data.sha256 != recorded:
        from .data import DataError

        raise DataError(
            f"{data.source} changed since {manifest.arch} was trained (sha256 {data.sha256[:12]}..., "
            f"recorded {str(recorded)[:12]}...): train again"
        )
    return data


def _data_record(recipe: Recipe, data: Any) -> dict[str, Any]:
    if data is None:
        from .archs import XOR_FEATURES

        return {"source": f"builtin:{recipe.data.builtin}", "sha256": None, "rows": 4, "features": list(XOR_FEATURES)}
    return dict(data.record())


# ---------------------------------------------------------------------------------------------
# Versions: resolution for readers, publication for writers


@dataclass(frozen=True)
class VersionInfo:
    number: int
    published: bool
    created: str | None
    final_loss: float | None
    onnx_sha256: str | None
    verified: bool  # every file intact (the manifest matching its seal) and a passing verify record
    problem: str | None = None  # why it does not verify (an edited manifest, a changed file...)


def resolve_version(
    root: Path | str, arch: Named | str, version: int | None = None, selector: str | None = None
) -> A.ArtifactPaths:
    """The folder of the published version (or of version `version`) of the model named `arch` (a
    name, or a Recipe or Arch: its `.name`). A folder in the layout of older releases is read as version
    1 when it verifies, else refused. `selector`: how the command line names the model, for hints
    (default: from the recipe, or the name)."""
    from .recipe import selector as selector_of

    root = Path(root)
    name = arch if isinstance(arch, str) else arch.name
    sel = selector or (selector_of(arch) if isinstance(arch, str) else _selector(arch))
    if version is None:
        number = A.read_published(root, name)
        if number is None:
            if A.has_legacy_layout(root, name):
                return _legacy(root, arch if not isinstance(arch, str) else _Named(name))
            fix = A.ArtifactPaths(root, name, selector=sel).hint("all")
            raise MissingArtifact(f"no published version of {name} in {root}: {fix}")
    else:
        number = version
    paths = A.ArtifactPaths.version(root, name, number, selector=sel)
    if not paths.folder.is_dir() or paths.folder.is_symlink():
        if version is None:
            raise CorruptArtifact(f"{root / name / A.PUBLISHED} names version {number}, which is missing")
        have = ", ".join(map(str, A.list_versions(root, name))) or "none"
        raise MissingArtifact(f"{name} has no version {number} in {root} (versions: {have})")
    return paths


def _legacy(root: Path, arch: Any) -> A.ArtifactPaths:
    """Files directly in <root>/<arch>/ (an older release): version 1 if its record says verified and
    every file still has its recorded sha256."""
    paths = A.ArtifactPaths(root, arch.name, "", selector=_selector(arch))
    try:
        manifest = A.read_manifest(paths)
        if manifest.verify is None or not manifest.verify.passed:
            raise CorruptArtifact("not verified")
        for name in manifest.files:
            A.read_verified(paths, manifest, name, "all")
    except PipelineError:
        raise CorruptArtifact(
            f"{paths.folder} was made by an older version of this tool and does not verify; {paths.hint('all', 'again')}"
        ) from None
    return paths


def _migrate_legacy(root: Path, arch: Named, on_notice: NoticeFn | None) -> None:
    """Under the lock: an older release's folder becomes version 1 if it verifies; otherwise its
    files (never verified, never servable) are removed, with a notice."""
    import contextlib

    if not A.has_legacy_layout(root, arch.name):
        return
    paths = A.ArtifactPaths(root, arch.name, "", selector=_selector(arch))
    try:
        _legacy(root, arch)
        manifest = A.read_manifest(paths)
        files = {n: A.read_verified(paths, manifest, n, "all") for n in manifest.files if n in A.VERSION_FILES}
        if not A.list_versions(root, arch.name):
            records = {n: FileRecord(hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items()}
            number = A.create_version(
                root, arch.name, files, manifest.replace(schema=SCHEMA, files=records, published_at=manifest.updated)
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
    arch: Named
    number: int
    new: bool  # False: this candidate already was version `number`; the pointer moved back to it
    pruned: tuple[int, ...] = ()


def _publish_candidate(root: Path, arch: Named, report: Report, keep: int) -> Published:
    """The candidate just passed verify: copy it into a new version (with its model card) and point
    PUBLISHED at it; keep the newest `keep` versions (never the published one)."""
    from .ship import model_card

    paths = A.ArtifactPaths(root, arch.name, selector=_selector(arch))
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


def list_model_versions(root: Path | str, arch: Named) -> list[VersionInfo]:
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
        problem = None
        try:
            check_version(root, arch, number)
        except PipelineError as exc:
            problem = str(exc)
        out.append(
            VersionInfo(
                number=number,
                published=number == published,
                created=m.published_at if m else None,
                final_loss=m.train.final_loss if m and m.train else None,
                onnx_sha256=onnx.sha256 if onnx else None,
                verified=problem is None,
                problem=problem,
            )
        )
    return out


def check_version(root: Path | str, arch: Named, number: int) -> A.ArtifactPaths:
    """Version `number` exists, every file has its recorded sha256, and it passed verify."""
    paths = resolve_version(root, arch, number)
    manifest = A.read_manifest(paths)
    for name in manifest.files:
        A.read_verified(paths, manifest, name, "verify")
    if manifest.verify is None or not manifest.verify.passed:
        raise CorruptArtifact(f"{paths.folder} has no passing verify record")
    return paths


def publish_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch], root: Path | str, *, version: int
) -> list[Outcome[Published]]:
    """Point PUBLISHED at an existing, intact, verified version (a rollback): `publish`."""
    root = Path(root)

    def one(arch: Named) -> Published:
        A.check_model_dirs(root, arch.name)
        check_version(root, arch, version)
        A.set_published(root, arch.name, version)
        return Published(arch, version, new=False)

    with _writing(root, create=False):
        return _each(_recipes(which), one)


# ---------------------------------------------------------------------------------------------
# One stage each


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    validation: ValidationResult
    paths: A.ArtifactPaths
    notices: tuple[str, ...]


def _gate_of(recipe: Recipe) -> Gate:
    from .validate import Gate

    return Gate(recipe.gate.min_accuracy, recipe.gate.max_rmse)


def _train_one(
    recipe: Recipe,
    paths: A.ArtifactPaths,
    *,
    device: str,
    trainer: str,
    on_log: LogFn | None,
    on_notice: NoticeFn | None,
    on_progress: NoticeFn | None = None,
    data: Any = None,
) -> tuple[TrainResult, ValidationResult, Manifest, tuple[str, ...], Any, LossPlot | None]:
    """Read the data, train, gate, save. Nothing is written unless the model passes the gate, so a
    failed retrain leaves the previous artifacts alone. Returns the dataset too (None: XOR), and
    loss.png being drawn in a separate process (None: no picture, and a notice says why): the
    caller commits it with `_finish_plot` (or cancels it)."""
    from .train import TrainConfig, save, train
    from .validate import evaluate, gate

    if data is None:
        data = load_data(recipe, on_progress, on_notice)
    arch = network_for(recipe, data)
    raise_if_stopped()
    t = recipe.train
    config = TrainConfig(
        arch=arch, steps=t.steps, lr=t.lr, seed=t.seed, device=device, trainer=trainer,
        optimizer=t.optimizer, batch_size=t.batch_size,
    )  # fmt: skip
    log = (lambda step, loss: on_log(arch.name, step, loss)) if on_log else None
    result = train(config, log, data)
    validation = gate(evaluate(result.model, arch, result.final_loss, _gate_of(recipe), data))
    plot, no_plot = _start_plot(result)  # drawn beside what follows (save, export, the checks)
    try:
        manifest, notices = save(result, validation.record(), paths, recipe.as_dict(), _data_record(recipe, data))
    except BaseException:
        if plot is not None:
            plot.cancel()
        raise
    return result, validation, manifest, (*notices, *([no_plot] if no_plot else [])), data, plot


def _start_plot(result: TrainResult) -> tuple[LossPlot | None, str | None]:
    from .plot import start_loss_plot, uses_tutorial_settings

    cfg = result.config
    overlay = uses_tutorial_settings(cfg.arch.name, cfg.steps, cfg.lr, cfg.seed, cfg.tutorial_init)
    return start_loss_plot(cfg.arch.name, result.losses, overlay)


def _finish_plot(paths: A.ArtifactPaths, plot: LossPlot | None) -> tuple[str, ...]:
    """Wait for loss.png and commit it into `paths`, the folder the same run trained into: (), or
    the notice that says why there is no picture (a plotting failure is never an error). The child
    only renders; the bytes are staged and committed here, so a kill leaves no partial file."""
    if plot is None:
        return ()
    from .plot import PlotFailed

    try:
        png = plot.result()
        A.commit(paths, "plot", {A.LOSS_PNG: A.stage_bytes(paths.folder, A.LOSS_PNG, png)}, {})
    except PlotFailed as exc:
        return (str(exc),)
    finally:
        plot.cancel()  # after a result: nothing to stop; after an interrupt or a failed commit: the child
    return ()


def train_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch],
    root: Path | str,
    *,
    overrides: Overrides = Overrides(),
    device: str = "auto",
    trainer: str = "auto",
    on_log: LogFn | None = None,
    on_notice: NoticeFn | None = None,
    on_progress: NoticeFn | None = None,
) -> list[Outcome[Trained]]:
    """Train, gate and save each model into its candidate: `train`."""
    overrides.check()
    root = Path(root)

    def one(recipe: Recipe) -> Trained:
        recipe = overrides.apply(recipe)
        A.check_model_dirs(root, recipe.name)
        _migrate_legacy(root, recipe, on_notice)
        paths = A.ArtifactPaths(root, recipe.name, selector=recipe.selector)
        result, validation, _, notices, _, plot = _train_one(
            recipe, paths, device=device, trainer=trainer, on_log=on_log, on_notice=on_notice, on_progress=on_progress
        )
        return Trained(result, validation, paths, (*notices, *_finish_plot(paths, plot)))

    recipes = _recipes(which)
    with _writing(root, create=True):
        return _each(recipes, one)


def network_for(recipe: Recipe, data: Dataset | None) -> Arch:
    """The network `recipe` trains on `data` (None: the built-in XOR points); its gate must fit the
    task the data has (a one-line RecipeError otherwise)."""
    from .archs import XOR_FEATURES

    if data is None:
        arch = arch_for(recipe, XOR_FEATURES, (0, 1), "binary")
    else:
        arch = arch_for(recipe, data.features, data.classes, data.task)
    recipe.check_gate(arch.task)
    return arch


def candidate_arch(paths: A.ArtifactPaths) -> Arch:
    """The network the candidate's manifest describes."""
    return A.arch_of(A.read_manifest(paths), str(paths.manifest))


def _on_candidates(
    which: str | Recipe | Arch | Sequence[Recipe | Arch],
    root: Path | str,
    stage: Callable[[A.ArtifactPaths, Arch, Recipe], T],
) -> list[Outcome[T]]:
    """Run `stage` on each model's candidate, under the lock; the folder must exist already."""
    root = Path(root)

    def one(recipe: Recipe) -> T:
        _need_folder(root, recipe)
        paths = A.ArtifactPaths(root, recipe.name, selector=recipe.selector)
        return stage(paths, candidate_arch(paths), recipe)

    recipes = _recipes(which)
    with _writing(root, create=False):
        return _each(recipes, one)


def _candidate_data(paths: A.ArtifactPaths) -> Any:
    return recorded_data(A.read_manifest(paths), str(paths.manifest))


def validate_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch],
    root: Path | str,
    *,
    overrides: Overrides = Overrides(),
) -> list[Outcome[ValidationResult]]:
    """Re-check the candidate's weights against the gate (the recipe's, or the flags'): `validate`."""
    from .validate import run_stage

    overrides.check()

    def stage(paths: A.ArtifactPaths, arch: Arch, recipe: Recipe) -> ValidationResult:
        recipe = overrides.apply(recipe)
        recipe.check_gate(arch.task)
        return run_stage(paths, arch, _gate_of(recipe), _candidate_data(paths))

    return _on_candidates(which, root, stage)


def export_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch], root: Path | str
) -> list[Outcome[ExportResult]]:
    """Export the candidate's gated weights to ONNX and check the file: `export`."""
    from .export import run_stage

    return _on_candidates(which, root, lambda paths, arch, _: run_stage(paths, arch))


def serve_check_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch], root: Path | str, *, provider: str = "auto"
) -> list[Outcome[ServeCheckResult]]:
    """onnxruntime with `provider` against torch, on the candidate: `serve-check`."""
    from .verify import run_serve_check

    return _on_candidates(
        which, root, lambda paths, arch, _: run_serve_check(paths, arch, provider, data=_candidate_data(paths))
    )


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

    def one(recipe: Recipe) -> Verified:
        _need_folder(root, recipe)
        if version is not None:
            paths = check_version(root, recipe, version)
            manifest = A.read_manifest(paths)
            arch = A.arch_of(manifest, str(paths.manifest))
            data = recorded_data(manifest, str(paths.manifest))
            report = verify_folder(paths, arch, tuple(require), atol, rtol, data=data)
            if on_report is not None:
                on_report(report)
            raise_on_failure(report, f"version {version}")
            return Verified(report, None)
        paths = A.ArtifactPaths(root, recipe.name, selector=recipe.selector)
        arch = candidate_arch(paths)
        report = run_verify(paths, arch, tuple(require), atol, rtol, data=_candidate_data(paths))
        if on_report is not None:
            on_report(report)
        raise_on_failure(report, str(paths.verify))
        raise_if_stopped()
        return Verified(report, _publish_candidate(root, arch, report, keep))

    recipes = _recipes(which)
    if version is not None:  # reads only
        if not root.is_dir():
            raise MissingArtifact(f"no published version in {root}: {_hint('all', recipes[0], root)}")
        return _each(recipes, one)
    with _writing(root, create=False):
        return _each(recipes, one)


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
    A.check_output_folder(Path(out), "--out")  # a file or device there: one line for every model

    def one(recipe: Recipe) -> ShipResult:
        paths = resolve_version(root, recipe, version)
        if paths.number is not None:
            check_version(root, recipe, paths.number)  # every file intact, verified
        manifest, raw, seal = A.read_manifest_bytes(paths)  # the very bytes checked are the ones shipped
        arch = A.arch_of(manifest, str(paths.manifest))
        if manifest.verify is None or not manifest.verify.passed:
            raise CorruptArtifact(f"{paths.folder} has no passing verify record; ship takes verified versions only")
        names = [n for n in (A.ONNX, A.VERIFY, A.CARD) if n in manifest.files]
        files = {n: A.read_verified(paths, manifest, n, "verify") for n in names}
        files[A.MANIFEST] = raw
        if seal is not None:
            files[A.SEAL] = seal
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

    return _each(_recipes(which), one)


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
    which: str | Recipe | Arch | Sequence[Recipe | Arch],
    root: Path | str,
    *,
    overrides: Overrides = Overrides(),
    device: str = "auto",
    trainer: str = "auto",
    provider: str = "auto",
    skip_verify: bool = False,
    keep: int = A.DEFAULT_KEEP,
    keep_going: bool = False,
    on_log: LogFn | None = None,
    on_notice: NoticeFn | None = None,
    on_progress: NoticeFn | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    min_accuracy: float | None = None,
) -> RunSummary:
    """read data -> train -> gate -> export -> serve-check -> verify -> publish for each model, under
    one lock. A model's chain stops at its first failure. With keep_going=False (the library default)
    that failure is raised; with keep_going=True the other models still run and the failures are in
    `RunSummary.failures` (what the CLI does). `steps`, `lr`, `seed` and `min_accuracy` are shorthands
    for the same fields of `overrides`."""
    from .export import export
    from .verify import raise_on_failure, run_serve_check, run_verify

    overrides = Overrides(
        steps if steps is not None else overrides.steps,
        lr if lr is not None else overrides.lr,
        seed if seed is not None else overrides.seed,
        min_accuracy if min_accuracy is not None else overrides.min_accuracy,
        overrides.max_rmse,
    )
    overrides.check()
    if keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 version")
    root = Path(root)

    def one(recipe: Recipe) -> ModelRun:
        recipe = overrides.apply(recipe)
        A.check_model_dirs(root, recipe.name)
        _migrate_legacy(root, recipe, on_notice)
        paths = A.ArtifactPaths(root, recipe.name, selector=recipe.selector)
        t = time.perf_counter()
        result, validation, manifest, train_notices, data, plot = _train_one(
            recipe, paths, device=device, trainer=trainer, on_log=on_log, on_notice=on_notice, on_progress=on_progress
        )
        arch = result.arch
        t_train = time.perf_counter() - t
        notices: list[str] = []

        def notify(new: tuple[str, ...]) -> None:
            notices.extend(new)
            for n in new:
                if on_notice:
                    on_notice(n)

        try:
            raise_if_stopped()
            notify(train_notices)
            t = time.perf_counter()
            exported = export(result.model, arch, paths, manifest)  # the model in memory: no reload
            t_export = time.perf_counter() - t
            raise_if_stopped()
            t = time.perf_counter()
            checked = run_serve_check(paths, arch, provider, data=data)
            t_serve = time.perf_counter() - t
            if checked.providers.cuda_note and on_notice:
                on_notice(checked.providers.cuda_note)
            report, t_verify, published = None, None, None
            if not skip_verify:
                t = time.perf_counter()
                report = run_verify(paths, arch, data=data)
                raise_on_failure(report, str(paths.verify))
                raise_if_stopped()  # a stop asked for during verify: publish nothing
                t_verify = time.perf_counter() - t
            pending, plot = plot, None
            notify(_finish_plot(paths, pending))  # loss.png joins the candidate before it is published
            raise_if_stopped()
            if report is not None and t_verify is not None:
                t = time.perf_counter()
                published = _publish_candidate(root, arch, report, keep)
                t_verify += time.perf_counter() - t
        except PipelineError:
            if plot is not None:  # the chain failed after training: the candidate still gets its picture
                pending, plot = plot, None
                with contextlib.suppress(PipelineError):
                    notify(_finish_plot(paths, pending))
            raise
        finally:
            if plot is not None:  # interrupted: stop drawing
                plot.cancel()
        return ModelRun(
            arch=arch, paths=paths, train=result, validation=validation, export=exported,
            providers=checked.providers, serve_check=checked.report, verify=report, published=published,
            times=StageTimes(t_train, t_export, t_serve, t_verify), notices=tuple(notices),
        )  # fmt: skip

    recipes = _recipes(which)
    with _writing(root, create=True):
        if not keep_going:
            return RunSummary(root, tuple(one(r) for r in recipes))
        outcomes = _each(recipes, one)
    return RunSummary(
        root,
        tuple(o.result for o in outcomes if o.result is not None),
        tuple(o for o in outcomes if o.error is not None),
    )
