"""Which model: the architectures, the XOR data and the tutorial's settings.

`Arch` is the one type that names a model everywhere in the library. Adding an architecture is one
entry in `ARCHS`. Nothing here imports torch: `--help` and torch-free paths read this module too.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

# The four XOR points and their labels, as in the tutorial.
XOR_X: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))
XOR_Y: tuple[int, ...] = (0, 1, 1, 0)
THRESHOLD = 0.5  # probability > THRESHOLD -> label 1, as the tutorial's `hypothesis > 0.5`


@dataclass(frozen=True)
class TutorialSettings:
    """The tutorial's hyper-parameters: the defaults of every command and of the library."""

    steps: int = 10001
    lr: float = 1.0
    seed: int = 777
    min_accuracy: float = 1.0  # all four XOR points right


TUTORIAL = TutorialSettings()


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

    @property
    def n_inputs(self) -> int:
        return self.widths[0]

    @property
    def n_outputs(self) -> int:
        return self.widths[-1]

    @property
    def serving_name(self) -> str:
        """The name Triton (and `ship`) serve it under."""
        return "xor_" + self.name.replace("-", "_")


ARCHS: dict[str, Arch] = {
    "shallow": Arch("shallow", (2, 2, 1)),
    "wide-deep": Arch("wide-deep", (2, 10, 10, 10, 1), tutorial_predecessors=("shallow",)),
}
ALL = "all"
ARCH_CHOICES: tuple[str, ...] = (*ARCHS, ALL)


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise UsageError(f"unknown arch {name!r}: choose one of {', '.join(ARCHS)}") from None


def expand(name: str) -> list[Arch]:
    """`all` means every architecture, in declaration order."""
    return list(ARCHS.values()) if name == ALL else [get_arch(name)]
