"""Shared fixtures: both models trained and shipped once per session (CPU, tutorial settings),
and an independent float64 numpy implementation of the MLP as the test oracle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shipped(tmp_path_factory) -> Path:
    """An artifacts folder with both archs trained (10001 steps, CPU), exported, serve-checked and
    verified through the stage functions. Read-only for tests: copy it (`shipped_copy`) to change it."""
    from pipeline import run_all

    root = tmp_path_factory.mktemp("shipped")
    run_all("all", root, device="cpu", provider="cpu")
    return root


@pytest.fixture
def shipped_copy(shipped, tmp_path) -> Path:
    dst = tmp_path / "artifacts"
    shutil.copytree(shipped, dst)
    return dst


def numpy_mlp(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Independent float64 forward pass from the saved weights: (rows, 2) -> (rows,)."""
    h = x.astype(np.float64)
    n = len(weights) // 2
    for i in range(n):
        w = weights[f"{2 * i}.weight"].astype(np.float64)
        b = weights[f"{2 * i}.bias"].astype(np.float64)
        z = h @ w.T + b
        h = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, written differently from torch's
    return h.reshape(-1)


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "weights.safetensors"))


def cli_cmd(*args: str) -> list[str]:
    """The argv that runs the CLI as a user does (for subprocess.Popen when a test signals it)."""
    return [sys.executable, str(ROOT / "cli.py"), *args]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, input: str | None = None, timeout: int = 300):
    """The CLI in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        input=input,
        timeout=timeout,
    )


@dataclass(frozen=True)
class CliResult:
    """What `invoke_cli()` returns: the fields of a finished subprocess that the tests read."""

    returncode: int
    stdout: str
    stderr: str


def invoke_cli(*args: str, input: str | None = None) -> CliResult:
    """The CLI in this process through Typer's CliRunner (no interpreter start): for the many tests of
    option checks and one-line errors. `run_cli` runs it as a user does, in a subprocess, where the
    process itself matters (signals, stdout pipes, start-up, what gets imported)."""
    from typer.testing import CliRunner

    import cli as cli_module

    r = CliRunner().invoke(cli_module.app, list(args), input=input)
    if r.exception is not None and not isinstance(r.exception, SystemExit):  # a traceback, shown as one
        raise r.exception
    return CliResult(r.exit_code, r.stdout, r.stderr)
