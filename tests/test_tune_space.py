"""The [tune] section: parsed into a typed space, every bad value a one-line error naming the key, the
default space when it is absent, written back as TOML that reads back the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import UsageError
from pipeline.spec.recipe import parse_recipe
from pipeline.spec.tune_space import DEFAULT, KEYS, Range, TuneSpaceError, parse_tune

BASE = """
name = "t"
[data]
path = "d.csv"
target = "y"
[gate]
min_accuracy = 0.5
"""


def recipe(tune: str | None):
    text = BASE + (f"\n[tune]\n{tune}\n" if tune is not None else "")
    return parse_recipe(text, Path("/tmp/r.toml"))


def test_no_section_means_no_space_and_a_documented_default():
    assert recipe(None).tune is None
    assert DEFAULT.written is False
    assert DEFAULT.record() == {
        "layers": [1, 3],
        "width": [8, 256],
        "per_layer_width": False,
        "activation": ["relu", "gelu", "tanh"],
        "lr": [0.0001, 0.3],
        "batch_size": [0, 64, 256],
        "optimizer": ["adam", "sgd"],
        "steps": [300, 5000],
        "prune": True,
    }
    assert DEFAULT.width.log and DEFAULT.lr.log and DEFAULT.steps.log and not DEFAULT.layers.log


def test_a_written_section_overrides_key_by_key():
    t = recipe('layers = [2, 4]\nwidth = 32\nactivation = ["tanh"]\nlr = [0.001, 0.01]\nper_layer_width = true').tune
    assert t is not None and t.written
    assert t.layers == Range(2, 4) and t.width.fixed and t.width.low == 32
    assert t.activation == ("tanh",) and t.lr.low == 0.001 and t.lr.real
    assert t.per_layer_width and t.optimizer == DEFAULT.optimizer and t.steps == DEFAULT.steps


def test_the_section_round_trips_through_toml():
    r = recipe('layers = [1, 2]\nwidth = [4, 64]\nbatch_size = [0, 32]\noptimizer = "sgd"\nprune = false')
    again = parse_recipe(r.to_toml(), Path("/tmp/r.toml"))
    assert again.tune == r.tune
    assert "[tune]" in r.to_toml() and "[tune]" not in recipe(None).to_toml()
    # the recorded recipe (the manifest's) never carries the space: a trained model does not depend on it
    assert "tune" not in r.as_dict()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("widht = [8, 16]", "unknown key 'widht' in [tune]; did you mean 'width'?"),
        ("layers = [3, 1]", "[tune] layers [3, 1] is an empty range (low 3 > high 1)"),
        ("lr = [0.3, 0.001]", "[tune] lr [0.3, 0.001] is an empty range"),
        ("activation = []", "[tune] activation is an empty choice"),
        ("batch_size = []", "[tune] batch_size is an empty choice"),
        ("layers = [1, 2, 3]", "[tune] layers must be a range of two integers [low, high] or one integer"),
        ("width = [8.5, 16]", "[tune] width takes integers, not 8.5"),
        ("lr = [0, 0.1]", "[tune] lr [0, 0.1] must be at least 1.17549e-38"),
        ("lr = [1e-320, 1e-300]", "[tune] lr [1e-320, 1e-300] must be at least 1.17549e-38"),
        ("layers = [0, 2]", "[tune] layers [0, 2] must be at least 1"),
        ("width = [8, 100000]", "at most 4096"),
        ('activation = ["relu", "swish"]', "[tune] activation 'swish' is not one of sigmoid, tanh, relu, gelu"),
        ('optimizer = ["adamw"]', "[tune] optimizer 'adamw' is not one of sgd, adam"),
        ("batch_size = [-1, 8]", "[tune] batch_size takes integers >= 0"),
        ("batch_size = [8, 8]", "[tune] batch_size lists 8 twice"),
        ('prune = "yes"', "[tune] prune must be true or false"),
        ("steps = true", "[tune] steps takes integers, not True"),
        ('lr = "fast"', "[tune] lr takes numbers, not 'fast'"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(body, message):
    with pytest.raises(UsageError) as e:
        recipe(body)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_the_section_must_be_a_table():
    with pytest.raises(TuneSpaceError, match=r"\[tune\] must be a table"):
        parse_recipe(BASE.replace('name = "t"', 'name = "t"\ntune = 3'), Path("/tmp/r.toml"))


def test_difference_names_the_first_key_that_differs():
    a = recipe("layers = [1, 2]").tune
    b = recipe("layers = [1, 3]").tune
    assert a is not None and b is not None
    assert a.difference(b.record()) == "[tune] layers is [1, 2] here, [1, 3] in the study"
    assert a.difference(a.record()) is None


def test_contains_says_why_a_trial_lies_outside():
    t = recipe('layers = [1, 2]\nwidth = [8, 64]\nactivation = ["relu"]').tune
    assert t is not None
    ok = {"hidden": [16, 16], "activation": "relu", "lr": 0.01, "batch_size": 0, "optimizer": "adam", "steps": 300}
    assert t.contains(ok) is None
    assert "3 hidden layers" in (t.contains({**ok, "hidden": [16, 16, 16]}) or "")
    assert "different widths" in (t.contains({**ok, "hidden": [16, 32]}) or "")
    assert "width 128" in (t.contains({**ok, "hidden": [128]}) or "")
    assert "activation 'tanh'" in (t.contains({**ok, "activation": "tanh"}) or "")
    assert "lr 0.5" in (t.contains({**ok, "lr": 0.5}) or "")


def test_every_key_is_documented_in_the_starter_recipe(tmp_path):
    from pipeline.spec.starter import _tune_lines

    text = "\n".join(_tune_lines())
    for key in KEYS:
        assert f"# {key} = " in text
    # uncommented, the section is the default space, written
    body = "\n".join(line[2:] for line in _tune_lines() if line.startswith("# ") and " = " in line)
    t = parse_tune(__import__("tomllib").loads(body), "x")
    assert t.record() == DEFAULT.record() and t.written
