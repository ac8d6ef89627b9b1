"""The torch side of a model: build it, seed it as the tutorial does, save and load its weights.

Shared by the stages (train, validate, export, verify) and by `bench`; imports torch only inside
functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CorruptArtifact
from ..spec.archs import XOR_X, XOR_Y, Arch

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from ..store.artifacts import ArtifactPaths
    from ..store.manifest import Manifest


def _modules():
    """The two scaling layers (defined on first use, so importing this module stays cheap)."""
    global _SCALING
    if _SCALING is None:
        import torch

        class Standardize(torch.nn.Module):
            """(x - mean) / std with the training split's statistics, as buffers: part of the graph."""

            def __init__(self, width: int) -> None:
                super().__init__()
                self.register_buffer("mean", torch.zeros(width))
                self.register_buffer("std", torch.ones(width))

            def forward(self, x):
                return (x - self.mean) / self.std

        class Unstandardize(torch.nn.Module):
            """x * std + mean: a regression output back in the target's units."""

            def __init__(self, width: int) -> None:
                super().__init__()
                self.register_buffer("mean", torch.zeros(width))
                self.register_buffer("std", torch.ones(width))

            def forward(self, x):
                return x * self.std + self.mean

        _SCALING = (Standardize, Unstandardize)
    return _SCALING


_SCALING: Any = None
_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU", "gelu": "GELU"}


def build_model(arch: Arch) -> torch.nn.Sequential:
    """Fresh, randomly initialised model on the CPU, drawing from torch's global generator.

    [Standardize] -> (Linear -> activation) per hidden layer -> Linear -> head [-> Unstandardize].
    The built-ins (sigmoid, binary head, no scaling) are exactly the tutorial's Linear/Sigmoid stack.
    """
    import torch

    standardize, unstandardize = _modules()
    act = getattr(torch.nn, _ACTIVATIONS[arch.activation])
    layers: list[torch.nn.Module] = [standardize(arch.n_encoded)] if arch.scale_input else []
    pairs = list(zip(arch.widths[:-1], arch.widths[1:]))
    for n, (i, o) in enumerate(pairs):
        layers.append(torch.nn.Linear(i, o, bias=True))
        if n < len(pairs) - 1:
            layers.append(act())
    if arch.task == "binary":
        layers.append(torch.nn.Sigmoid())
    elif arch.task == "multiclass":
        layers.append(torch.nn.Softmax(dim=1))
    elif arch.scale_output:
        layers.append(unstandardize(1))
    return torch.nn.Sequential(*layers)


def training_view(model: torch.nn.Sequential, arch: Arch) -> torch.nn.Sequential:
    """The same parameters without the serving-only last layer: logits for multi-class (cross-entropy
    takes them), the standardized value for a scaled regression (MSE on the standardized target).
    Binary keeps its sigmoid: BCE on probabilities, as the tutorial trains."""
    import torch

    if arch.task == "multiclass" or (arch.task == "regression" and arch.scale_output):
        return torch.nn.Sequential(*list(model)[:-1])
    return model


def set_scaling(
    model: torch.nn.Sequential,
    arch: Arch,
    mean: Any = None,
    std: Any = None,
    target_mean: float | None = None,
    target_std: float | None = None,
) -> None:
    """Write the training split's statistics into the scaling layers' buffers (float32)."""
    import torch

    first: Any = model[0]
    last: Any = model[-1]
    with torch.no_grad():
        if arch.scale_input:
            first.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            first.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        if arch.scale_output:
            assert target_mean is not None and target_std is not None
            last.mean.fill_(float(target_mean))
            last.std.fill_(float(target_std))


def linear_layers(model: torch.nn.Sequential) -> list[Any]:
    import torch

    return [m for m in model if isinstance(m, torch.nn.Linear)]


def init_model(arch: Arch, seed: int, tutorial_order: bool = True) -> torch.nn.Sequential:
    """Seeded model whose initial weights match the tutorial's (layers are made on the CPU, so the
    weights do not depend on the training device)."""
    import torch

    from ..spec.archs import builtin_archs

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if tutorial_order:
        for name in arch.tutorial_predecessors:
            build_model(builtin_archs()[name])  # consume the random stream as the tutorial does
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


def load_trained(
    paths: ArtifactPaths, arch: Arch, manifest: Manifest | None = None
) -> tuple[Manifest, torch.nn.Sequential]:
    """(manifest, model) from a model folder; the weights are hashed and parsed from the same bytes.
    `manifest`: the folder's, already read by the caller under the same lock (not read again)."""
    from ..store import artifacts as A

    manifest = manifest if manifest is not None else A.read_manifest(paths)
    weights = A.read_verified(paths, manifest, A.WEIGHTS, "train")
    return manifest, load_model(arch, weights, str(paths.weights))
