"""Train small PyTorch MLPs, export them to ONNX, and prove the shipped file computes what was trained.

The public API (importing it does not import torch, onnx or onnxruntime):

    from pipeline import load_recipe, run_all
    summary = run_all("shallow", "artifacts", device="cpu")             # a built-in
    summary = run_all(load_recipe("iris.toml"), "artifacts")            # your model and CSV data

Layers as folders, lowest first, imports pointing down only (README, "Code layout"): `errors`;
`spec` (recipes, networks, data); `store` (artifacts, manifest, versions, model card); `training`
(torch: model, kernels, train, validate, sweep, plot); `graph` (export, the ONNX contract and safety
walk); `checks` (runtimes, serve-check and verify); `serving` (torch-free: predict, ship, serve);
`flow` (run_all and one function per command); `bench`.
"""

import os as _os
import sys as _sys

# pyarrow's allocator, chosen before anything here imports pyarrow (it reads this once, at its import):
# jemalloc, whose memory stays flat while a big file streams, where mimalloc's per-thread caches grew
# by 50 MB over a 1M-row Parquet file at the same speed (docs/performance.md). A user's own setting wins.
if _sys.platform == "linux":
    _os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

from .errors import PipelineError  # noqa: E402
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
