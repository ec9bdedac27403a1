"""Rules about a version's features that training, the service and scoring all apply, kept here
once (both images carry this package, and it imports nothing from either side)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_LONGEST = 64


def graph_input_names(names: Sequence[str]) -> list[str]:
    """The compiled graph's input for each feature, in order.

    Clients use the table's own column names everywhere; only the graph, whose converter
    rewrites names it considers unsafe (spaces, dots, a leading digit...), sees these: ASCII
    letters, digits and `_`, never starting with a digit, unique. Export records them in the
    metadata and the ONNX runtime reads them back, so the two can never disagree.
    """
    taken: set[str] = set()
    inputs = []
    for name in names:
        base = _UNSAFE.sub("_", name)[:_LONGEST] or "feature"
        if base[0].isdigit():
            base = "_" + base
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            candidate = f"{base}_{number}"
        taken.add(candidate)
        inputs.append(candidate)
    return inputs


# How a table's cell reads as each feature type, for training and for scoring alike.
BOOLEAN_WORDS = {"true": True, "false": False}
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


class CellError(ValueError):
    """A cell that cannot be a value of its feature's type; `str()` says what it should be."""


def read_cell(text: str, kind: str) -> Any:
    """A present (not missing) cell's text as the value a client would send for it.

    `true`/`false` in any case for a boolean; for an integer, whole numbers written either way
    (`2007`, `2007.0`); a number's text as Python reads it. What remains for the caller to
    refuse (a fraction for an integer, infinity, NaN) comes back as a float.
    """
    if kind == "string":
        return text
    if kind == "boolean":
        try:
            return BOOLEAN_WORDS[text.strip().lower()]
        except KeyError:
            raise CellError(f"{text[:40]!r} is not true or false") from None
    if kind == "integer" and INTEGER_TEXT.fullmatch(text.strip()):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise CellError(f"{text[:40]!r} is not a number") from None
    if kind == "integer" and number.is_integer():
        return int(number)
    return number
