"""The torch side of a model: build it, seed it as the tutorial does, save and load its weights.

Shared by the stages (train, validate, export, verify) and by `bench`; imports torch only inside
functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .archs import ARCHS, XOR_X, XOR_Y, Arch
from .errors import CorruptArtifact

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .artifacts import ArtifactPaths
    from .manifest import Manifest


def build_model(arch: Arch) -> torch.nn.Sequential:
    """Fresh, randomly initialised model on the CPU, drawing from torch's global generator."""
    import torch

    layers: list[torch.nn.Module] = []
    for i, o in zip(arch.widths[:-1], arch.widths[1:]):
        layers += [torch.nn.Linear(i, o, bias=True), torch.nn.Sigmoid()]
    return torch.nn.Sequential(*layers)


def init_model(arch: Arch, seed: int, tutorial_order: bool = True) -> torch.nn.Sequential:
    """Seeded model whose initial weights match the tutorial's (layers are made on the CPU, so the
    weights do not depend on the training device)."""
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if tutorial_order:
        for name in arch.tutorial_predecessors:
            build_model(ARCHS[name])  # consume the random stream as the tutorial does
    return build_model(arch)


def xor_tensors(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """(X, Y): (4, 2) and (4, 1) float tensors."""
    import torch

    dtype = dtype or torch.float32
    x = torch.tensor(XOR_X, dtype=dtype, device=device)
    y = torch.tensor([[float(v)] for v in XOR_Y], dtype=dtype, device=device)
    return x, y


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """{name: float32 ndarray}, contiguous, on the CPU."""
    return {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}


def weights_bytes(model: torch.nn.Module, arch: Arch) -> bytes:
    """The safetensors file for `model` (no pickle: loading it runs no code)."""
    from safetensors.numpy import save

    return save(state_dict_numpy(model), metadata={"arch": arch.name})


def load_model(arch: Arch, weights: bytes, where: str = "weights") -> torch.nn.Sequential:
    """Rebuild the model from safetensors bytes (already hash-checked by the caller)."""
    from safetensors.torch import load

    try:
        tensors = load(weights)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:200]
        raise CorruptArtifact(f"{where} is not a readable safetensors file ({first})") from None
    model = build_model(arch)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CorruptArtifact(f"{where} does not hold {arch.name} weights ({first})") from None
    return model.eval()


def load_trained(paths: ArtifactPaths, arch: Arch) -> tuple[Manifest, torch.nn.Sequential]:
    """(manifest, model) from a model folder; the weights are hashed and parsed from the same bytes."""
    from . import artifacts as A

    manifest = A.read_manifest(paths)
    weights = A.read_verified(paths, manifest, A.WEIGHTS, "train")
    return manifest, load_model(arch, weights, str(paths.weights))
