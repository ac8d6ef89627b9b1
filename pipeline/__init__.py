"""Train small PyTorch MLPs, export them to ONNX, and prove the shipped file computes what was trained.

The public API (importing it does not import torch, onnx or onnxruntime):

    from pipeline import load_recipe, run_all
    summary = run_all("shallow", "artifacts", device="cpu")             # a built-in
    summary = run_all(load_recipe("iris.toml"), "artifacts")            # your model and CSV data

Layers, imports pointing down only:
- orchestration: `flow` (run_all and one function per command: lock, clean-up, stages, timings);
- stages: `train`, `validate`, `export`, `verify` (each: explicit inputs -> frozen result);
- uses: `predict` (torch-free inference), `ship` (Triton repository), `serve`, `sweep`, `bench`,
  `starter` (`init`: a starter recipe from a CSV);
- shared: `recipe` (TOML recipes, the built-ins), `data` (CSV reading, split, statistics), `archs` (the
  network a recipe resolves to), `model` (torch module, weights), `contract` (the ONNX signature,
  safe parsing), `onnx_safety` (the external-data walk), `runtimes` (one runner type, provider
  truth), `manifest` (typed records), `artifacts` (files, atomic writes, the lock), `errors`.
"""

from .errors import PipelineError
from .flow import (
    ModelRun,
    Outcome,
    Overrides,
    RunSummary,
    StageTimes,
    export_models,
    publish_models,
    run_all,
    serve_check_models,
    ship_models,
    train_models,
    validate_models,
    verify_models,
)
from .spec.archs import ARCHS, TUTORIAL, Arch, expand, get_arch
from .spec.recipe import Recipe, builtin_recipe, load_recipe
from .store.versions import list_model_versions, resolve_version

__all__ = [
    "ARCHS",
    "TUTORIAL",
    "Arch",
    "ModelRun",
    "Outcome",
    "Overrides",
    "Recipe",
    "builtin_recipe",
    "load_recipe",
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
