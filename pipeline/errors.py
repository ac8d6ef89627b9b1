"""The pipeline's one exception family. Only `cli.py` turns these into messages and exit codes.

Each class carries its exit code; the README's table is written from this file.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose. The message is one line for the user."""

    exit_code = 1


class UsageError(PipelineError):
    """Bad option values or bad input data (predict)."""

    exit_code = 2


class DeviceUnavailable(PipelineError):
    """CUDA was asked for (torch device or onnxruntime provider) but cannot really run."""

    exit_code = 3


class MissingArtifact(PipelineError):
    """A stage needs an artifact an earlier stage has not produced (or the manifest is absent)."""

    exit_code = 4


class CorruptArtifact(PipelineError):
    """An artifact exists but cannot be read: bad JSON, not ONNX, wrong shape, other arch."""

    exit_code = 5


class IntegrityError(PipelineError):
    """An artifact differs from what the manifest recorded, or points outside its folder."""

    exit_code = 6


class TrainingFailed(PipelineError):
    """Training diverged (non-finite or exploding loss)."""

    exit_code = 7


class GateFailed(PipelineError):
    """The trained model missed the accuracy gate: it is not saved and not exported."""

    exit_code = 8


class ExportFailed(PipelineError):
    """torch.onnx.export failed or its output did not pass the post-export checks."""

    exit_code = 9


class EquivalenceFailed(PipelineError):
    """serve-check or verify found outputs outside tolerance, or a required runtime did not run."""

    exit_code = 10


class ArtifactWriteError(PipelineError):
    """The artifacts folder cannot be written (permissions, disk full); earlier artifacts are untouched."""

    exit_code = 11


class FolderLocked(PipelineError):
    """Another run holds the artifacts folder's lock."""

    exit_code = 12


class MissingDependency(PipelineError):
    """The command needs a package this install does not have: torch on a scoring host's runtime install
    (`runtime/`), for one. The message says what to install."""

    exit_code = 13


# What to install for a missing top-level module, as `missing_dependency` says it.
_FULL_INSTALL = (
    "the runtime install (xorship-runtime) scores, ships and serves only; install the full one from the"
    " repository: pip install -e . (on a machine without a GPU, first pip install torch --index-url"
    " https://download.pytorch.org/whl/cpu, the CPU-only build)"
)
_NEEDS = {
    "torch": "torch (training and export)",
    "onnxscript": "onnxscript (torch's ONNX exporter)",
    "safetensors": "safetensors (trained weights)",
}


def missing_dependency(command: str, exc: ModuleNotFoundError) -> MissingDependency | None:
    """The one-line error for `command` (its function's name: `all_` is `all`) failing to import a package
    this install lacks (None: a module that is not one of ours to name)."""
    command = command.rstrip("_").replace("_", "-")
    name = (exc.name or "").split(".")[0]
    if name in _NEEDS:
        return MissingDependency(f"`{command}` needs {_NEEDS[name]}, which is not installed: {_FULL_INSTALL}")
    if name in ("sklearn", "matplotlib", "pandas"):
        package = {"sklearn": "scikit-learn"}.get(name, name)
        return MissingDependency(f"`{command}` needs {package}, which is not installed: pip install {package}")
    return None


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that clean-up (`finally`, temporaries) runs."""


_stop_requested: list[BaseException] = []


def request_stop(exc: BaseException) -> BaseException:
    """Record that the user asked to stop (a signal handler calls this before raising `exc`): if a
    library swallows the exception, `raise_if_stopped` still stops at the next stage boundary."""
    _stop_requested.append(exc)
    return exc


def raise_if_stopped() -> None:
    if _stop_requested:
        raise _stop_requested[0].__class__()


def stop_exception_in(exc: BaseException) -> BaseException | None:
    """A KeyboardInterrupt or Terminated that `exc` wraps (some libraries catch and re-wrap it)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, (KeyboardInterrupt, Terminated)):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_TERMINATED = 143  # SIGTERM, likewise

ALL_ERRORS: tuple[type[PipelineError], ...] = (
    UsageError,
    DeviceUnavailable,
    MissingArtifact,
    CorruptArtifact,
    IntegrityError,
    TrainingFailed,
    GateFailed,
    ExportFailed,
    EquivalenceFailed,
    ArtifactWriteError,
    FolderLocked,
    MissingDependency,
)
