"""xorship: train small MLPs, ship them as verified ONNX artifacts.

This file only wires: it turns options into library calls (`pipeline`), prints what they return, and
maps the pipeline's error family to exit codes (in `_guard`, the one place that does). Heavy imports
(torch, onnx, onnxruntime) happen inside the library's stages, so `--help` stays quick and `predict`
never imports torch.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

import pipeline
from pipeline.checks.runtimes import PROVIDERS
from pipeline.checks.verify import REQUIRE_CHOICES
from pipeline.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    PipelineError,
    Terminated,
    UsageError,
    missing_dependency,
    request_stop,
)
from pipeline.flow import Outcome, Overrides, worst_exit_code
from pipeline.serving.protocol import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_REQUEST_MB
from pipeline.serving.serve import (
    MAX_BATCH_WINDOW_US,
    MAX_HEADER_TIMEOUT_S,
    MAX_REQUEST_MB_LIMIT,
    MAX_WORKERS,
    MIN_HEADER_TIMEOUT_S,
    WORKERS_CAP,
)
from pipeline.serving.ship import INSTANCE_KINDS, MAX_BATCH_SIZE, MAX_INSTANCES
from pipeline.spec.archs import ARCH_CHOICES
from pipeline.spec.formats import INPUT_FORMATS, OUTPUT_FORMATS
from pipeline.spec.limits import FLOAT32_MAX
from pipeline.spec.recipe import MAX_STEPS, load_recipe, parse_lrs, recipe_for
from pipeline.store.artifacts import DEFAULT_KEEP
from pipeline.store.jsonout import dumps
from pipeline.training.train import DEVICES, TRAINERS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train small MLPs (the XOR tutorial's built-ins, or your own table with --recipe), export them to ONNX "
    "and prove the shipped file computes what was trained.",
)

# Choices come from the library, never written here again.
ArchName = enum.Enum("ArchName", {n: n for n in ARCH_CHOICES}, type=str)  # type: ignore[misc]
DeviceName = enum.Enum("DeviceName", {n: n for n in DEVICES}, type=str)  # type: ignore[misc]
ProviderName = enum.Enum("ProviderName", {n: n for n in PROVIDERS}, type=str)  # type: ignore[misc]
TrainerName = enum.Enum("TrainerName", {n: n for n in TRAINERS}, type=str)  # type: ignore[misc]
InstanceKind = enum.Enum("InstanceKind", {n: n for n in INSTANCE_KINDS}, type=str)  # type: ignore[misc]
OutputFormat = enum.Enum("OutputFormat", {n: n for n in OUTPUT_FORMATS}, type=str)  # type: ignore[misc]
InputFormat = enum.Enum("InputFormat", {n: n for n in INPUT_FORMATS}, type=str)  # type: ignore[misc]


def _lr(value: float | None) -> float | None:
    if value is None:
        return value
    if not math.isfinite(value) or value <= 0 or value > FLOAT32_MAX:
        raise typer.BadParameter(f"must be a finite number > 0 within float32's range, got {value}")
    return value


def _fraction(value: float | None) -> float | None:
    if value is not None and not (0.0 <= value <= 1.0):  # also refuses nan
        raise typer.BadParameter(f"must be between 0 and 1, got {value}")
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise typer.BadParameter(f"must be a finite number > 0, got {value}")
    return value


def _tolerance(value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise typer.BadParameter(f"must be a finite number >= 0, got {value}")
    return value


# Options, declared once and reused by every command that takes them.
ArchOpt = Annotated[
    ArchName | None,
    typer.Option("--arch", help="A built-in model: shallow, wide-deep, or all (both, in turn). Default: shallow."),
]
RecipeOpt = Annotated[
    Path | None,
    typer.Option("--recipe", help="A recipe file (TOML: your model and data file; see `init`). Instead of --arch."),
]
DirOpt = Annotated[
    Path,
    typer.Option(
        "--artifacts-dir", help="Folder holding <name>/candidate/, <name>/v<N>/ and <name>/PUBLISHED per model."
    ),
]
DeviceOpt = Annotated[DeviceName, typer.Option("--device", help="Training device: auto = CUDA when torch sees a GPU.")]
ProviderOpt = Annotated[
    ProviderName,
    typer.Option(
        "--provider", help="onnxruntime provider: auto prefers CUDA when it really runs; cuda fails if it does not."
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option("--steps", min=1, max=MAX_STEPS, help=f"Training steps, 1..{MAX_STEPS}. Default: the recipe's."),
]
LrOpt = Annotated[
    float | None, typer.Option("--lr", callback=_lr, help="Learning rate (> 0, within float32). Default: the recipe's.")
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed", min=0, max=2**63 - 1, help="Seed of the initial weights (0..2**63-1). Default: the recipe's."
    ),
]
MinAccOpt = Annotated[
    float | None,
    typer.Option(
        "--min-accuracy",
        callback=_fraction,
        help="Classification gate on the validation rows (0..1). Default: the recipe's.",
    ),
]
MaxRmseOpt = Annotated[
    float | None,
    typer.Option(
        "--max-rmse", callback=_positive, help="Regression gate: RMSE on the validation rows, in target units."
    ),
]
TrainerOpt = Annotated[
    TrainerName,
    typer.Option(
        "--trainer",
        help="auto: explicit (CPU; CUDA with Adam or mini-batches) or CUDA graph (CUDA, full-batch SGD); "
        "explicit: autograd's own ATen kernels called without autograd, first step checked against autograd; fast: "
        "autograd.grad (built-ins only); autograd (alias tutorial): modules, loss and torch.optim, the reference. "
        "All give the same bits.",
    ),
]
RequireOpt = Annotated[
    list[str],
    typer.Option(
        "--require",
        help=f"Runtime that must really run ({', '.join(REQUIRE_CHOICES[:-1])}, or cuda for both CUDA ones). Repeatable.",
    ),
]
AtolOpt = Annotated[
    float | None, typer.Option("--atol", callback=_tolerance, help="Override every runtime's absolute tolerance.")
]
RtolOpt = Annotated[
    float | None, typer.Option("--rtol", callback=_tolerance, help="Override every runtime's relative tolerance.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the table.")]
KeepOpt = Annotated[
    int,
    typer.Option("--keep", min=1, max=10_000, help="Versions to keep per model (the published one is never removed)."),
]
VersionOpt = Annotated[
    int | None, typer.Option("--version", min=1, max=999_999_999, help="Use version N instead of the published one.")
]

DEFAULT_DIR = Path("artifacts")
_state = {"debug": os.environ.get("XORSHIP_DEBUG") == "1"}


def _on_sigterm(signum: int, frame: Any) -> None:
    raise request_stop(Terminated())  # recorded too: a library that swallows it still stops at the next stage


def _on_sigint(signum: int, frame: Any) -> None:
    raise request_stop(KeyboardInterrupt())


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")] = False) -> None:
    _state["debug"] = _state["debug"] or debug


def _quiet_stdout() -> None:
    """stdout was closed by the reader (`predict ... | head -1`): end quietly, with nothing left to flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _guard(fn: Callable) -> Callable:
    """The one place where pipeline errors become a one-line message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _on_sigterm), signal.signal(signal.SIGINT, _on_sigint)
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo(
                "interrupted: published versions are untouched; the candidate keeps its last complete files", err=True
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Terminated:
            typer.echo(
                "terminated: published versions are untouched; the candidate keeps its last complete files", err=True
            )
            raise typer.Exit(EXIT_TERMINATED) from None
        except BrokenPipeError:
            _quiet_stdout()
            raise typer.Exit(EXIT_PIPE) from None
        except ModuleNotFoundError as exc:  # a package this install lacks (torch on the runtime install)
            missing = missing_dependency(fn.__name__, exc)
            if missing is None or _state["debug"]:
                raise
            typer.echo(f"error: {missing}", err=True)
            raise typer.Exit(missing.exit_code) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:
            if _state["debug"]:
                raise
            first = (str(exc).splitlines() or [""])[0][:300]
            typer.echo(
                f"internal error: {exc.__class__.__name__}: {first} (run with --debug for the traceback)", err=True
            )
            raise typer.Exit(1) from None
        finally:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])

    return wrapper


EXIT_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that went away


def _echo(msg: str = "") -> None:
    typer.echo(msg)


def _note(msg: str) -> None:
    """A note on stderr, one line: a name from the data with a control character in it is shown escaped."""
    shown = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in msg)
    typer.echo(f"note: {shown}", err=True)


@contextlib.contextmanager
def _json_errors(enabled: bool) -> Iterator[None]:
    """With --json, an error before any output still prints one JSON document (then the usual line)."""
    try:
        yield
    except PipelineError as exc:
        if enabled:
            _echo(dumps({"passed": False, "error": str(exc), "exit_code": exc.exit_code}, indent=2))
        raise


def _finish(outcomes: Sequence[Outcome], show: Callable[[Any], None]) -> None:
    """Every model's result or error line, then the worst exit code."""
    for o in outcomes:
        if o.ok:
            show(o.result)
        else:
            prefix = "" if len(outcomes) == 1 else f"{o.recipe.name}: "
            typer.echo(f"error: {prefix}{o.error}", err=True)
    code = worst_exit_code(outcomes)
    if code:
        raise typer.Exit(code)


@contextlib.contextmanager
def _progress(total: int | None) -> Iterator[Callable[[str, int, float], None] | None]:
    """A progress bar of training steps on stderr when it is a terminal; nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(), console=Console(stderr=True), transient=True,
    ) as progress:  # fmt: skip

        def on_log(arch: str, step: int, loss: float) -> None:
            if arch not in bars:
                bars[arch] = progress.add_task(f"training {arch}", total=total, loss="")
            progress.update(bars[arch], completed=step + 1, loss=f"{loss:.6g}")

        yield on_log


PROGRESS_AFTER_S = 2.0  # predict's progress bar appears once a run has taken this long


@contextlib.contextmanager
def _rows_progress(size: int | None) -> Iterator[Callable[[int, int, int | None], None] | None]:
    """predict's progress on stderr when it is a terminal (nothing when piped), once the run has taken
    PROGRESS_AFTER_S: rows done, rows/s and the time left (from how far into the input it is)."""
    if not sys.stderr.isatty():
        yield None
        return
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.monotonic()
    state: dict[str, Any] = {}
    try:

        def on_progress(rows: int, position: int, total: int | None) -> None:
            elapsed = time.monotonic() - start
            if elapsed < PROGRESS_AFTER_S:
                return
            if "bar" not in state:
                bar = Progress(
                    TextColumn("predicting"), BarColumn(), TextColumn("{task.fields[rows]} rows, {task.fields[rate]}/s"),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                )  # fmt: skip
                bar.start()
                state["bar"], state["task"] = bar, bar.add_task("predict", total=total, rows="0", rate="0")
            state["bar"].update(
                state["task"], completed=position, total=total, rows=f"{rows:,}", rate=f"{rows / elapsed:,.0f}"
            )

        yield on_progress
    finally:
        if "bar" in state:
            state["bar"].stop()


def _status() -> Callable[[str], None] | None:
    """Progress lines (reading a big CSV...) on stderr when it is a terminal; nothing when piped."""
    if not sys.stderr.isatty():
        return None
    return lambda msg: typer.echo(f"  {msg}", err=True)


def _which(arch: Any, recipe: Path | None, default: str = "shallow") -> Any:
    """--arch NAME or --recipe FILE (exactly one; neither: `default`) -> what the library takes."""
    name = arch.value if arch is not None else (default if recipe is None else None)
    if recipe is None and name == "all":
        return name
    return recipe_for(name, recipe)


def _total_steps(which: Any, steps: int | None) -> int | None:
    from pipeline.spec.recipe import Recipe, builtin_recipe

    if steps is not None:
        return steps
    if isinstance(which, Recipe):
        return which.train.steps
    return builtin_recipe("shallow" if which == "all" else which).train.steps


def _metric(v) -> str:
    """accuracy or RMSE, short."""
    return f"acc {v.accuracy:.3f}" if v.accuracy is not None else f"rmse {v.rmse:.4g}"


# ---------------------------------------------------------------------------------------------


@app.command()
@_guard
def train(
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    device: DeviceOpt = DeviceName.auto,
    steps: StepsOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    min_accuracy: MinAccOpt = None,
    max_rmse: MaxRmseOpt = None,
    trainer: TrainerOpt = TrainerName.auto,
) -> None:
    """Train, apply the gate, and save weights, loss history and loss.png into the candidate (only if it passes)."""

    def show(t) -> None:
        for n in t.notices:
            _note(n)
        r = t.result
        _echo(
            f"{r.arch.name}: trained on {r.device} ({r.trainer}) in {r.seconds:.2f}s, "
            f"loss {r.losses[0]:.7f} -> {r.final_loss:.7f}, {t.validation.summary()}, "
            f"saved to {t.paths.folder} (not published: {t.paths.hint('export', 'next')}, then serve-check and verify "
            "the same way)"
        )

    which = _which(arch, recipe)
    overrides = Overrides(steps, lr, seed, min_accuracy, max_rmse)
    with _progress(_total_steps(which, steps)) as on_log:
        outcomes = pipeline.train_models(
            which, artifacts_dir, overrides=overrides, device=device.value, trainer=trainer.value,
            on_log=on_log, on_notice=_note, on_progress=_status(),
        )  # fmt: skip
    _finish(outcomes, show)


@app.command()
@_guard
def validate(
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    min_accuracy: MinAccOpt = None,
    max_rmse: MaxRmseOpt = None,
) -> None:
    """Re-check the candidate's weights against the gate on the validation rows (train already applies it)."""

    def show(r) -> None:
        shown = ""
        if r.probabilities and r.accuracy is not None:
            shown = f", probabilities [{', '.join(f'{p:.5f}' for p in r.probabilities)}]"
        _echo(f"{r.name}: passed: {r.summary()}{shown}")

    overrides = Overrides(min_accuracy=min_accuracy, max_rmse=max_rmse)
    _finish(pipeline.validate_models(_which(arch, recipe), artifacts_dir, overrides=overrides), show)


@app.command()
@_guard
def export(arch: ArchOpt = None, recipe: RecipeOpt = None, artifacts_dir: DirOpt = DEFAULT_DIR) -> None:
    """Export the candidate's weights to model.onnx (dynamo exporter, opset 18, symbolic batch) and check it."""

    def show(r) -> None:
        _echo(
            f"{r.onnx_path.parent.parent.name}: exported {r.onnx_path} (opset {r.opset}, sha256 {r.sha256[:12]}) in {r.seconds:.2f}s"
        )

    _finish(pipeline.export_models(_which(arch, recipe), artifacts_dir), show)


@app.command("serve-check")
@_guard
def serve_check(
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    provider: ProviderOpt = ProviderName.auto,
) -> None:
    """Run the candidate's model.onnx in onnxruntime, name the provider that really ran, and compare with torch."""

    def show(r) -> None:
        if r.providers.cuda_note:
            _note(r.providers.cuda_note)
        worst = r.report.worst()
        _echo(
            f"{r.report.name}: serve-check passed on {r.providers.primary} (providers {list(r.providers.used)}"
            + (f"; {r.providers.placement}" if r.providers.placement else "")
            + "), "
            f"max |torch - onnx| {worst.max_abs:.3g} over {sum(c.rows for c in r.report.comparisons)} rows"
        )

    _finish(pipeline.serve_check_models(_which(arch, recipe), artifacts_dir, provider=provider.value), show)


def _verify_table(report) -> str:
    lines = [f"{report.name}: reference = {report.reference}"]
    lines.append(
        f"  {'runtime':<15} {'input set':<14} {'rows':>6} {'max abs':>9} {'max rel':>9} {'mean abs':>9} {'labels':>7}  ok"
    )
    for c in report.comparisons:
        lines.append(
            f"  {c.runtime:<15} {c.input_set:<14} {c.rows:>6} {c.max_abs:>9.2e} {c.max_rel:>9.2e} "
            f"{c.mean_abs:>9.2e} {c.rows - c.label_disagreements:>7}  {'yes' if c.passed else 'NO'}"
        )
    for k in report.checks:
        lines.append(
            f"  {k.runtime:<15} batch-consistency max {k.batch_consistency_max_abs:.2e}, "
            f"repeatable {'yes' if k.repeatable else 'no'}{'' if k.repeat_required else ' (not required)'}"
        )
    for name, tol in report.tolerances.items():
        lines.append(
            f"  tolerance {name:<15} atol {tol['atol']:.1e} x input scale, rtol {tol['rtol']:.1e}  ({tol['basis']})"
        )
    for name, why in report.skipped.items():
        lines.append(f"  skipped {name}: {why}")
    for name, detail in report.ran.items():
        if "; " in detail:  # where onnxruntime ran the nodes, sets a runtime left out
            lines.append(f"  ran {name}: {detail}")
    if report.encoding is not None:
        lines.append(f"  {report.encoding.line}")
    lines.append(f"  verdict: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)


@app.command()
@_guard
def verify(
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    require: RequireOpt = [],
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    version: VersionOpt = None,
    keep: KeepOpt = DEFAULT_KEEP,
    as_json: JsonOpt = False,
) -> None:
    """Compare every runtime with a float64 oracle; a passing candidate is published as a new version.
    --version N re-checks that version and writes nothing."""
    reports: dict[str, Any] = {}

    def show(report) -> None:  # shown first, then a failed verdict fails the command
        if as_json:
            reports[report.name] = report.as_dict()
        else:
            _echo(_verify_table(report))

    with _json_errors(as_json):
        outcomes = pipeline.verify_models(
            _which(arch, recipe),
            artifacts_dir,
            require=require,
            atol=atol,
            rtol=rtol,
            version=version,
            keep=keep,
            on_report=show,
        )
    if as_json:
        for o in outcomes:
            if o.recipe.name not in reports:
                reports[o.recipe.name] = {"passed": False, "error": str(o.error), "exit_code": o.error.exit_code}
            if o.result is not None and o.result.published is not None:
                reports[o.recipe.name]["published_version"] = o.result.published.number
        doc = reports[outcomes[0].recipe.name] if len(outcomes) == 1 else {
            "models": reports, "passed": all(o.ok for o in outcomes)
        }  # fmt: skip
        _echo(dumps(doc, indent=2))
        code = worst_exit_code(outcomes)
        for o in outcomes:
            if o.error is not None:
                typer.echo(f"error: {'' if len(outcomes) == 1 else o.recipe.name + ': '}{o.error}", err=True)
        if code:
            raise typer.Exit(code)
        return

    def published(v) -> None:
        if v.published is not None:
            p = v.published
            how = "published as new version" if p.new else "already version"
            pruned = f"; removed old versions {list(p.pruned)}" if p.pruned else ""
            _echo(f"{p.name}: {how} {p.number} (PUBLISHED -> {p.number}){pruned}")

    _finish(outcomes, published)


@app.command()
@_guard
def versions(
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    as_json: JsonOpt = False,
) -> None:
    """List each model's versions: number, date, final loss, ONNX sha256, and which one is published."""
    with _json_errors(as_json):
        listing = {
            r.name: pipeline.list_model_versions(artifacts_dir, r.name)
            for r in pipeline.flow.recipes_of(_which(arch, recipe))
        }
    if as_json:
        from dataclasses import asdict

        doc: dict[str, Any] = {name: [asdict(v) for v in vs] for name, vs in listing.items()}
        one = {"versions": next(iter(doc.values()))}
        _echo(dumps(one if len(doc) == 1 else {"models": doc, "passed": True}, indent=2))
        return
    for name, vs in listing.items():
        if not vs:
            _echo(f"{name}: no versions in {artifacts_dir}")
            continue
        _echo(f"{name}:")
        _echo(f"  {'version':>7} {'created':<20} {'final loss':>11} {'onnx sha256':<16} published")
        for v in vs:
            loss = f"{v.final_loss:.4e}" if v.final_loss is not None else "?"
            _echo(
                f"  {v.number:>7} {v.created or '?':<20} {loss:>11} {(v.onnx_sha256 or '?')[:16]:<16} "
                f"{'*' if v.published else ''}{'' if v.verified else f' (does not verify: {v.problem})'}"
            )


@app.command()
@_guard
def publish(
    version: Annotated[int, typer.Option("--version", min=1, max=999_999_999, help="The version to publish.")],
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
) -> None:
    """Publish an existing version again (a rollback), after checking every file of it."""

    def show(p) -> None:
        _echo(f"{p.name}: PUBLISHED -> {p.number}")

    _finish(pipeline.publish_models(_which(arch, recipe), artifacts_dir, version=version), show)


@app.command(context_settings={"ignore_unknown_options": True})  # -1,0 is a row, not an option
@_guard
def predict(
    pairs: Annotated[
        list[str] | None, typer.Argument(help="Input rows as comma-separated feature values, e.g. 0,1 1,1.")
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="A file of rows: .csv (a header is matched to the features by name; without one, the columns are "
            "the features in order), .parquet, .jsonl (one object per line), .json or .npy; - reads stdin (a JSON "
            "document or JSON Lines, or what --input-format says).",
        ),
    ] = None,
    arch: Annotated[
        ArchName | None, typer.Option("--arch", help="Serve this built-in's published version from --artifacts-dir.")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option("--recipe", help="Serve the published version of this recipe's model.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Serve this ONNX file (checked against the manifest beside it).")
    ] = None,
    version: VersionOpt = None,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Serve a model with no passing verify record (or no manifest).")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="Write to this file, in the format its extension names (.csv, .csv.gz, .parquet, .jsonl, .json): "
            "whole, then renamed into place; a FIFO, device or link is written through. Default: stdout.",
        ),
    ] = None,
    fmt: Annotated[
        OutputFormat | None,
        typer.Option("--format", help="The output's format, whatever --output's extension (table: for a terminal)."),
    ] = None,
    input_format: Annotated[
        InputFormat | None,
        typer.Option("--input-format", help="Read --input as this format, whatever its extension."),
    ] = None,
    carry: Annotated[
        list[str] | None,
        typer.Option(
            "--carry",
            metavar="COL[,COL...]",
            help="Copy these input columns (an id, say) into the output beside the predictions.",
        ),
    ] = None,
    carry_all: Annotated[bool, typer.Option("--carry-all", help="Copy every input column into the output.")] = False,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    provider: ProviderOpt = ProviderName.auto,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="The JSON document (per row label and probability / probabilities / value): --format json."
        ),
    ] = False,
) -> None:
    """Score rows with a published model through onnxruntime only (never imports torch): input streamed in
    bounded memory, output a data file by --output's extension, or a table on a terminal."""
    if sum(v is not None for v in (arch, recipe, model)) != 1:
        raise UsageError("give exactly one of --arch, --recipe or --model")
    if arch is not None and arch.value == "all":
        raise UsageError("predict serves one model: --arch shallow or --arch wide-deep")
    if bool(pairs) == (input_file is not None):
        raise UsageError(
            "give input rows either as arguments (comma-separated feature values) or with --input FILE (or --input - for JSON on stdin)"
        )
    if carry and carry_all:
        raise UsageError("give --carry COLUMNS or --carry-all, not both")
    carried: list[str] | str = (
        "*" if carry_all else [c.strip() for item in carry or [] for c in item.split(",") if c.strip()]
    )
    which = arch.value if arch is not None else load_recipe(recipe) if recipe is not None else None
    with _json_errors(as_json or (fmt is not None and fmt.value == "json" and output is None)):
        job = pipeline.flow.predict_job(
            artifacts_dir, which, model=model, version=version, allow_unverified=allow_unverified,
            provider=provider.value, pairs=pairs, input_path=input_file, stdin=sys.stdin.buffer, output=output,
            fmt=fmt.value if fmt is not None else None, as_json=as_json,
            input_format=input_format.value if input_format is not None else None, carry=carried,
        )  # fmt: skip
    for note in job.notes:
        _note(note)
    with _rows_progress(job.source.size) as on_progress:
        job.write(on_progress=on_progress)


@app.command("all")
@_guard
def all_(
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    device: DeviceOpt = DeviceName.auto,
    provider: ProviderOpt = ProviderName.auto,
    steps: StepsOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    min_accuracy: MinAccOpt = None,
    max_rmse: MaxRmseOpt = None,
    trainer: TrainerOpt = TrainerName.auto,
    keep: KeepOpt = DEFAULT_KEEP,
    skip_verify: Annotated[
        bool, typer.Option("--skip-verify", help="Stop after serve-check: the candidate is left unpublished.")
    ] = False,
) -> None:
    """train -> validate -> export -> serve-check -> verify -> publish for each model, then a summary table."""
    which = _which(arch, recipe)
    with _progress(_total_steps(which, steps)) as on_log:
        summary = pipeline.run_all(
            which, artifacts_dir, overrides=Overrides(steps, lr, seed, min_accuracy, max_rmse), device=device.value,
            trainer=trainer.value, provider=provider.value, skip_verify=skip_verify, keep=keep, keep_going=True,
            on_log=on_log, on_notice=_note, on_progress=_status(),
        )  # fmt: skip
    if summary.models:
        _echo(_summary(summary))
    for o in summary.failures:
        prefix = "" if not summary.models and len(summary.failures) == 1 else f"{o.recipe.name}: "
        typer.echo(f"error: {prefix}{o.error}", err=True)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _summary(summary) -> str:
    head = (
        f"{'model':<10} {'device':<8} {'steps':>6} {'final loss':>11} {'gate metric':<12} {'onnx sha256':<12} "
        f"{'provider':<22} {'max|t-o|':>9} {'verify':<7} {'version':<9} time train/export/serve/verify (s)"
    )
    lines = [head]
    for m in summary.models:
        r, t = m.train, m.times
        stage_times = "/".join(
            f"{v:.2f}" if v is not None else "-" for v in (t.train, t.export, t.serve_check, t.verify)
        )
        verdict = "skipped" if m.verify is None else ("pass" if m.verify.passed else "FAIL")
        version = f"v{m.published.number}" if m.published else "none"
        lines.append(
            f"{m.arch.name:<10} {r.device.split(' ')[0]:<8} {len(r.losses):>6} {r.final_loss:>11.4e} "
            f"{_metric(m.validation):<12} {m.export.sha256[:12]:<12} {m.providers.label:<22} "
            f"{m.max_serve_diff:>9.2e} {verdict:<7} {version:<9} {stage_times}"
        )
    for m in summary.models:
        if m.published:
            lines.append(
                f"published: {m.arch.name} version {m.published.number} ({m.paths.model_root / ('v' + str(m.published.number))})"
            )
        else:
            lines.append(f"not published: {m.arch.name} (--skip-verify); the candidate is in {m.paths.folder}")
    return "\n".join(lines)


@app.command()
@_guard
def ship(
    out: Annotated[Path, typer.Option("--out", help="Triton model repository folder to create or add a version to.")],
    arch: ArchOpt = None,
    recipe: RecipeOpt = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    version: VersionOpt = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, max=MAX_BATCH_SIZE, help="Triton max_batch_size.")
    ] = 1024,
    instance_kind: Annotated[
        InstanceKind, typer.Option("--instance-kind", help="auto (GPU where Triton sees one), gpu or cpu.")
    ] = InstanceKind.auto,
    instances: Annotated[
        int, typer.Option("--instances", min=1, max=MAX_INSTANCES, help="Model instances per device.")
    ] = 1,
) -> None:
    """Copy the published (or --version N) verified version into a Triton model repository as version N."""

    def show(r) -> None:
        what = "already there (same sha256)" if r.noop else "shipped"
        _echo(f"{r.model_name}: version {r.version} {what} in {r.repository}; config pins version {r.version}")
        for line in r.notes:
            _note(f"{r.model_name}: {line}")

    _finish(
        pipeline.ship_models(
            _which(arch, recipe), artifacts_dir, out, version=version, max_batch_size=max_batch_size,
            instance_kind=instance_kind.value, instances=instances,
        ),
        show,
    )  # fmt: skip


@app.command()
@_guard
def serve(
    arch: ArchOpt = None,
    recipe: Annotated[
        list[Path] | None,
        typer.Option(
            "--recipe", help="A recipe file whose model to serve; repeat it to serve several. Instead of --arch."
        ),
    ] = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    host: Annotated[str, typer.Option("--host", help="Address both servers (HTTP and gRPC) listen on.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", min=1, max=65535, help="REST (v2 protocol) port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", min=1, max=65535, help="gRPC (v2 protocol) port.")] = 8001,
    provider: ProviderOpt = ProviderName.auto,
    max_batch_size: Annotated[
        int,
        typer.Option(
            "--max-batch-size",
            min=1,
            max=MAX_BATCH_SIZE,
            help="Most rows one request may send, and one batched onnxruntime call may run.",
        ),
    ] = 1024,
    max_request_mb: Annotated[
        int,
        typer.Option(
            "--max-request-mb",
            min=1,
            max=MAX_REQUEST_MB_LIMIT,
            help="Largest request body (REST) or message (gRPC), in MiB; a larger one is refused before it is read.",
        ),
    ] = DEFAULT_MAX_REQUEST_MB,
    version: VersionOpt = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Refuse to start unless every named model has a published version (default: skip those)."
        ),
    ] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="One line per request on stdout.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=MAX_WORKERS,
            help=f"Worker processes, each serving REST and gRPC on the same ports with its own sessions. Default: "
            f"the cores this process may use, at most {WORKERS_CAP} (one Python process runs on one core at a "
            f"time; past {WORKERS_CAP} the request path is rarely the limit, and each worker holds every "
            "model in memory).",
            show_default=False,
        ),
    ] = None,
    batch_window_us: Annotated[
        int,
        typer.Option(
            "--batch-window-us",
            min=0,
            max=MAX_BATCH_WINDOW_US,
            help="Server-side batching: requests for the same model version arriving within this many "
            "microseconds run as one onnxruntime call of at most --max-batch-size rows (answers within verify's "
            "batch-consistency tolerance; a full queue answers 503). 0: off, each request runs alone and answers "
            "are predict's bit for bit. It pays under many concurrent small requests on a heavier model; "
            "docs/serving.md has the measurements.",
        ),
    ] = 0,
    header_timeout_s: Annotated[
        float,
        typer.Option(
            "--header-timeout-s",
            min=MIN_HEADER_TIMEOUT_S,
            max=MAX_HEADER_TIMEOUT_S,
            help="A REST request's line and headers must arrive within this many seconds of its first byte (or "
            "of the connection): else 408 and the connection closed, so clients that send a byte now and then "
            "cannot hold connections.",
        ),
    ] = DEFAULT_HEADER_TIMEOUT_S,
) -> None:
    """Serve the published verified versions over the v2 inference protocol (REST and gRPC), as Triton
    would; a new publication is picked up without a restart. Models with nothing published yet are
    skipped (named) and picked up once published. SIGTERM or Ctrl-C stops (exit 0). Needs .[serve]."""

    def line(msg: str) -> None:
        typer.echo(msg, err=msg.startswith(("warning:", "client error:", "error:")))
        sys.stdout.flush()

    if arch is not None and recipe:
        raise UsageError("give --arch or --recipe, not both")
    which = [load_recipe(r) for r in recipe] if recipe else _which(arch, None, default="all")
    pipeline.flow.serve_models(
        which, artifacts_dir, on_line=line, host=host, http_port=http_port,
        grpc_port=grpc_port, provider=provider.value, max_batch_size=max_batch_size, version=version,
        max_request_mb=max_request_mb, strict=strict, access_log=access_log,
        workers=workers or 0, batch_window_us=batch_window_us,  # 0: serve's default (the cores, capped)
        header_timeout_s=header_timeout_s,
    )  # fmt: skip


@app.command()
@_guard
def init(
    data: Annotated[
        Path,
        typer.Option("--data", help="Your data: a CSV with a header row, Parquet, JSON Lines or JSON row objects."),
    ],
    target: Annotated[str, typer.Option("--target", help="The column to predict.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the recipe (default: <name>.toml here; - for stdout)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Write a starter recipe for a data file: features, task and classes read from it, defaults that train well."""
    st = pipeline.flow.init_recipe(data, target, out, force)
    what = f"classes {', '.join(map(str, st.classes))}" if st.classes else f"target {target}"
    if out is not None and str(out) == "-":  # the recipe went to stdout: the rest is said on stderr
        _note(f"wrote the recipe to stdout: {st.name}, {st.task} on {len(st.features)} features ({what})")
        return
    _echo(f"wrote {st.path}: {st.name}, {st.task} on {len(st.features)} features ({what})")
    for line in st.notes:
        _note(line)
    _echo(f"next: python cli.py all --recipe {st.path}")


@app.command()
@_guard
def recipes(
    show: Annotated[str | None, typer.Option("--show", help="Print this built-in recipe's TOML.")] = None,
) -> None:
    """List the built-in recipes (the XOR tutorial's models); --show NAME prints one."""
    from pipeline.spec.recipe import BUILTIN_NAMES, builtin_recipe, builtin_text

    if show is not None:
        _echo(builtin_text(show).rstrip("\n"))
        return
    for name in BUILTIN_NAMES:
        r = builtin_recipe(name)
        hidden = "-".join(map(str, r.model.hidden))
        _echo(
            f"{name:<10} {r.data.builtin or r.data.path} hidden {hidden} {r.model.activation}, {r.train.optimizer} lr {r.train.lr:g}, "
            f"{r.train.steps} steps, seed {r.train.seed}, serving name {r.serving}"
        )


@contextlib.contextmanager
def _member_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar of a sweep's member-steps on stderr when it is a terminal; nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as progress:  # fmt: skip
        bar = progress.add_task(label, total=None)

        def on_members(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        yield on_members


@app.command()
@_guard
def sweep(
    arch: Annotated[
        str | None, typer.Option("--arch", help="A built-in model: shallow (default) or wide-deep.")
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", help="A recipe file instead: its data, model, optimizer, batch size and gate."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Train seeds 0..N-1 (N: 1..1,000,000).")] = 100,
    lrs: Annotated[
        str | None,
        typer.Option("--lrs", help="Comma-separated learning rates, each > 0, e.g. 0.5,1,2. Default: the recipe's lr."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help=f"Training steps, 1..{MAX_STEPS}. Default: the recipe's.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when torch sees a GPU), cpu or cuda.")] = "auto",
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy", help="Classification gate (0..1) on the validation rows. Default: the recipe's."
        ),
    ] = None,
    max_rmse: MaxRmseOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for sweep.json and sweep.png (default: ARTIFACTS/_sweeps/<recipe name>; "
            "not inside a model's artifacts).",
        ),
    ] = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    export_best: Annotated[
        bool,
        typer.Option(
            "--export-best",
            help="Train the best pair through `all` and publish it as a version. If nothing converged (or "
            "the export fails), the sweep is still reported and written, then the error (exit 8 for the gate).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train many seeds (and learning rates) of a model at once as one batched program: how often does it
    get stuck, and which pair is best?"""
    from pipeline.training.sweep import table as sweep_table

    with _json_errors(as_json):
        chosen = recipe_for(arch, recipe)
        with _member_progress(f"sweeping {chosen.name}") as on_members:
            run = pipeline.flow.run_sweep(
                chosen, seeds, parse_lrs(lrs) if lrs is not None else None, steps=steps, device=device,
                min_accuracy=min_accuracy, max_rmse=max_rmse, out=out, artifacts_dir=artifacts_dir,
                export_best=export_best, on_notice=_note, on_progress=_status(), on_members=on_members,
            )  # fmt: skip
    for n in run.notices:
        _note(n)
    published, best, result, error = run.published, run.result.summary.best, run.result, run.export_error
    if as_json:
        doc = result.as_dict()
        doc["written"] = [str(p) for p in run.written]
        if export_best:
            doc["published_version"] = published.number if published is not None else None
        if error is not None:  # one document: the sweep's results and why nothing was published
            doc["error"] = str(error)
            doc["exit_code"] = getattr(error, "exit_code", 1)
        _echo(dumps(doc, indent=1))
    else:
        _echo(sweep_table(result))
        _echo(f"written: {', '.join(str(p) for p in run.written)}")
        if published is not None:
            _echo(
                f"published: {chosen.name} version {published.number} (seed {best.seed}, lr {best.lr:g}, "
                f"{result.steps} steps)"
            )
    if error is not None:
        raise error


@app.command()
@_guard
def tune(
    recipe: Annotated[
        Path,
        typer.Option("--recipe", help="The recipe to search: its data, gate and [tune] space (or the default space)."),
    ],
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            help="The study's total of finished trials, across processes and resumes (two processes with 50 end with "
            "50; a rerun after a kill tops up to 50). Interrupted trials do not count.",
        ),
    ] = 50,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Stop asking for trials after this many seconds.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="A database URL Optuna takes (sqlite:///tune.db, postgresql://user:pw@host/db) shared by processes "
            "on one or many machines. Default: a journal file in ARTIFACTS/_tune/<study>/, safe for several processes.",
        ),
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="The study's name (default: the recipe's name).")] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Seeds this process's sampler, mixed with its number among the study's processes (the same --seed on a fresh study proposes the same trials).",
        ),
    ] = 0,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when torch sees a GPU), cpu or cuda.")] = "auto",
    artifacts_dir: DirOpt = DEFAULT_DIR,
    export_best: Annotated[
        bool,
        typer.Option(
            "--export-best",
            help="Run `all` on the best trial's recipe (trained on the training rows, gated on the validation rows, "
            "verified, published). With several processes, one exports and the others say so.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search network shapes and training settings on Optuna: trials train on the training rows only and are
    judged on an inner validation split, so the gate's rows stay unseen; writes best.toml and tune.json."""
    from pipeline.errors import Terminated
    from pipeline.training.tune import progress_table
    from pipeline.training.tune import table as tune_table

    on_trial = None
    if sys.stderr.isatty() and not as_json:

        def on_trial(t: Any, counted: int, of: int, best: Any) -> None:
            typer.echo(f"  {progress_table(t, counted, of, best)}", err=True)

    with _json_errors(as_json):
        chosen = load_recipe(recipe)
        name = study or chosen.name
        try:
            run = pipeline.flow.run_tune(
                chosen, trials, timeout=timeout, storage=storage, study=study, seed=seed, device=device,
                artifacts_dir=artifacts_dir, export_best=export_best, on_trial=on_trial, on_notice=_note,
                on_progress=_status(),
            )  # fmt: skip
        except (KeyboardInterrupt, Terminated) as exc:
            how = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
            code = EXIT_INTERRUPTED if how == "interrupted" else EXIT_TERMINATED
            line = (
                f"{how}: a trial running here is recorded as failed (interrupted); run the same command again to "
                f"resume study {name!r}"
            )
            if as_json:
                _echo(dumps({"passed": False, "error": line, "exit_code": code}, indent=2))
            typer.echo(line, err=True)
            raise typer.Exit(code) from None
    result, error = run.result, run.export_error
    if as_json:
        doc = {
            "study": result.study,
            "storage": result.storage.shown,
            "counted": result.counted,
            "trials_target": result.target,
            "states": result.states(),
            "ran_here": list(result.ran_here),
            "best": result.best.as_dict() if result.best is not None else None,
            "best_recipe": str(run.best_recipe) if run.best_recipe else None,
            "written": [str(p) for p in run.written],
        }
        if export_best:
            doc["published_version"] = run.published.number if run.published is not None else None
            doc["published_trial"] = run.published_trial
            doc["export_note"] = run.export_note
        if error is not None:
            doc["error"] = str(error)
            doc["exit_code"] = getattr(error, "exit_code", 1)
        _echo(dumps(doc, indent=1))
    else:
        _echo(tune_table(result))
        _echo(f"written: {', '.join(str(p) for p in run.written)}")
        if run.best_recipe is not None:
            _echo(f"best recipe: {run.best_recipe} (`python cli.py all --recipe {run.best_recipe}` trains it)")
        if run.published is not None:
            _echo(f"published: {chosen.name} version {run.published.number} (trial {run.published_trial})")
    if run.export_note is not None:
        _note(run.export_note)
    if error is not None:
        raise error


@app.command()
@_guard
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="A few seconds' smoke run: fewer steps, rows and repeats.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench.json"),
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Only `serve` under load on loopback, against minimal REST (Starlette) and gRPC (grpcio) "
            "endpoints, with hey and h2load (needs .[serve], starlette, and the Debian packages hey, nghttp2-client).",
        ),
    ] = False,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe", help="Only this recipe's data: load, training rows/s, torch vs onnxruntime vs scikit-learn."
        ),
    ] = None,
    scoring: Annotated[
        bool,
        typer.Option(
            "--scoring",
            help="Only batch scoring: predict on a 32-feature file (CSV, Parquet, JSON Lines in; every format out) "
            "against a pyarrow + onnxruntime script and scikit-learn: rows/s, peak memory, where the time goes.",
        ),
    ] = False,
    rows: Annotated[
        int | None,
        typer.Option("--rows", min=1000, max=100_000_000, help="--scoring: rows in the file (default 1,000,000)."),
    ] = None,
    tabular: Annotated[
        bool,
        typer.Option(
            "--tabular",
            help="Only real tables as they come (penguins, cars, seattle-weather, from their pip packages): "
            "init + all + predict against a scikit-learn + skl2onnx script, on 5 held-out splits: metric, rows and "
            "columns used, training time, inference rows/s, what the user wrote.",
        ),
    ] = False,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Only `tune` (default space) against Optuna driving scikit-learn's MLP over the same space, on "
            "penguins, cars and seattle-weather (--quick: penguins): held-out metric of init's recipe, the tuned "
            "model and the peer's, trials per minute both ways.",
        ),
    ] = False,
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, max=10_000, help="--tune: trials per side (default 30; 4 with --quick)."),
    ] = None,
) -> None:
    """Measure in one run: tutorial loop vs our trainer, torch vs onnxruntime inference, stage times, start-up.
    --serve: instead, `serve` against minimal endpoints: req/s, p50, p99, server CPU per request at 1, 16, 64
    clients, workers, a model with text columns, batching.
    --scoring: instead, batch scoring a file against a pyarrow + onnxruntime script and scikit-learn.
    --tabular: instead, raw tables (missing values, text, dates) against the scikit-learn peer.
    --tune: instead, `tune` against Optuna + scikit-learn: held-out metrics and trials per minute."""
    from pipeline.bench.bench import run_command

    if sum((serve, recipe is not None, scoring, tabular, tune)) > 1:
        raise UsageError("give one of --serve, --recipe, --scoring, --tabular or --tune")
    if rows is not None and not scoring:
        raise UsageError("--rows goes with --scoring")
    if trials is not None and not tune:
        raise UsageError("--trials goes with --tune")
    ran = run_command(
        Path(__file__).resolve(), out, quick=quick, serve=serve, recipe=recipe, scoring=scoring, rows=rows,
        tabular=tabular, tune=tune, trials=trials,
    )  # fmt: skip
    _echo(ran.table)
    for n in ran.notes:
        _echo(f"note: {n}")
    _echo(f"written: {out}")


if __name__ == "__main__":
    app()
