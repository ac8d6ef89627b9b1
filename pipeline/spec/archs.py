"""Which model: the network a recipe resolves to, the XOR data and the tutorial's settings.

`Arch` is the one type that names a trained network everywhere in the library: its widths, activation,
head (task), feature and class names, and whether standardization is folded into it. A recipe
(`recipe.py`) plus its data resolve to an `Arch` at training time; the manifest records it
(`Arch.record()`), and every later stage rebuilds it from there (`Arch.from_record`), so predict, ship and
serve never need the recipe or the data.

`ARCHS` (the built-in recipes `shallow` and `wide-deep`, resolved) is computed on first use from the
recipe files shipped with the package. Nothing here imports torch: `--help` and torch-free paths read it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CorruptArtifact, UsageError
from .recipe import ACTIVATIONS, BUILTIN_NAMES, TASKS, XOR_FEATURES, Label, Recipe, builtin_recipe

if TYPE_CHECKING:  # pragma: no cover
    from .encoding import Encoding  # numpy: imported when a record has an encoding (not for --help)

# The four XOR points and their labels, as in the tutorial.
XOR_X: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))
XOR_Y: tuple[int, ...] = (0, 1, 1, 0)
THRESHOLD = 0.5  # probability > THRESHOLD -> the last class, as the tutorial's `hypothesis > 0.5`

INPUT_NAME = "x"  # the graph's one input: (batch, n_inputs) float32 raw feature values (standardized inside)
OUTPUT_NAMES = {"binary": "probability", "multiclass": "probabilities", "regression": "value"}  # per head


def label_indices(task: str, out: Any) -> Any:
    """The one label rule: per row of a model's outputs `out` (rows, n_outputs), the index into its
    classes. binary: 1 (the last class) where the probability > THRESHOLD, else 0 (the tutorial's
    `hypothesis > 0.5`); multiclass: the most probable class (the first of them on a tie). numpy in,
    int64 numpy out; `validate`, `predict`, `serve` and `sweep` all label this way."""
    import numpy as np

    out = np.asarray(out)
    if task == "binary":
        return (out[..., 0] > THRESHOLD).astype(np.int64)
    if task == "multiclass":
        return np.argmax(out, axis=-1).astype(np.int64)
    raise ValueError("a regression model has no labels")


@dataclass(frozen=True)
class TutorialSettings:
    """The tutorial's hyper-parameters, read from the built-in `shallow` recipe (its one home):
    steps, lr, seed and the gate's min_accuracy."""

    steps: int
    lr: float
    seed: int
    min_accuracy: float

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> TutorialSettings:
        t = recipe.train
        assert recipe.gate.min_accuracy is not None
        return cls(t.steps, t.lr, t.seed, recipe.gate.min_accuracy)


TUTORIAL = TutorialSettings.from_recipe(builtin_recipe("shallow"))


@dataclass(frozen=True)
class Arch:
    """An MLP: [standardize] -> (Linear -> activation) per hidden width -> Linear -> head [-> un-standardize].

    Heads: binary = Sigmoid, one output, the probability of `classes[-1]`; multiclass = Softmax over
    len(classes) outputs; regression = the raw output (un-standardized when `scale_output`). The built-ins
    are sigmoid everywhere with a binary head, which is exactly the tutorial's Linear/Sigmoid stack.
    """

    name: str
    widths: tuple[int, ...]  # (n_features, *hidden, n_outputs)
    # Built-ins whose layers the tutorial builds first from the same random stream (recipe `init_after`).
    tutorial_predecessors: tuple[str, ...] = ()
    activation: str = "sigmoid"
    task: str = "binary"
    features: tuple[str, ...] = XOR_FEATURES
    classes: tuple[Label, ...] = (0, 1)  # sorted; () for regression
    scale_input: bool = False  # standardization (training-split mean/std) is the graph's first op
    scale_output: bool = False  # regression: the output is un-standardized inside the graph
    serving: str = ""  # the serving name (Triton, serve); "" -> name with '-' -> '_'
    # Raw columns -> the network's inputs, inside the graph (spec.encoding); None: the graph takes the
    # network's inputs as they are (the built-ins, and versions made before encodings existed).
    encoding: Encoding | None = None

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Arch.activation must be one of {ACTIVATIONS}, not {self.activation!r}")
        if self.task not in TASKS:
            raise ValueError(f"Arch.task must be one of {TASKS}, not {self.task!r}")
        if len(self.widths) < 2 or any(w < 1 for w in self.widths):
            raise ValueError(f"Arch.widths must be at least two positive widths, not {self.widths!r}")
        if self.encoding is not None:
            if self.encoding.features != tuple(self.features) or self.encoding.width != self.widths[0]:
                raise ValueError(
                    f"Arch: the encoding takes {list(self.encoding.features)[:8]} into {self.encoding.width} inputs;"
                    f" the network has features {list(self.features)[:8]} and {self.widths[0]} inputs"
                )
        elif len(self.features) != self.widths[0]:
            raise ValueError(f"Arch: {len(self.features)} feature names for {self.widths[0]} inputs")
        expected = {"binary": 1, "multiclass": len(self.classes), "regression": 1}[self.task]
        if self.widths[-1] != expected:
            raise ValueError(f"Arch: {self.task} head with {self.widths[-1]} outputs (expected {expected})")

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in zip(self.widths[:-1], self.widths[1:]))

    @property
    def n_linear(self) -> int:
        return len(self.widths) - 1

    @property
    def n_inputs(self) -> int:
        """Raw features per row: the width of the graph's `x` (one input per column when
        `per_column`)."""
        return len(self.features)

    @property
    def n_encoded(self) -> int:
        """The network's own inputs (after the encoding): its first layer's width."""
        return self.widths[0]

    @property
    def per_column(self) -> bool:
        """Whether the graph takes one input per column (a text or date feature), not one `x`."""
        return self.encoding is not None and self.encoding.per_column

    @property
    def n_outputs(self) -> int:
        return self.widths[-1]

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.widths[1:-1]

    @property
    def serving_name(self) -> str:
        """The name Triton (`ship`) and `serve` serve it under."""
        return self.serving or self.name.replace("-", "_")

    @property
    def output_name(self) -> str:
        return OUTPUT_NAMES[self.task]

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def is_tutorial_stack(self) -> bool:
        """Linear/Sigmoid all the way with a binary head and no scaling: what the explicit trainer,
        `sweep` and the tutorial loop take."""
        return self.activation == "sigmoid" and self.task == "binary" and not self.scale_input

    def record(self) -> dict[str, Any]:
        """Everything needed to rebuild the network (the manifest's `model` section)."""
        return {
            "name": self.name,
            "widths": list(self.widths),
            "activation": self.activation,
            "task": self.task,
            "features": list(self.features),
            "classes": list(self.classes),
            "scale_input": self.scale_input,
            "scale_output": self.scale_output,
            "serving_name": self.serving_name,
            "init_after": list(self.tutorial_predecessors),
        } | ({"encoding": self.encoding.record()} if self.encoding is not None else {})

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str) -> Arch:
        try:
            classes = tuple(record["classes"])
            if not all(isinstance(c, (bool, int, float, str)) for c in classes):
                raise TypeError("classes must be scalars")
            return cls(
                name=str(record["name"]),
                widths=tuple(int(w) for w in record["widths"]),
                tutorial_predecessors=tuple(str(n) for n in record.get("init_after", ())),
                activation=str(record["activation"]),
                task=str(record["task"]),
                features=tuple(str(f) for f in record["features"]),
                classes=classes,
                scale_input=bool(record["scale_input"]),
                scale_output=bool(record["scale_output"]),
                serving=str(record["serving_name"]),
                encoding=_encoding(record.get("encoding"), where),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptArtifact(f"{where}: its model description is not valid ({exc})") from None


def _encoding(record: Any, where: str) -> Encoding | None:
    if not record:
        return None
    from .encoding import Encoding

    return Encoding.from_record(record, where)


def arch_for(
    recipe: Recipe, features: Sequence[str], classes: Sequence[Label], task: str, encoding: Encoding | None = None
) -> Arch:
    """The network `recipe` trains on data with these features (encoded by `encoding`), classes and task."""
    n_out = len(classes) if task == "multiclass" else 1
    return Arch(
        name=recipe.name,
        widths=(encoding.width if encoding is not None else len(features), *recipe.model.hidden, n_out),
        tutorial_predecessors=recipe.train.init_after,
        activation=recipe.model.activation,
        task=task,
        features=tuple(features),
        classes=tuple(classes) if task != "regression" else (),
        scale_input=recipe.data.standardize,
        scale_output=recipe.data.standardize and task == "regression",
        serving=recipe.serving,
        encoding=encoding,
    )


@functools.cache
def builtin_archs() -> dict[str, Arch]:
    """The built-in recipes resolved on their (built-in) XOR data: name -> Arch."""
    return {n: arch_for(builtin_recipe(n), XOR_FEATURES, (0, 1), "binary") for n in BUILTIN_NAMES}


def __getattr__(name: str) -> Any:
    """`ARCHS` and `ARCH_CHOICES`, computed on first use from the built-in recipe files."""
    if name == "ARCHS":
        return builtin_archs()
    if name == "ARCH_CHOICES":
        return (*BUILTIN_NAMES, ALL)
    raise AttributeError(name)


ALL = "all"


def get_arch(name: str) -> Arch:
    archs = builtin_archs()
    try:
        return archs[name]
    except KeyError:
        raise UsageError(f"unknown arch {name!r}: choose one of {', '.join(archs)}") from None


def expand(name: str) -> list[Arch]:
    """`all` means every built-in, in declaration order."""
    return list(builtin_archs().values()) if name == ALL else [get_arch(name)]
