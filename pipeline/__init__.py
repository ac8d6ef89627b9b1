"""Train small PyTorch MLPs, export them to ONNX, and prove the shipped file computes what was trained.

The public API (importing it does not import torch, onnx or onnxruntime):

    from pipeline import run_all
    summary = run_all("shallow", "artifacts", device="cpu")

Layers, imports pointing down only:
- orchestration: `flow` (run_all and one function per command: lock, clean-up, stages, timings);
- stages: `train`, `validate`, `export`, `verify` (each: explicit inputs -> frozen result);
- uses: `predict` (torch-free inference), `ship` (Triton repository), `bench`;
- shared: `archs` (which model), `model` (torch module, weights), `contract` (the ONNX signature,
  safe parsing), `onnx_safety` (the external-data walk), `runtimes` (one runner type, provider
  truth), `manifest` (typed records), `artifacts` (files, atomic writes, the lock), `errors`.
"""

from .archs import ARCHS, TUTORIAL, Arch, expand, get_arch
from .errors import PipelineError
from .flow import (
    ModelRun,
    Outcome,
    RunSummary,
    StageTimes,
    export_models,
    list_model_versions,
    publish_models,
    resolve_version,
    run_all,
    serve_check_models,
    ship_models,
    train_models,
    validate_models,
    verify_models,
)

__all__ = [
    "ARCHS",
    "TUTORIAL",
    "Arch",
    "ModelRun",
    "Outcome",
    "list_model_versions",
    "publish_models",
    "resolve_version",
    "PipelineError",
    "RunSummary",
    "StageTimes",
    "expand",
    "export_models",
    "get_arch",
    "run_all",
    "serve_check_models",
    "ship_models",
    "train_models",
    "validate_models",
    "verify_models",
]
