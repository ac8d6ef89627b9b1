"""The model card (MODEL_CARD.md) of a version: written from its manifest (the network, the recipe,
the data, training, the gate) and its verify report when the version is created, and shipped with it.
The built-ins' card speaks of XOR. A model with an encoding (`Arch.encoding`: missing values, text
categories, dates handled inside the graph) gets a table of its raw inputs (per column: kind, graph
dtype, categories, fill value, indicator) and says how missing and unknown values are handled.
Torch-free."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from ..spec.archs import INPUT_NAME, Arch, Label
from ..spec.encoding import CATEGORY, DATE, NUMBER, STRING, TIMESTAMP, ColumnCode, Encoding
from . import artifacts as A
from .manifest import Manifest

LABELS = A.LABELS


def class_label(value: Label) -> str:
    """A class value as labels.txt (and the model card) writes it: a string as it is in the data, a
    number or boolean as JSON writes it (3, 1.5, true)."""
    return value if isinstance(value, str) else json.dumps(value)


def _is_xor(manifest: Manifest) -> bool:
    """A built-in trained on the four XOR points (older manifests have no recipe: built-ins only)."""
    data, recipe = manifest.data or {}, manifest.recipe or {}
    if data.get("source") == "builtin:xor" or (recipe.get("data") or {}).get("builtin") == "xor":
        return True
    return manifest.recipe is None and manifest.data is None and manifest.model is None


def _names(values: Any) -> str:
    return ", ".join(f"`{class_label(v)}`" for v in values) if values else "none"


def _g(value: Any, spec: str = ".6g") -> str:
    """A number for the card; '-' when it was not recorded."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _example_value(c: ColumnCode) -> float | str:
    """One raw value of column `c` for the usage example, as its graph input takes it: a number's fill
    value (the training median or mean), a category's first category, a date made of its fill parts."""
    if c.kind == NUMBER:
        return float(f"{c.impute[0]:.4g}")
    if c.kind == CATEGORY:
        first = c.categories[0]
        return "true" if c.boolean else first if isinstance(first, str) else float(first)
    y, m, d = (int(v) for v in c.impute[:3])
    day = f"{y:04d}-{m:02d}-{d:02d}"
    return f"{day}T{int(c.impute[4]):02d}:00:00Z" if c.kind == TIMESTAMP else day


def _example_row(arch: Arch, data: dict[str, Any], xor: bool) -> list[float]:
    """One input row for the usage example: the XOR point (0, 1); for a model with an encoding, each
    column's fill value (or first category); the training split's feature means when the data record
    has them, else zeros."""
    if xor:
        return [0.0, 1.0]
    if arch.encoding is not None:
        return [float(v) for v in map(_example_value, arch.encoding.columns) if isinstance(v, float)]
    stats = data.get("stats")
    for key in ("mean", "feature_mean", "x_mean"):
        mean = stats.get(key) if isinstance(stats, dict) else None
        if isinstance(mean, list) and len(mean) == arch.n_inputs and all(isinstance(v, (int, float)) for v in mean):
            return [float(f"{v:.4g}") for v in mean]
    return [0.0] * arch.n_inputs


def _purpose(arch: Arch, manifest: Manifest, xor: bool) -> list[str]:
    if xor:
        return [
            "A teaching-sized multilayer perceptron that computes XOR of two inputs near {0, 1}. It is a",
            "demonstration of a verified train-to-ONNX pipeline, not a model for real data.",
        ]
    data = manifest.data or {}
    target = data.get("target") or ((manifest.recipe or {}).get("data") or {}).get("target") or "the target"
    if arch.task == "binary":
        what = f"the probability that `{target}` is `{class_label(arch.classes[-1])}` (of {_names(arch.classes)})"
    elif arch.task == "multiclass":
        what = f"the probability of each class of `{target}` ({len(arch.classes)} classes)"
    else:
        what = f"`{target}`, a number in the target's units"
    values = "raw column values (gaps, text and dates as they come)" if arch.per_column else "feature values"
    return [
        f"A {arch.task} multilayer perceptron trained by xorship from recipe `{arch.name}`. From the",
        f"{arch.n_inputs} {values} of one row it predicts {what}. It knows only what its training data held.",
    ]


def _data_lines(arch: Arch, manifest: Manifest, xor: bool) -> list[str]:
    data, recipe_data = manifest.data or {}, (manifest.recipe or {}).get("data") or {}
    if xor:
        source = "the four XOR points (built in), labels 0 1 1 0"
    else:
        source = f"`{data.get('source') or recipe_data.get('path') or 'not recorded'}`"
    lines = [f"- source: {source}"]
    if data.get("sha256"):
        lines.append(f"- sha256 `{data['sha256']}`")
    rows, train_rows, val_rows = data.get("rows"), data.get("train_rows"), data.get("val_rows")
    fraction, seed = recipe_data.get("validation_fraction"), recipe_data.get("split_seed")
    if fraction == 0:
        split = "none (validation fraction 0: the gate is judged on the training rows)"
    else:
        split = f"{_g(train_rows)} training, {_g(val_rows)} validation" if train_rows is not None else "not recorded"
        if fraction is not None:
            split += f" (validation fraction {_g(fraction)}, split seed {_g(seed)})"
    lines.append(f"- rows: {_g(rows)}; split: {split}")
    if data.get("dropped_rows"):
        lines.append(f"- rows left out of training because their target is missing: {_g(data['dropped_rows'])}")
    lines.append(f"- features, in input order: {', '.join(f'`{f}`' for f in arch.features)}")
    target = data.get("target") or recipe_data.get("target")
    if arch.is_classifier:
        lines.append(f"- target{f' `{target}`' if target else ''}: classes, in output order: {_names(arch.classes)}")
    else:
        lines.append(f"- target{f' `{target}`' if target else ''}: a number (regression)")
    return lines


def _dims(shape: tuple[str | int, ...]) -> str:
    return f"[{', '.join(map(str, shape))}]"


def _io_lines(arch: Arch, manifest: Manifest) -> list[str]:
    exp = manifest.export
    scaled = (
        "standardized inside the graph with the training split's mean and std"
        if arch.scale_input
        else "used as given (no standardization)"
    )
    shape_in = _dims(exp.input.shape if exp else ("batch", arch.n_inputs))
    shape_out = _dims(exp.output.shape if exp else ("batch", arch.n_outputs))
    if arch.task == "binary":
        out = (
            f"the probability of class `{class_label(arch.classes[-1])}`; that class when it is above 0.5, "
            f"else `{class_label(arch.classes[0])}`"
        )
    elif arch.task == "multiclass":
        out = f"one probability per class, in the order {_names(arch.classes)}; the answer is the largest"
    else:
        out = "the prediction, in the target's units" + (
            " (un-standardized inside the graph)" if arch.scale_output else ""
        )
    enc = arch.encoding
    if enc is not None and arch.per_column:
        lines = [
            f"- inputs: one per column, named exactly as the columns in the data, each [batch, 1]: float32 for numbers"
            f" (NaN: missing), string (UTF-8) for text, booleans and dates; encoded inside the graph into the"
            f" network's {arch.n_encoded} inputs, which are {scaled}:",
        ]
    elif enc is not None:
        lines = [
            f"- input `{INPUT_NAME}`: float32 {shape_in}, raw feature values in the order above (NaN: missing),"
            f" encoded inside the graph into the network's {arch.n_encoded} inputs, which are {scaled}:",
        ]
    else:
        lines = [f"- input `{INPUT_NAME}`: float32 {shape_in}, raw feature values in the order above, {scaled}"]
    if enc is not None:
        lines += ["", *_encoding_table(enc), "", *_encoding_rules(enc, arch.per_column), ""]
    lines.append(f"- output `{arch.output_name}`: float32 {shape_out}, {out}")
    if exp is not None:
        lines.append(f"- ONNX opset {exp.opset}, exporter {exp.exporter}, one self-contained file")
    lines.append(f"- served by `ship` (Triton) and `serve` as `{arch.serving_name}`")
    if arch.task == "multiclass":
        lines.append(
            f"- the Triton repository holds `{LABELS}` (the class names) for Triton's classification extension"
        )
    return lines


def _md(text: str) -> str:
    """Text for a Markdown table cell (one line, `|` escaped)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    """A column name or value as inline code (a name with a backtick gets a longer fence)."""
    text = _md(text)
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def _category_list(c: ColumnCode, limit: int = 5) -> str:
    shown = ", ".join(_code(class_label(v) if not isinstance(v, float) else f"{v:g}") for v in c.categories[:limit])
    more = f" and {len(c.categories) - limit} more" if len(c.categories) > limit else ""
    return f"{len(c.categories)}: {shown}{more}"


def _encoding_table(enc: Encoding) -> list[str]:
    """Per raw column: kind, what the graph input holds, its encoding, and its missing/unknown rule."""
    rows = [
        "| column | kind | graph input | encoded as | missing or unknown |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in enc.columns:
        dtype = "string" if c.dtype == STRING else "float32"
        if c.kind == NUMBER:
            kind, encoded = "number", "its value" + (" + a missing indicator" if c.indicator else "")
            missing = f"NaN: filled with {c.impute[0]:.6g} (training {enc.impute})" + (
                ", indicator 1" if c.indicator else ""
            )
        elif c.kind == CATEGORY:
            kind = "boolean" if c.boolean else "category (text)" if c.dtype == STRING else "category (numeric codes)"
            encoded = f"one-hot over {_category_list(c)}"
            if c.boolean:
                missing = 'any other value or "": all zeros'
            elif c.dtype == STRING:
                missing = 'a value never seen in training, or "": all zeros'
            else:
                missing = "a code never seen in training, or NaN: all zeros"
        else:
            kind = "timestamp (UTC)" if c.kind == TIMESTAMP else "date"
            encoded = ", ".join(c.parts) + (" + a missing indicator" if c.indicator else "")
            fills = ", ".join(f"{p} {v:g}" for p, v in zip(c.parts, c.impute))
            missing = f'not ISO or "": parts filled with the training {enc.impute}s ({fills})' + (
                ", indicator 1" if c.indicator else ""
            )
        rows.append(f"| {_code(c.name)} | {kind} | {dtype} | {encoded} | {missing} |")
    return rows


def _encoding_rules(enc: Encoding, per_column: bool) -> list[str]:
    """How missing and unknown values are handled, in words (the table's rules)."""
    lines = [
        f"- A missing number (NaN) is filled inside the graph with the training split's {enc.impute}; where the column"
        " had gaps in training, an indicator input (1 = missing) lets the network learn from the gap itself.",
    ]
    if any(c.kind == CATEGORY for c in enc.columns):
        lines.append(
            "- A category never seen in training, or a missing one, is encoded as all zeros (no category, as"
            ' scikit-learn\'s `OneHotEncoder(handle_unknown="ignore")`): it lands on no weight that training never'
            " moved. Booleans take `true`/`True`/`TRUE`/`1` and `false`/`False`/`FALSE`/`0`."
        )
    if any(c.kind in (DATE, TIMESTAMP) for c in enc.columns):
        lines.append(
            "- Dates are `YYYY-MM-DD` or `YYYY/MM/DD` strings (timestamps `YYYY-MM-DD[T ]HH:MM[:SS[.f]]`, then `Z`,"
            " `+HH:MM`, `-HH:MM` or nothing for UTC), parsed inside the graph and read in UTC; anything else is missing."
        )
    if per_column:
        lines.append(
            "- Inputs are named exactly as the columns (no renaming: onnxruntime and Triton take names with spaces"
            " and slashes). With `--provider cuda` (`serve`, `predict`) or on a GPU Triton instance, the nodes that"
            " take or make strings run on onnxruntime's CPU provider inside the same session (it has no CUDA"
            " kernels for strings); the network runs on CUDA."
        )
    return lines


def _model_lines(arch: Arch, manifest: Manifest) -> list[str]:
    cfg = manifest.config
    n_params = cfg.n_params if cfg else arch.n_params
    head = {"binary": "Sigmoid", "multiclass": "Softmax", "regression": "linear"}[arch.task]
    scaling = []
    if arch.scale_input:
        scaling.append("inputs standardized in the graph")
    if arch.scale_output:
        scaling.append("output un-standardized in the graph")
    lines = [
        f"- layers {list(arch.widths)}: Linear + {arch.activation} per hidden layer, a {head} head;"
        f" {n_params} parameters",
        f"- standardization: {', '.join(scaling) if scaling else 'none'}",
    ]
    if arch.encoding is not None:
        lines.append(
            f"- encoding inside the graph: {arch.n_inputs} raw columns into the network's {arch.n_encoded} inputs"
            " (imputation, missing indicators, one-hot categories, date parts; the table above)"
        )
    return lines


def _training_lines(manifest: Manifest) -> list[str]:
    cfg, train = manifest.config, manifest.train
    recipe_train = (manifest.recipe or {}).get("train") or {}
    lines = []
    if cfg is not None:
        batch = f"batch size {cfg.batch_size}" if cfg.batch_size else "full batch"
        lines.append(
            f"- {cfg.loss} loss, {cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps, {batch}, seed {cfg.seed}"
            + (", the tutorial's initialisation order" if cfg.tutorial_init else "")
        )
    elif recipe_train:
        lines.append(
            f"- {recipe_train.get('optimizer')} lr {recipe_train.get('lr')}, {recipe_train.get('steps')} steps,"
            f" seed {recipe_train.get('seed')}"
        )
    if train is not None:
        lines.append(f"- trained on {train.device} with the {train.trainer} loop in {train.seconds} s")
        lines.append(f"- final training loss {train.final_loss:.6g}")
    return lines


def _metric_lines(arch: Arch, manifest: Manifest, xor: bool) -> list[str]:
    val = manifest.validation
    if val is None:
        return ["- not recorded"]
    on = f"the {val.rows} {val.on}" if val.rows is not None and val.on else "the validation rows"
    if xor:
        on = "the four XOR points"
    verdict = "passed" if val.passed else "FAILED"
    if val.accuracy is not None or arch.is_classifier:
        lines = [
            f"- accuracy on {on}: {_g(val.accuracy, '.4f')} (gate: at least {_g(val.min_accuracy, '.4f')}, {verdict})"
        ]
    else:
        r2 = f", R² {_g(val.r2, '.4f')}" if val.r2 is not None else ""
        lines = [f"- RMSE on {on}: {_g(val.rmse, '.6g')}{r2} (gate: at most {_g(val.max_rmse, '.6g')}, {verdict})"]
    if val.probabilities and arch.task == "binary":
        lines.append(f"- probabilities {[round(p, 6) for p in val.probabilities]}")
    return lines


def _verify_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"Reference: {report.get('reference', '-')}. Verdict: {'PASS' if report.get('passed') else 'FAIL'}.",
        "",
        "| runtime | what ran | max abs error | tolerance (atol × input scale, rtol) |",
        "| --- | --- | --- | --- |",
    ]
    comparisons = report.get("comparisons") or []
    for rt, detail in (report.get("ran") or {}).items():
        worst = max((c["max_abs"] for c in comparisons if c.get("runtime") == rt), default=float("nan"))
        tol = (report.get("tolerances") or {}).get(rt) or {}
        atol, rtol = tol.get("atol"), tol.get("rtol")
        shown = f"{atol:.0e}, {rtol:.0e}" if isinstance(atol, float) and isinstance(rtol, float) else "-"
        lines.append(f"| {rt} | {detail} | {worst:.2e} | {shown} |")
    for rt, why in (report.get("skipped") or {}).items():
        lines.append(f"| {rt} | not run: {why} | - | - |")
    sets = report.get("input_sets") or []
    lines += [
        "",
        "Input sets: "
        + "; ".join(
            f"{s.get('name')} ({s.get('rows')} rows{', seed ' + str(s['seed']) if s.get('seed') is not None else ''})"
            for s in sets
        ),
    ]
    return lines


def _usage_lines(arch: Arch, manifest: Manifest, xor: bool) -> list[str]:
    row = _example_row(arch, manifest.data or {}, xor)
    serving, number = arch.serving_name, manifest.version or "VERSION"
    if xor:
        cli = [f"xorship predict --arch {arch.name} 0,1 1,1"]
    else:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(arch.features)
        header = buf.getvalue()
        cli = [
            f"# rows.csv: a header line `{header}`, then one row per line",
            f"xorship predict --recipe {arch.name}.toml --input rows.csv",
        ]
    cli.append(f"xorship predict --model REPOSITORY/{serving}/{number}/model.onnx --input rows.csv")
    if arch.task == "binary":
        what = f"(1, 1): the probability of class {class_label(arch.classes[-1])}"
    elif arch.task == "multiclass":
        what = f"(1, {arch.n_outputs}): one probability per class, {', '.join(map(class_label, arch.classes))}"
    else:
        what = "(1, 1): the prediction"
    client = [
        "import numpy as np",
        "import tritonclient.http as httpclient",
        "",
        'client = httpclient.InferenceServerClient("localhost:8000")  # Triton on the shipped repository, or xorship serve',
    ]
    enc = arch.encoding
    if enc is not None and arch.per_column:
        client.append('columns = {  # one input per column, [rows, 1]: NaN is a missing number, "" missing text')
        for c in enc.columns:
            value = _example_value(c)
            dtype = "object" if c.dtype == STRING else "np.float32"
            client.append(f"    {json.dumps(c.name)}: np.array([[{value!r}]], dtype={dtype}),")
        client += [
            "}",
            "inputs = []",
            "for name, values in columns.items():",
            '    inp = httpclient.InferInput(name, list(values.shape), "BYTES" if values.dtype == object else "FP32")',
            "    inp.set_data_from_numpy(values)",
            "    inputs.append(inp)",
        ]
        inputs = "inputs"
    else:
        missing = "; NaN: missing" if enc is not None else ""
        client += [
            f"x = np.array([{row!r}], dtype=np.float32)  # {', '.join(arch.features)}{missing}",
            f'inp = httpclient.InferInput("{INPUT_NAME}", list(x.shape), "FP32")',
            "inp.set_data_from_numpy(x)",
        ]
        inputs = "[inp]"
    client += [
        f'out = httpclient.InferRequestedOutput("{arch.output_name}")',
        f'result = client.infer("{serving}", {inputs}, outputs=[out])',
        f'print(result.as_numpy("{arch.output_name}"))  # {what}',
    ]
    if arch.task == "multiclass":
        client += [
            "",
            f"# Triton only (it reads {LABELS}): the top class by name, as b'<probability>:<index>:<class>'",
            f'top = httpclient.InferRequestedOutput("{arch.output_name}", class_count=1)',
            f'print(client.infer("{serving}", {inputs}, outputs=[top]).as_numpy("{arch.output_name}"))',
        ]
    return ["```sh", *cli, "```", "", "```python", *client, "```"]


def _limits(arch: Arch, manifest: Manifest, xor: bool) -> list[str]:
    if xor:
        lines = [
            "- Tiny model trained on four points: it knows XOR and nothing else; outputs for inputs far",
            "  from {0, 1} are extrapolation (verified for agreement between runtimes, not for meaning).",
        ]
    else:
        rows = (manifest.data or {}).get("rows")
        lines = [
            f"- Trained on {_g(rows)} rows: rows unlike them (feature values outside the training range) are",
            "  extrapolation; verification checks that runtimes agree, not that answers are right.",
        ]
        if arch.is_classifier:
            lines.append("- Probabilities are the network's outputs, not calibrated estimates.")
        if arch.encoding is not None and any(c.kind == CATEGORY for c in arch.encoding.columns):
            lines.append(
                "- A category never seen in training gets no weight of its own (all zeros): the answer for such a row"
                " rests on its other columns."
            )
    lines.append("- CUDA figures appear only where a GPU was present when `verify` ran.")
    return lines


def model_card(manifest: Manifest, verify_report: dict[str, Any]) -> str:
    """MODEL_CARD.md for a verified version: written from its manifest (the network, the recipe, the
    data, training, the gate) and its verify report. The built-ins' card speaks of XOR."""
    arch = A.arch_of(manifest, A.MANIFEST)
    xor = _is_xor(manifest)
    title = f"{arch.name} XOR MLP" if xor else f"{arch.name} ({arch.task} MLP)"
    lines = [
        f"# Model card: {title}",
        "",
        "## What it is for",
        *_purpose(arch, manifest, xor),
        "",
        "## Data",
        *_data_lines(arch, manifest, xor),
        "",
        "## Input and output",
        *_io_lines(arch, manifest),
        "",
        "## Model",
        *_model_lines(arch, manifest),
        "",
        "## Training",
        *_training_lines(manifest),
        "",
        "## Gate and metrics",
        *_metric_lines(arch, manifest, xor),
        "",
        "## Equivalence across runtimes",
        *_verify_lines(verify_report),
        "",
        "## Usage",
        *_usage_lines(arch, manifest, xor),
        "",
        "## Hashes (sha256)",
        *[f"- `{name}`: `{entry.sha256}`" for name, entry in manifest.files.items()],
        "",
        "## Versions",
        *[f"- {k} {v}" for k, v in (manifest.versions or {}).items()],
        "",
        "## Known limits",
        *_limits(arch, manifest, xor),
    ]
    return "\n".join(lines) + "\n"
