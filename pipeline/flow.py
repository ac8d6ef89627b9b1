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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import MissingArtifact, PipelineError, UsageError, raise_if_stopped
from .spec.archs import ALL, Arch, arch_for
from .store import artifacts as A
from .store import versions
from .store.manifest import Manifest
from .store.versions import Published

if TYPE_CHECKING:  # pragma: no cover
    from .checks.runtimes import ProviderReport
    from .checks.verify import Report, ServeCheckResult
    from .graph.export import ExportResult
    from .serving.predict import PredictJob
    from .serving.ship import ShipResult
    from .spec.data import Dataset
    from .spec.recipe import Recipe
    from .spec.starter import Starter
    from .training.plot import LossPlot
    from .training.train import TrainResult
    from .training.validate import ValidationResult

LogFn = Callable[[str, int, float], None]  # (model name, step, loss) at log steps
NoticeFn = Callable[[str], None]
ReportFn = Callable[["Report"], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One model's result, or the error that stopped it. `recipe` is the recipe that named the model
    (its `.name` is the model's folder)."""

    recipe: Recipe
    result: T | None = None
    error: PipelineError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def worst_exit_code(outcomes: Sequence[Outcome]) -> int:
    return max((o.error.exit_code for o in outcomes if o.error is not None), default=0)


def _recipes(which: str | Recipe | Arch | Sequence[Recipe | Arch]) -> list[Recipe]:
    """A built-in name, "all" (every built-in), a Recipe, or several."""
    from .spec.recipe import BUILTIN_NAMES, Recipe, builtin_recipe

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


def _need_folder(root: Path, recipe: Recipe) -> None:
    if not root.is_dir():
        raise MissingArtifact(f"no trained model for {recipe.name} in {root}: {_hint('train', recipe, root)}")
    A.check_model_dirs(root, recipe.name)


def _hint(cmd: str, recipe: Recipe, root: Path, when: str = "first") -> str:
    """The command that fixes what a message about `recipe`'s model names (`ArtifactPaths.hint`)."""
    return A.ArtifactPaths(root, recipe.name, selector=recipe.selector).hint(cmd, when)


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
        from .spec.recipe import builtin_recipe

        self.apply(builtin_recipe("shallow"))


def load_data(recipe: Recipe, on_progress: NoticeFn | None = None, on_notice: NoticeFn | None = None) -> Dataset:
    """The recipe's dataset: its file read, checked and split, or the built-in XOR points (a Dataset
    like any other: the four points are both its training and its validation rows)."""
    from .spec.data import load_dataset

    return load_dataset(recipe, on_progress, on_notice)


def recorded_data(manifest: Manifest, where: str) -> Dataset:
    """The dataset a model was trained on, read again from its recorded recipe (manifests of the
    oldest releases record none: the built-ins, on the XOR points); refused when the data file no
    longer has the sha256 recorded at training time (its validation rows would differ)."""
    from .spec.data import DataError, xor_dataset
    from .spec.recipe import recipe_from_record

    if manifest.recipe is None:
        return xor_dataset()
    data = load_data(recipe_from_record(manifest.recipe, where))
    recorded = (manifest.data or {}).get("sha256")
    if recorded is not None and data.sha256 != recorded:
        raise DataError(
            f"{data.source} changed since {manifest.name} was trained (sha256 {str(data.sha256)[:12]}..., "
            f"recorded {str(recorded)[:12]}...): train again"
        )
    return data


# ---------------------------------------------------------------------------------------------
# Versions (store.versions owns them; these wrap its writers in the lock)


def publish_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch], root: Path | str, *, version: int
) -> list[Outcome[Published]]:
    """Point PUBLISHED at an existing, intact, verified version (a rollback): `publish`."""
    root = Path(root)

    def one(recipe: Recipe) -> Published:
        return versions.publish(root, recipe.name, version, recipe.selector)

    with _writing(root, create=False):
        return _each(_recipes(which), one)


def _publish_candidate(
    root: Path, arch: Arch, recipe: Recipe, report: Report, keep: int, manifest: Manifest
) -> Published:
    """The candidate just passed verify: a new version with its model card (store.versions).
    `manifest`: the candidate's, as verify recorded it."""
    from .store.card import model_card

    doc = report.as_dict()
    return versions.publish_candidate(root, arch.name, lambda m: model_card(m, doc), keep, recipe.selector, manifest)


# ---------------------------------------------------------------------------------------------
# One stage each


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    validation: ValidationResult
    paths: A.ArtifactPaths
    notices: tuple[str, ...]


def _train_one(
    recipe: Recipe,
    paths: A.ArtifactPaths,
    *,
    device: str,
    trainer: str,
    on_log: LogFn | None,
    on_notice: NoticeFn | None,
    on_progress: NoticeFn | None = None,
    data: Dataset | None = None,
) -> tuple[TrainResult, ValidationResult, Manifest, tuple[str, ...], Dataset, LossPlot | None]:
    """Read the data (unless given), train, gate, save. Nothing is written unless the model passes the
    gate, so a failed retrain leaves the previous artifacts alone. Returns the dataset too, and
    loss.png being drawn in a separate process (None: no picture, and a notice says why): the
    caller hands it to a `_Picture`, which commits or cancels it."""
    from .training.train import TrainConfig, save, train
    from .training.validate import evaluate, gate

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
    validation = gate(evaluate(result.model, arch, result.final_loss, recipe.gate, data))
    plot, no_plot = _start_plot(result)  # drawn beside what follows (save, export, the checks)
    try:
        manifest, notices = save(result, validation.record(), paths, recipe.as_dict(), data.record())
    except BaseException:
        if plot is not None:
            plot.cancel()
        raise
    return result, validation, manifest, (*notices, *([no_plot] if no_plot else [])), data, plot


def _start_plot(result: TrainResult) -> tuple[LossPlot | None, str | None]:
    from .training.plot import start_loss_plot, uses_tutorial_settings

    cfg = result.config
    overlay = uses_tutorial_settings(cfg.arch.name, cfg.steps, cfg.lr, cfg.seed, cfg.tutorial_init)
    return start_loss_plot(cfg.arch.name, result.losses, overlay)


class _Picture:
    """loss.png being drawn in a separate process beside the rest of a model's chain (None: no
    picture), for the candidate in `paths`. `commit()` waits for it and commits it there, returning
    () or the notice that says why there is no picture (a plotting failure is never an error); the
    child only renders, the bytes are staged and committed here, so a kill leaves no partial file.
    Leaving the `with` block uncommitted commits it anyway after a PipelineError (the candidate
    keeps its picture; the notice goes to `on_notice`), and otherwise (an interrupt) stops drawing."""

    def __init__(self, paths: A.ArtifactPaths, plot: LossPlot | None, on_notice: NoticeFn | None = None) -> None:
        self.paths, self._plot, self.on_notice = paths, plot, on_notice
        self.committed: Manifest | None = None  # the manifest that records loss.png, once committed

    def commit(self) -> tuple[str, ...]:
        plot, self._plot = self._plot, None
        if plot is None:
            return ()
        from .training.plot import PlotFailed

        try:
            png = plot.result()
            staged = {A.LOSS_PNG: A.stage_bytes(self.paths.folder, A.LOSS_PNG, png)}
            self.committed = A.commit(self.paths, "plot", staged, {})
        except PlotFailed as exc:
            return (str(exc),)
        finally:
            plot.cancel()  # after a result: nothing to stop; after an interrupt or a failed commit: the child
        return ()

    def __enter__(self) -> _Picture:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._plot is None:
            return
        if isinstance(exc, PipelineError):
            with contextlib.suppress(PipelineError):
                for notice in self.commit():
                    if self.on_notice:
                        self.on_notice(notice)
            return
        plot, self._plot = self._plot, None
        plot.cancel()


class _Clock:
    """Seconds per stage of one model's chain: `with clock("export"): ...` adds the block's time
    when it completes (a stage that raised has no time); `clock.get(stage)` is None for a stage
    that never completed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def get(self, stage: str) -> float | None:
        return self.seconds.get(stage)


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
        versions.migrate_legacy(root, recipe.name, on_notice, recipe.selector)
        paths = A.ArtifactPaths(root, recipe.name, selector=recipe.selector)
        result, validation, _, notices, _, plot = _train_one(
            recipe, paths, device=device, trainer=trainer, on_log=on_log, on_notice=on_notice, on_progress=on_progress
        )
        with _Picture(paths, plot) as picture:
            return Trained(result, validation, paths, (*notices, *picture.commit()))

    recipes = _recipes(which)
    with _writing(root, create=True):
        return _each(recipes, one)


def network_for(recipe: Recipe, data: Dataset) -> Arch:
    """The network `recipe` trains on `data`; its gate must fit the task the data has (a one-line
    RecipeError otherwise)."""
    arch = arch_for(recipe, data.features, data.classes, data.task, data.encoding)
    recipe.check_gate(arch.task)
    return arch


@dataclass(frozen=True)
class Candidate:
    """A model's candidate folder as a stage command finds it, under the lock: its manifest read
    once (the stages are handed it and do not read it again), and the network it describes."""

    paths: A.ArtifactPaths
    manifest: Manifest
    arch: Arch

    @classmethod
    def read(cls, paths: A.ArtifactPaths) -> Candidate:
        manifest = A.read_manifest(paths)
        return cls(paths, manifest, A.arch_of(manifest, str(paths.manifest)))

    def data(self) -> Any:
        """The data set the manifest records (read from its CSV; None for the built-ins' XOR points)."""
        return recorded_data(self.manifest, str(self.paths.manifest))


def _on_candidates(
    which: str | Recipe | Arch | Sequence[Recipe | Arch],
    root: Path | str,
    stage: Callable[[Candidate, Recipe], T],
) -> list[Outcome[T]]:
    """Run `stage` on each model's candidate, under the lock; the folder must exist already."""
    root = Path(root)

    def one(recipe: Recipe) -> T:
        _need_folder(root, recipe)
        return stage(Candidate.read(A.ArtifactPaths(root, recipe.name, selector=recipe.selector)), recipe)

    recipes = _recipes(which)
    with _writing(root, create=False):
        return _each(recipes, one)


def validate_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch],
    root: Path | str,
    *,
    overrides: Overrides = Overrides(),
) -> list[Outcome[ValidationResult]]:
    """Re-check the candidate's weights against the gate (the recipe's, or the flags'): `validate`."""
    from .training.validate import run_stage

    overrides.check()

    def stage(c: Candidate, recipe: Recipe) -> ValidationResult:
        recipe = overrides.apply(recipe)
        recipe.check_gate(c.arch.task)
        return run_stage(c.paths, c.arch, recipe.gate, c.data(), c.manifest)

    return _on_candidates(which, root, stage)


def export_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch], root: Path | str
) -> list[Outcome[ExportResult]]:
    """Export the candidate's gated weights to ONNX and check the file: `export`."""
    from .graph.export import run_stage

    return _on_candidates(which, root, lambda c, _: run_stage(c.paths, c.arch, c.manifest))


def serve_check_models(
    which: str | Recipe | Arch | Sequence[Recipe | Arch], root: Path | str, *, provider: str = "auto"
) -> list[Outcome[ServeCheckResult]]:
    """onnxruntime with `provider` against torch, on the candidate: `serve-check`."""
    from .checks.verify import run_serve_check

    return _on_candidates(
        which, root, lambda c, _: run_serve_check(c.paths, c.arch, provider, data=c.data(), manifest=c.manifest)
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
    from .checks.verify import REQUIRE_CHOICES, raise_on_failure, run_verify, verify_folder

    for r in require:
        if r not in REQUIRE_CHOICES:
            raise UsageError(f"--require {r!r}: choose from {', '.join(REQUIRE_CHOICES)}")
    if keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 version")
    root = Path(root)

    def one(recipe: Recipe) -> Verified:
        _need_folder(root, recipe)
        if version is not None:
            checked = versions.check_version(root, recipe.name, version, recipe.selector)
            paths, manifest = checked.paths, checked.manifest
            arch = A.arch_of(manifest, str(paths.manifest))
            data = recorded_data(manifest, str(paths.manifest))
            report = verify_folder(
                paths, arch, tuple(require), atol, rtol, data=data, files=checked.files, manifest=manifest
            )
            if on_report is not None:
                on_report(report)
            raise_on_failure(report, f"version {version}")
            return Verified(report, None)
        c = Candidate.read(A.ArtifactPaths(root, recipe.name, selector=recipe.selector))
        report, committed = run_verify(c.paths, c.arch, tuple(require), atol, rtol, data=c.data(), manifest=c.manifest)
        if on_report is not None:
            on_report(report)
        raise_on_failure(report, str(c.paths.verify))
        raise_if_stopped()
        return Verified(report, _publish_candidate(root, c.arch, recipe, report, keep, committed))

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
    from .serving.ship import ship_version

    root = Path(root)
    A.check_output_folder(Path(out), "--out")  # a file or device there: one line for every model

    def one(recipe: Recipe) -> ShipResult:
        checked = versions.check_version(root, recipe.name, version, recipe.selector)  # every file, once
        manifest = checked.manifest
        arch = A.arch_of(manifest, str(checked.paths.manifest))
        files = {n: checked.files[n] for n in (A.ONNX, A.VERIFY, A.CARD) if n in checked.files}
        files[A.MANIFEST] = checked.manifest_bytes  # the very bytes that were checked are the ones shipped
        if checked.seal is not None:
            files[A.SEAL] = checked.seal
        return ship_version(
            arch,
            checked.number,
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
    from .checks.verify import raise_on_failure, run_serve_check, run_verify
    from .graph.export import export

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
        versions.migrate_legacy(root, recipe.name, on_notice, recipe.selector)
        paths = A.ArtifactPaths(root, recipe.name, selector=recipe.selector)
        clock = _Clock()
        with clock("train"):
            result, validation, manifest, train_notices, data, plot = _train_one(
                recipe, paths, device=device, trainer=trainer, on_log=on_log, on_notice=on_notice,
                on_progress=on_progress,
            )  # fmt: skip
        arch = result.arch
        notices: list[str] = []

        def notify(new: tuple[str, ...]) -> None:
            notices.extend(new)
            for n in new:
                if on_notice:
                    on_notice(n)

        report, published = None, None
        with _Picture(paths, plot, on_notice) as picture:
            raise_if_stopped()
            notify(train_notices)
            with clock("export"):
                exported = export(result.model, arch, paths, manifest)  # the model in memory: no reload
            raise_if_stopped()
            with clock("serve_check"):
                checked = run_serve_check(paths, arch, provider, data=data)
            if checked.providers.cuda_note and on_notice:
                on_notice(checked.providers.cuda_note)
            if not skip_verify:
                with clock("verify"):
                    report, committed = run_verify(paths, arch, data=data)
                    raise_on_failure(report, str(paths.verify))
                    raise_if_stopped()  # a stop asked for during verify: publish nothing
            notify(picture.commit())  # loss.png joins the candidate before it is published
            raise_if_stopped()
            if report is not None:
                with clock("verify"):  # publishing counts as verify's time
                    latest = picture.committed or committed
                    published = _publish_candidate(root, arch, recipe, report, keep, latest)
        times = StageTimes(
            clock.seconds["train"], clock.seconds["export"], clock.seconds["serve_check"], clock.get("verify")
        )
        return ModelRun(
            arch=arch, paths=paths, train=result, validation=validation, export=exported,
            providers=checked.providers, serve_check=checked.report, verify=report, published=published,
            times=times, notices=tuple(notices),
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


# ---------------------------------------------------------------------------------------------
# sweep: the batched program (training.sweep), its files, and the best pair through the whole chain


@dataclass(frozen=True)
class SweepRun:
    """A sweep with its files written and, with export_best, the best pair published."""

    result: Any  # training.sweep.SweepResult
    written: tuple[Path, ...]
    published: Published | None  # the best pair's version, with export_best
    notices: tuple[str, ...] = ()
    export_error: PipelineError | None = None  # with export_best: why nothing was published


def run_sweep(
    which: str | Recipe | Arch,
    seeds: int,
    lrs: Sequence[float] | None = None,
    *,
    steps: int | None = None,
    device: str = "auto",
    min_accuracy: float | None = None,
    max_rmse: float | None = None,
    out: Path | None = None,
    artifacts_dir: Path = Path("artifacts"),
    export_best: bool = False,
    on_notice: NoticeFn | None = None,
    on_progress: NoticeFn | None = None,
    on_members: Callable[[int, int], None] | None = None,
) -> SweepRun:
    """`sweep`: seeds 0..seeds-1 x lrs (default: the recipe's own lr) of a recipe (a built-in's name or
    Arch, or a Recipe), on its data read once and split as `train` splits it, with its optimizer, batch
    size and gate; steps, min_accuracy and max_rmse override the recipe's as `all`'s flags do. Writes
    sweep.json (and sweep.png with matplotlib; without it, an old sweep.png is removed) into `out`
    (default <artifacts_dir>/_sweeps/<name>; never inside a model's artifacts). With export_best,
    trains the best converged pair again through `run_all` (train, gate, export, serve-check, verify)
    so the sweep ends in a published version; when that fails (no pair converged: GateFailed), the
    sweep's files stay written and the error comes back in `export_error`, not raised, so the caller
    can still report the sweep. on_progress: status lines (reading data); on_members: (member-steps
    done, in all) while training."""
    from .errors import GateFailed
    from .store.jsonout import dumps_bytes
    from .training import sweep as SW
    from .training.plot import matplotlib_missing
    from .training.train import DEVICES

    SW.check_options(seeds, lrs if lrs is not None else (1.0,), steps if steps is not None else 1, min_accuracy)
    if device not in DEVICES:
        raise UsageError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    overrides = Overrides(steps=steps, min_accuracy=min_accuracy, max_rmse=max_rmse)
    overrides.check()
    recipe = overrides.apply(_recipes(which)[0])
    lrs = tuple(lrs) if lrs is not None else (recipe.train.lr,)
    folder = out if out is not None else artifacts_dir / A.SWEEPS / recipe.name
    A.check_output_folder(folder, "--out")
    A.check_outside_models(folder, artifacts_dir)
    data = load_data(recipe, on_progress, on_notice)
    arch = network_for(recipe, data)
    t = recipe.train
    result = SW.sweep(
        arch, range(seeds), lrs, steps=t.steps, device=device, min_accuracy=recipe.gate.min_accuracy,
        max_rmse=recipe.gate.max_rmse, data=data, optimizer=t.optimizer, batch_size=t.batch_size,
        on_progress=on_members,
    )  # fmt: skip
    A.ensure_folder(folder)
    A.write_output_bytes(folder / "sweep.json", dumps_bytes(result.as_dict(), indent=1), "--out")
    written = [folder / "sweep.json"]
    notices = []
    if result.device.startswith("cuda"):
        notices.append(SW.CUDA_NOTICE)
    missing = matplotlib_missing()
    if missing:
        stale = folder / "sweep.png"
        if stale.is_file() or stale.is_symlink():
            stale.unlink()  # a picture of an earlier sweep must not sit beside this sweep.json
            missing += f"; removed the old {stale.name}, which showed an earlier sweep"
        notices.append(missing.replace("loss.png", "sweep.png"))
    else:
        A.write_output_bytes(folder / "sweep.png", SW.write_png(result), "--out")
        written.append(folder / "sweep.png")
    published, error = None, None
    if export_best:
        best = result.summary.best
        try:
            if not best.converged:
                raise GateFailed(f"no pair passed the gate (best: seed {best.seed}, lr {best.lr:g}); nothing to export")
            # `recipe` carries the steps and gate already: the best pair's seed and lr are all that change
            run = run_all(recipe, artifacts_dir, overrides=Overrides(seed=best.seed, lr=best.lr), device=device,
                          on_notice=on_notice, on_progress=on_progress)  # fmt: skip
            published = run.models[0].published
        except PipelineError as exc:
            error = exc
    return SweepRun(result, tuple(written), published, tuple(notices), error)


# ---------------------------------------------------------------------------------------------
# init: a starter recipe for a CSV file


def init_recipe(data: Path | str, target: str, out: Path | str | None = None, force: bool = False) -> Starter:
    """`init`: compose a starter recipe for `data` (`spec.starter.make_starter`) and write it to `out`
    (default ./<name>.toml): a file is written whole and renamed into place, and never replaces an
    existing one without `force`; a FIFO or character device is written through. `out` is never the
    data file, a folder or another special file (checked before the data is read)."""
    from .spec.starter import make_starter, starter_path

    data = Path(data)
    to_stdout = out is not None and str(out) == "-"
    name, path = starter_path(data, None if to_stdout or out is None else Path(out))
    kind = A.check_output(Path("-") if to_stdout else path, "--out", [data], "the data file")
    starter = make_starter(data, target, name, path)  # the data's problems first: they matter more than --out
    if kind == A.OUTPUT_FILE and path.exists() and not force:
        raise UsageError(f"{path} already exists; pass --force to overwrite it")
    text = starter.recipe_text.encode("utf-8")  # on stdout, its data path is relative to the current folder
    A.write_output_bytes(Path("-") if to_stdout else path, text, "--out", [data], "the data file")
    return starter


# ---------------------------------------------------------------------------------------------
# predict and serve: the torch-free side, one call each


def predict_job(
    root: Path | str,
    which: str | Recipe | None = None,
    *,
    model: Path | None = None,
    version: int | None = None,
    allow_unverified: bool = False,
    provider: str = "auto",
    pairs: Sequence[str] | None = None,
    input_path: Path | None = None,
    stdin: Any = None,
    output: Path | None = None,
    fmt: str | None = None,
    as_json: bool = False,
    input_format: str | None = None,
    carry: Sequence[str] | str = (),
) -> PredictJob:
    """`predict`: the published (or `version`) version of a model (a built-in's name or a Recipe), or a
    `model` file, its input opened (and validated where the output cannot be taken back), ready to write
    (`PredictJob.write`). `fmt`/`as_json`: the output's format (else by `output`'s extension); `carry`:
    input columns to copy into the output (names, or "*" for all)."""
    from .serving.predict import prepare

    recipe = _recipes(which)[0] if which is not None else None
    return prepare(
        Path(root), name=recipe.name if recipe else None, hint=recipe.selector if recipe else None, model=model,
        version=version, allow_unverified=allow_unverified, provider=provider, pairs=pairs, input_path=input_path,
        stdin=stdin, output=output, fmt=fmt, as_json=as_json, input_format=input_format, carry=carry,
    )  # fmt: skip


def serve_models(
    which: str | Recipe | Sequence[Recipe], root: Path | str, *, on_line: NoticeFn = print, **options: Any
) -> None:
    """`serve`: the published versions of these models over the v2 protocol until SIGTERM / Ctrl-C.
    `options`: `serving.protocol.ServeConfig`'s fields (host, ports, provider, bounds, version, strict...)."""
    from .serving.serve import ServeConfig, serve

    recipes = _recipes(which)
    config = ServeConfig(
        root=Path(root), names=tuple(r.name for r in recipes), hints={r.name: r.selector for r in recipes}, **options
    )
    serve(config, on_line=on_line)


# ---------------------------------------------------------------------------------------------
# tune: a search on Optuna (training.tune), its files, and the best trial through the whole chain

TUNE = "_tune"  # <root>/_tune/<study>/: the embedded journal and tune's files; no recipe has this name
STUDY_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


@dataclass(frozen=True)
class TuneRun:
    """A search with its files written and, with export_best, the best trial published."""

    result: Any  # training.tune.StudyResult
    recipe: Recipe  # the recipe searched
    folder: Path
    written: tuple[Path, ...]
    best_recipe: Path | None  # best.toml
    published: Published | None = None
    published_trial: int | None = None  # the trial published (the best, or the next best that trained)
    export_note: str | None = None  # with export_best: why this process did not export, or what it published
    export_error: PipelineError | None = None
    notices: tuple[str, ...] = ()


def run_tune(
    which: Recipe,
    trials: int,
    *,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    seed: int = 0,
    device: str = "auto",
    artifacts_dir: Path | str = Path("artifacts"),
    export_best: bool = False,
    on_trial: Any = None,
    on_notice: NoticeFn | None = None,
    on_progress: NoticeFn | None = None,
) -> TuneRun:
    """`tune`: search the recipe's [tune] space (`training.tune.run_study`) on its training rows only,
    then write tune.json, best.toml (the recipe with the best trial's values) and Optuna's plots into
    <artifacts_dir>/_tune/<study>/; with export_best, run `all` on best.toml (trained on the training
    rows, gated on the validation rows, verified, published). Trials take no artifacts lock; the export
    does, so with several processes one exports and the others say so (`export_note`)."""
    import re

    from .spec.data import inner_dataset, recipe_columns
    from .training import tune as TU
    from .training.train import DEVICES, resolve_device

    recipe = which
    if recipe.builtin or recipe.data_path is None:
        raise UsageError(
            f"tune searches a recipe's own data; {recipe.name} trains on the 4 XOR points, where there is nothing to"
            " search (write a recipe with `init`)"
        )
    TU.check_trials(trials, timeout)
    if device not in DEVICES:
        raise UsageError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    resolve_device(device)  # --device cuda without a GPU: one line now, not a failed trial
    name = study if study is not None else recipe.name
    if not re.fullmatch(STUDY_NAME_RE, name):
        raise UsageError(f"--study {name!r} must match {STUDY_NAME_RE} (letters, digits, '_', '.', '-'; 64 at most)")
    root = Path(artifacts_dir)
    folder = root / TUNE / name
    A.check_output_folder(folder, "--study folder")
    A.check_outside_models(folder, root, "--study folder")
    _no_links(root, folder)
    if folder.is_dir():  # a file we cannot write there is said before the search, not after it
        for out in (TU.RESULTS, TU.BEST, *TU.PLOTS):
            A.check_output(folder / out, "--study folder")
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed}: must be between 0 and 2**63-1")
    if (recipe.tune or TU.DEFAULT).fixed:
        raise UsageError(
            f"{recipe.where}: every key of [tune] is fixed, so every trial would be the same; give a range or a choice"
        )
    choice = TU.storage_choice(storage, folder)
    TU._optuna()  # a missing optuna is said before the data is read
    cols = recipe_columns(recipe, on_progress, on_notice)
    data = inner_dataset(cols, recipe.data)
    network_for(recipe, data)  # the gate must fit the task, as `all` will require
    if recipe.data.validation_fraction == 0 and on_notice is not None:
        on_notice(
            "validation_fraction is 0: the gate is judged on the training rows, which the search also trains on;"
            " set [data] validation_fraction for a gate the search never sees"
        )
    result = TU.run_study(
        recipe, data, storage=choice, study_name=name, trials=trials, timeout=timeout, seed=seed, device=device,
        on_trial=on_trial, on_notice=on_notice,
    )  # fmt: skip
    written, notices = _write_tune_files(result, recipe, folder)
    for n in notices:
        if on_notice is not None:
            on_notice(n)
    best_path = folder / TU.BEST if result.best is not None else None
    run = TuneRun(result, recipe, folder, tuple(written), best_path, notices=tuple(notices))
    if not export_best:
        return run
    return _export_best(run, root, device, on_notice, on_progress)


def _no_links(root: Path, folder: Path, *names: str) -> None:
    """The study folder is ours, as a model's folder is: nothing in it, nor it or `_tune` itself, may be a
    symbolic link (writing the journal, tune.json or best.toml through one would touch a file elsewhere);
    the artifacts folder itself may be one. IntegrityError (exit 6) names the link."""
    from .errors import IntegrityError
    from .training import tune as TU

    files = names or (TU.JOURNAL, TU.JOURNAL + ".lock", TU.RESULTS, TU.BEST, *TU.PLOTS)
    for path in (root / TUNE, folder, *(folder / n for n in files)):
        if path.is_symlink():
            raise IntegrityError(f"{path} is a symbolic link; refusing to follow it (tune writes its files there)")


def _write_tune_files(result: Any, recipe: Recipe, folder: Path) -> tuple[list[Path], list[str]]:
    from .store.jsonout import dumps_bytes
    from .training import tune as TU

    A.ensure_folder(folder)
    written: list[Path] = []
    best = result.best
    doc = {
        "study": result.study,
        "storage": result.storage.shown,
        "objective": TU.OBJECTIVE,
        "metric": result.metric_name,
        "inner_rows": {"train": result.inner_rows[0], "validation": result.inner_rows[1]},
        "space": result.space.record(),
        "space_written": result.space.written,
        "trials_target": result.target,
        "counted": result.counted,
        "states": result.states(),
        "sampler_seed": result.sampler_seed,
        "process_index": result.process_index,
        "ran_here": list(result.ran_here),
        "search_seconds": round(result.seconds, 3),
        "best": best.as_dict() if best is not None else None,
        "trials": [t.as_dict() for t in result.trials],
    }
    A.write_output_bytes(folder / TU.RESULTS, dumps_bytes(doc, indent=1), "--study folder")
    written.append(folder / TU.RESULTS)
    notices: list[str] = []
    if best is not None:
        text = TU.best_recipe_text(recipe, best, result.study, result.storage)
        A.write_output_bytes(folder / TU.BEST, text.encode("utf-8"), "--study folder")
        written.append(folder / TU.BEST)
    elif (folder / TU.BEST).is_file():  # an earlier study's best must not sit beside this tune.json
        (folder / TU.BEST).unlink()
        notices.append(f"no trial completed: removed the old {TU.BEST}, which was another search's")
    plots, why = TU.write_plots(result, folder)
    written += plots
    notices += why
    return written, notices


def _export_best(run: TuneRun, root: Path, device: str, on_notice: NoticeFn | None, on_progress: Any) -> TuneRun:
    """`all` on best.toml, once per best trial and model across processes and machines: an atomic claim
    in the study's storage decides, and a process that finds the trial published (or being published)
    by another says so and exports nothing. An export that fails (the gate, the artifacts lock held by
    another run) gives the claim back, so that a rerun exports."""
    import dataclasses

    from .errors import GateFailed, TrainingFailed
    from .spec.recipe import load_recipe
    from .training import tune as TU

    result = run.result
    if result.stopped_by == "others":  # the last trials run elsewhere: their results decide the best
        result = TU.wait_for_running(result)
        written, notices = _write_tune_files(result, run.recipe, run.folder)
        run = dataclasses.replace(run, result=result, written=tuple(written), notices=run.notices + tuple(notices))
    best = result.best
    if best is None or run.best_recipe is None:
        return dataclasses.replace(run, export_error=GateFailed("no trial completed; nothing to export"))
    model = run.recipe.name
    claimed = TU.claim_export(result, model, best.number)
    if claimed is not None:
        return dataclasses.replace(run, export_note=claimed)
    # the best trial first; when its settings diverge or miss the gate on the whole training split (other
    # rows, other statistics than the inner split's), the next best, up to EXPORT_TRIES trials
    tried: list[str] = []
    for trial in result.ranked(TU.EXPORT_TRIES):
        path = run.best_recipe if trial.number == best.number else run.folder / f"trial-{trial.number}.toml"
        if trial.number != best.number:
            _no_links(root, run.folder, path.name)
            text = TU.best_recipe_text(run.recipe, trial, result.study, result.storage)
            A.write_output_bytes(path, text.encode("utf-8"), "--study folder")
        try:
            summary = run_all(load_recipe(path), root, device=device, on_notice=on_notice, on_progress=on_progress)
        except (TrainingFailed, GateFailed) as exc:
            why = str(exc).replace("; lower --lr", "")
            tried.append(f"trial {trial.number}: {why}")
            if on_notice is not None:
                on_notice(f"trial {trial.number} did not train on the training rows ({why}); trying the next best")
            continue
        except BaseException as exc:  # the claim is given back, so that a rerun (here or elsewhere) exports
            TU.record_export(result, model, best.number, "failed", str(exc) or exc.__class__.__name__)
            if isinstance(exc, PipelineError):
                return dataclasses.replace(run, export_error=exc)
            raise
        published = summary.models[0].published
        TU.record_export(result, model, best.number, "published", published.number if published else None)
        note = None
        if trial.number != best.number:
            note = f"published trial {trial.number} ({path}), the best that trained: " + "; ".join(tried)
        return dataclasses.replace(run, published=published, published_trial=trial.number, export_note=note)
    TU.record_export(result, model, best.number, "failed", "; ".join(tried))
    first = tried[0] if tried else "no trial completed"
    return dataclasses.replace(
        run,
        export_error=TrainingFailed(
            f"none of the {len(tried)} best trials trained on the training rows and passed the gate; first: {first}"
        ),
    )
