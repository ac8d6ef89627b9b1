"""xorship: train small MLPs, ship them as verified ONNX artifacts.

This file only wires: it turns options into configs, calls the stage functions in `pipeline/`,
prints what they return, and maps the pipeline's error family to exit codes (in `_guard`, the one
place that does). Heavy imports (torch, onnx, onnxruntime) happen inside the stages, so `--help`
stays quick and `predict` never imports torch.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

import pipeline
from pipeline import artifacts as A
from pipeline.archs import ALL, ARCH_CHOICES, TUTORIAL
from pipeline.errors import EXIT_INTERRUPTED, PipelineError, UsageError
from pipeline.runtimes import PROVIDERS
from pipeline.ship import INSTANCE_KINDS
from pipeline.train import DEVICES, TRAINERS
from pipeline.verify import REQUIRE_CHOICES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train the XOR MLPs, export them to ONNX and prove the shipped file computes what was trained.",
)

# Choices come from the library, never written here again.
ArchName = enum.Enum("ArchName", {n: n for n in ARCH_CHOICES}, type=str)  # type: ignore[misc]
DeviceName = enum.Enum("DeviceName", {n: n for n in DEVICES}, type=str)  # type: ignore[misc]
ProviderName = enum.Enum("ProviderName", {n: n for n in PROVIDERS}, type=str)  # type: ignore[misc]
TrainerName = enum.Enum("TrainerName", {n: n for n in TRAINERS}, type=str)  # type: ignore[misc]
InstanceKind = enum.Enum("InstanceKind", {n: n for n in INSTANCE_KINDS}, type=str)  # type: ignore[misc]


def _positive_finite(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(f"must be a finite number > 0, got {value}")
    return value


def _fraction(value: float) -> float:
    if not (0.0 <= value <= 1.0):  # also refuses nan
        raise typer.BadParameter(f"must be between 0 and 1, got {value}")
    return value


def _tolerance(value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise typer.BadParameter(f"must be a finite number >= 0, got {value}")
    return value


# Options, declared once and reused by every command that takes them.
ArchOpt = Annotated[ArchName, typer.Option("--arch", help="Which model: shallow, wide-deep, or all (both, in turn).")]
DirOpt = Annotated[
    Path, typer.Option("--artifacts-dir", help="Folder holding <arch>/model.onnx, weights and manifest.json.")
]
DeviceOpt = Annotated[DeviceName, typer.Option("--device", help="Training device: auto = CUDA when torch sees a GPU.")]
ProviderOpt = Annotated[
    ProviderName,
    typer.Option(
        "--provider", help="onnxruntime provider: auto prefers CUDA when it really runs; cuda fails if it does not."
    ),
]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Training steps (the tutorial: 10001).")]
LrOpt = Annotated[float, typer.Option("--lr", callback=_positive_finite, help="SGD learning rate (> 0).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="torch.manual_seed for the initial weights.")]
MinAccOpt = Annotated[
    float, typer.Option("--min-accuracy", callback=_fraction, help="Accuracy gate on the 4 XOR points (0..1).")
]
TrainerOpt = Annotated[
    TrainerName,
    typer.Option("--trainer", help="auto: CUDA graph on CUDA, fast loop on CPU; tutorial: the tutorial's own loop."),
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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the JSON report instead of the table.")]

DEFAULT_DIR = Path("artifacts")
_state = {"debug": os.environ.get("XORSHIP_DEBUG") == "1"}


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")] = False) -> None:
    _state["debug"] = _state["debug"] or debug


def _guard(fn: Callable) -> Callable:
    """The one place where pipeline errors become a one-line message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: artifacts are as they were before the interrupted step", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
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

    return wrapper


def _echo(msg: str = "") -> None:
    typer.echo(msg)


def _note(msg: str) -> None:
    typer.echo(f"note: {msg}", err=True)


def _progress() -> Callable[[str, int, float], None] | None:
    """Loss lines every 1000 steps while training, when stdout is a terminal."""
    if not sys.stdout.isatty():
        return None

    def on_log(arch: str, step: int, loss: float) -> None:
        if step % 1000 == 0:
            typer.echo(f"  {arch} step {step:>6}  loss {loss:.10f}")

    return on_log


# ---------------------------------------------------------------------------------------------


@app.command()
@_guard
def train(
    arch: ArchOpt = ArchName.shallow,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    device: DeviceOpt = DeviceName.auto,
    steps: StepsOpt = TUTORIAL.steps,
    lr: LrOpt = TUTORIAL.lr,
    seed: SeedOpt = TUTORIAL.seed,
    min_accuracy: MinAccOpt = TUTORIAL.min_accuracy,
    trainer: TrainerOpt = TrainerName.auto,
) -> None:
    """Train, apply the accuracy gate, and save weights, loss history and loss.png (only if it passes)."""
    for t in pipeline.train_models(
        arch.value,
        artifacts_dir,
        steps=steps,
        lr=lr,
        seed=seed,
        device=device.value,
        trainer=trainer.value,
        min_accuracy=min_accuracy,
        on_log=_progress(),
    ):
        for n in t.notices:
            _note(n)
        r = t.result
        _echo(
            f"{r.arch.name}: trained on {r.device} ({r.trainer}) in {r.seconds:.2f}s, "
            f"loss {r.losses[0]:.7f} -> {r.final_loss:.7f}, accuracy {t.validation.accuracy:.2f}, "
            f"saved to {t.paths.folder}"
        )


@app.command()
@_guard
def validate(
    arch: ArchOpt = ArchName.shallow,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    min_accuracy: MinAccOpt = TUTORIAL.min_accuracy,
) -> None:
    """Re-check saved weights against the accuracy gate (train already applies it)."""
    for r in pipeline.validate_models(arch.value, artifacts_dir, min_accuracy=min_accuracy):
        probs = ", ".join(f"{p:.5f}" for p in r.probabilities)
        _echo(f"{r.arch}: accuracy {r.accuracy:.2f} >= {r.min_accuracy:.2f}, XOR probabilities [{probs}]")


@app.command()
@_guard
def export(arch: ArchOpt = ArchName.shallow, artifacts_dir: DirOpt = DEFAULT_DIR) -> None:
    """Export saved weights to <arch>/model.onnx (dynamo exporter, opset 18, symbolic batch) and check it."""
    for r in pipeline.export_models(arch.value, artifacts_dir):
        _echo(
            f"{r.onnx_path.parent.name}: exported {r.onnx_path} (opset {r.opset}, sha256 {r.sha256[:12]}) in {r.seconds:.2f}s"
        )


def _serve_line(name: str, report, providers) -> str:
    worst = report.worst()
    return (
        f"{name}: serve-check passed on {providers.primary} (providers {list(providers.used)}), "
        f"max |torch - onnx| {worst.max_abs:.3g}, labels on XOR [0, 1, 1, 0]"
    )


@app.command("serve-check")
@_guard
def serve_check(
    arch: ArchOpt = ArchName.shallow, artifacts_dir: DirOpt = DEFAULT_DIR, provider: ProviderOpt = ProviderName.auto
) -> None:
    """Run model.onnx in onnxruntime, name the provider that really ran, and compare with torch."""
    for r in pipeline.serve_check_models(arch.value, artifacts_dir, provider=provider.value):
        if r.providers.cuda_note:
            _note(r.providers.cuda_note)
        _echo(_serve_line(r.report.arch, r.report, r.providers))


def _verify_table(report) -> str:
    lines = [f"{report.arch}: reference = {report.reference}"]
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
    lines.append(f"  verdict: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)


@app.command()
@_guard
def verify(
    arch: ArchOpt = ArchName.shallow,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    require: RequireOpt = [],
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare every runtime here with a float64 oracle on seeded input sets; writes <arch>/verify.json."""

    def show(report) -> None:  # shown first, then a failed verdict fails the command
        _echo(json.dumps(report.as_dict(), indent=2) if as_json else _verify_table(report))

    pipeline.verify_models(arch.value, artifacts_dir, require=require, atol=atol, rtol=rtol, on_report=show)


@app.command()
@_guard
def predict(
    pairs: Annotated[list[str] | None, typer.Argument(help="Input rows as x1,x2 pairs, e.g. 0,1 1,1.")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="A .csv (two columns), .npy or .json file; - reads JSON from stdin.")
    ] = None,
    arch: Annotated[
        ArchName | None,
        typer.Option("--arch", help="Serve <artifacts-dir>/<arch>/model.onnx (sha256 checked against the manifest)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Serve this ONNX file (checked against a manifest beside it, if any)."),
    ] = None,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    provider: ProviderOpt = ProviderName.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Per-row probability and label as JSON.")] = False,
) -> None:
    """Inference on a shipped model through onnxruntime only; never imports torch."""
    from pipeline import predict as P

    if (arch is None) == (model is None):
        raise UsageError("give exactly one of --arch or --model")
    if arch is not None and arch.value == ALL:
        raise UsageError("predict serves one model: --arch shallow or --arch wide-deep")
    if bool(pairs) == (input_file is not None):
        raise UsageError(
            "give input rows either as x1,x2 arguments or with --input FILE (or --input - for JSON on stdin)"
        )
    if input_file is not None and str(input_file) == "-":
        x = P.parse_json(sys.stdin.read(), "stdin")
    elif input_file is not None:
        x = P.parse_file(input_file)
    else:
        x = P.parse_pairs(pairs or [])
    served = P.resolve_model(artifacts_dir, arch.value if arch else None, model)
    result = P.predict(served, x, provider.value)
    if result.providers.cuda_note and provider.value != "cpu":
        _note(result.providers.cuda_note)
    if as_json:
        _echo(json.dumps(result.as_dict(), indent=2))
        return
    _echo(f"{'x1':>12} {'x2':>12} {'probability':>12} label   ({result.model}, {result.providers.primary})")
    for (a, b), p, lab in zip(result.rows, result.probabilities, result.labels):
        _echo(f"{a:>12.6g} {b:>12.6g} {p:>12.8f} {lab:>5}")


@app.command("all")
@_guard
def all_(
    arch: ArchOpt = ArchName.shallow,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    device: DeviceOpt = DeviceName.auto,
    provider: ProviderOpt = ProviderName.auto,
    steps: StepsOpt = TUTORIAL.steps,
    lr: LrOpt = TUTORIAL.lr,
    seed: SeedOpt = TUTORIAL.seed,
    min_accuracy: MinAccOpt = TUTORIAL.min_accuracy,
    trainer: TrainerOpt = TrainerName.auto,
    skip_verify: Annotated[
        bool, typer.Option("--skip-verify", help="Stop after serve-check (no cross-runtime report).")
    ] = False,
) -> None:
    """train -> validate -> export -> serve-check -> verify for each arch, then a summary table."""
    summary = pipeline.run_all(
        arch.value,
        artifacts_dir,
        steps=steps,
        lr=lr,
        seed=seed,
        device=device.value,
        trainer=trainer.value,
        min_accuracy=min_accuracy,
        provider=provider.value,
        skip_verify=skip_verify,
        on_log=_progress(),
        on_notice=_note,
    )
    _echo(_summary(summary))


def _summary(summary) -> str:
    head = f"{'arch':<10} {'device':<8} {'steps':>6} {'final loss':>11} {'acc':>4} {'onnx sha256':<12} {'provider':<22} {'max|t-o|':>9} {'verify':<7} time train/export/serve/verify (s)"
    lines = [head]
    for m in summary.models:
        r, t = m.train, m.times
        stage_times = "/".join(
            f"{v:.2f}" if v is not None else "-" for v in (t.train, t.export, t.serve_check, t.verify)
        )
        verdict = "skipped" if m.verify is None else ("pass" if m.verify.passed else "FAIL")
        lines.append(
            f"{m.arch.name:<10} {r.device.split(' ')[0]:<8} {len(r.losses):>6} {r.final_loss:>11.4e} {m.validation.accuracy:>4.2f} "
            f"{m.export.sha256[:12]:<12} {m.providers.primary:<22} {m.max_serve_diff:>9.2e} {verdict:<7} {stage_times}"
        )
    lines.append(f"shipped: {', '.join(str(m.paths.onnx) for m in summary.models)}")
    return "\n".join(lines)


@app.command()
@_guard
def ship(
    out: Annotated[Path, typer.Option("--out", help="Triton model repository folder to create or add a version to.")],
    arch: ArchOpt = ArchName.shallow,
    artifacts_dir: DirOpt = DEFAULT_DIR,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, help="Triton max_batch_size.")] = 1024,
    instance_kind: Annotated[
        InstanceKind, typer.Option("--instance-kind", help="auto (GPU where Triton sees one), gpu or cpu.")
    ] = InstanceKind.auto,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Model instances per device.")] = 1,
) -> None:
    """Build a Triton model repository (and <arch>/MODEL_CARD.md) from verified artifacts only."""
    for r in pipeline.ship_models(
        arch.value,
        artifacts_dir,
        out,
        max_batch_size=max_batch_size,
        instance_kind=instance_kind.value,
        instances=instances,
    ):
        _echo(
            f"{r.card_path.parent.name}: shipped {r.model_name} version {r.version} to {r.model_path.parent.parent}; card {r.card_path}"
        )


@app.command()
@_guard
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="A few seconds' smoke run: fewer steps, rows and repeats.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("bench.json"),
) -> None:
    """Measure in one run: tutorial loop vs our trainer, torch vs onnxruntime inference, stage times, start-up."""
    from pipeline import bench as B

    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):  # checked before a long run
        raise UsageError(
            f"--out {out}: cannot write there (its folder must exist and be writable, and it must not be a folder)"
        )
    report = B.run(B.BenchConfig(quick=quick), Path(__file__).resolve())
    A.write_atomic(out, (json.dumps(report.as_dict(), indent=2) + "\n").encode())
    _echo(B.table(report))
    _echo(f"written: {out}")


if __name__ == "__main__":
    app()
