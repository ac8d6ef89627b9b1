"""Strict JSON for every document we write (files and `--json` output): what any JSON parser reads.

Python's `json` writes `NaN`, `Infinity` and `-Infinity` by default, which are not JSON (pandas,
`jq`, browsers and Go refuse them). Here a non-finite float becomes `null`, and a document (a JSON
object) that had any gets a `"non_finite"` entry that says so and lists where, so a reader can tell a
null that means "not finite" from one that means "not recorded":

    text = dumps({"max_abs": float("inf")})
    # {"max_abs": null, "non_finite": {"note": "...", "paths": ["max_abs"]}}

Torch-free, numpy-aware (numpy scalars and arrays are written as numbers and lists).
"""

from __future__ import annotations

import json
import math
from typing import Any

NOTE = "these values were not finite (inf, -inf or NaN) and are written as null"
KEY = "non_finite"


def clean(value: Any, path: str = "", found: list[str] | None = None) -> Any:
    """`value` with every non-finite float replaced by None (the paths replaced appended to `found`),
    tuples as lists and numpy scalars/arrays as Python numbers/lists."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if found is not None:
            found.append(path or "(the document)")
        return None
    if isinstance(value, dict):
        return {k: clean(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return clean(tolist(), path, found)
    return value  # json.dumps says what it cannot write


def dumps(value: Any, indent: int | None = 2, explain: bool = True) -> str:
    """Strict JSON text for `value` (no NaN/Infinity literals: `json.dumps(..., allow_nan=False)` on
    the cleaned value). With `explain`, a dict that had non-finite values gets a `non_finite` entry."""
    found: list[str] = []
    cleaned = clean(value, "", found)
    if explain and found and isinstance(cleaned, dict) and KEY not in cleaned:
        cleaned[KEY] = {"note": NOTE, "paths": found[:100], "count": len(found)}
    return json.dumps(cleaned, indent=indent, allow_nan=False)


def dumps_bytes(value: Any, indent: int | None = 2, explain: bool = True) -> bytes:
    """`dumps` as UTF-8 bytes with a final newline (a file's content)."""
    return (dumps(value, indent, explain) + "\n").encode()
