"""What a number is in a text field (a CSV cell, a command-line row), and what a CSV's first line is:
one rule for training's reader (`spec.data`) and `predict`'s (`serving.inputs`). No imports beyond `re`.

A number is decimal notation in ASCII digits, optionally signed, with an optional fraction and exponent,
or nan / inf / infinity (any case), with surrounding spaces trimmed. Deliberately stricter than Python's
float(): no `1_000`, no `0x10`, no digits of other scripts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE)

HEADER, DATA, MIXED = "header", "data", "mixed"


def is_number(text: str) -> bool:
    """`text` (trimmed) is a number by the rule above."""
    return NUMBER.fullmatch(text.strip()) is not None


def first_line_kind(fields: Sequence[str]) -> str:
    """A CSV's first line: HEADER when none of its fields is a number, DATA when all are, MIXED otherwise
    (what each reader makes of MIXED, and of feature names that look like numbers, is its own call)."""
    numeric = [is_number(f) for f in fields]
    if all(numeric):
        return DATA
    return HEADER if not any(numeric) else MIXED
