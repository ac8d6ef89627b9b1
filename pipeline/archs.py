"""Architectures and the XOR data. Adding an architecture is one entry in `ARCHS`.

Nothing here imports torch at module load: `--help` and torch-free paths read this module too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# The four XOR points and their labels, as in the tutorial.
XOR_X: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))
XOR_Y: tuple[int, ...] = (0, 1, 1, 0)
THRESHOLD = 0.5  # probability > THRESHOLD -> label 1, as the tutorial's `hypothesis > 0.5`


@dataclass(frozen=True)
class Arch:
    """An MLP: Linear(widths[i], widths[i+1]) followed by Sigmoid, for every consecutive pair."""

    name: str
    widths: tuple[int, ...]
    # The tutorial builds these architectures' layers first, from the same seeded random stream,
    # without reseeding. Building them (and discarding them) first reproduces its initial weights.
    tutorial_predecessors: tuple[str, ...] = ()

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in zip(self.widths[:-1], self.widths[1:]))

    @property
    def n_linear(self) -> int:
        return len(self.widths) - 1


ARCHS: dict[str, Arch] = {
    "shallow": Arch("shallow", (2, 2, 1)),
    "wide-deep": Arch("wide-deep", (2, 10, 10, 10, 1), tutorial_predecessors=("shallow",)),
}
ALL = "all"


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise UsageError(f"unknown arch {name!r}: choose one of {', '.join(ARCHS)}") from None


def expand(name: str) -> list[Arch]:
    """`all` means every architecture, in declaration order."""
    return list(ARCHS.values()) if name == ALL else [get_arch(name)]


def build_model(arch: Arch) -> "torch.nn.Sequential":
    """Fresh, randomly initialised model on the CPU, drawing from torch's global generator."""
    import torch

    layers: list[torch.nn.Module] = []
    for i, o in zip(arch.widths[:-1], arch.widths[1:]):
        layers += [torch.nn.Linear(i, o, bias=True), torch.nn.Sigmoid()]
    return torch.nn.Sequential(*layers)


def init_model(arch: Arch, seed: int, tutorial_order: bool = True) -> "torch.nn.Sequential":
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


def xor_tensors(device: "torch.device | str" = "cpu", dtype: "torch.dtype | None" = None):
    """(X, Y): (4, 2) and (4, 1) float tensors."""
    import torch

    dtype = dtype or torch.float32
    x = torch.tensor(XOR_X, dtype=dtype, device=device)
    y = torch.tensor([[float(v)] for v in XOR_Y], dtype=dtype, device=device)
    return x, y
