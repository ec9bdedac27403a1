"""One feature's column of text cells (an Arrow array) as typed values, by the feature spec.

Most columns are clean: every cell reads as its type, within range, a known category, and gaps
only where training had them. Arrow's compute kernels check that for the whole column at C
speed and give the typed array at once. Any doubt (a cell Arrow does not parse as Python
would, a value out of range, an unknown category, a gap where none is allowed) sends that
column of that batch to the cell-by-cell reading that `/predict`'s field validators check, so
accepted values and reject reasons are exactly the ones of the row-by-row path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter, ValidationError

from modelstore.spec import CellError
from service.features import MAX_MAGNITUDE, FeatureRule, list_of

Reasons = dict[int, str]


class ColumnReader:
    """Built once per feature: the rule, its column check, the missing-value markers."""

    def __init__(self, rule: FeatureRule, missing: frozenset[str]) -> None:
        self.rule = rule
        self.missing = missing
        self.markers = pa.array(sorted(missing), pa.string())
        self.known = pa.array(sorted(rule.known), pa.string())
        self.check = TypeAdapter(list_of(rule.value_type))

    def read(self, cells: pa.Array, reasons: Reasons) -> np.ndarray[Any, Any]:
        """Typed values (float64 with NaN for a gap, or objects with None); each row that fails
        gets its reason in `reasons` (the first per row wins, so call in feature order)."""
        fast = self._clean(cells)
        if fast is not None:
            return fast
        values = self.read_cells(cells.to_pylist(), reasons)
        return _typed(values, self.rule.type == "string")

    def _clean(self, cells: pa.Array) -> np.ndarray[Any, Any] | None:
        rule = self.rule
        gaps = pc.is_in(cells, value_set=self.markers).to_numpy(zero_copy_only=False)
        if not rule.nullable and gaps.any():
            return None
        if rule.type == "string":
            if not rule.accept_unknown:
                seen = pc.is_in(cells, value_set=self.known).to_numpy(zero_copy_only=False)
                if not (seen | gaps).all():
                    return None
            text: np.ndarray[Any, Any] = cells.to_numpy(zero_copy_only=False).astype(object)
            text[gaps] = None
            return text
        if rule.type == "boolean":
            words = pc.utf8_lower(pc.utf8_trim_whitespace(cells))
            true = pc.equal(words, "true").to_numpy(zero_copy_only=False)
            false = pc.equal(words, "false").to_numpy(zero_copy_only=False)
            if not (true | false | gaps).all():
                return None
            flags: np.ndarray[Any, Any] = true.astype(np.float64)
            flags[gaps] = math.nan
            return flags
        try:
            numbers: np.ndarray[Any, Any] = pc.cast(
                pc.if_else(gaps, "0", cells), pa.float64()
            ).to_numpy()
        except pa.ArrowInvalid:
            return None
        if not (np.abs(numbers) <= MAX_MAGNITUDE).all():  # infinity and NaN fail this too
            return None
        if rule.integer and not (numbers == np.floor(numbers)).all():
            return None
        numbers = numbers.copy()
        numbers[gaps] = math.nan
        return numbers

    def read_cells(self, cells: list[str], reasons: Reasons) -> list[Any]:
        """Cell by cell: each text read as training reads it, then the column checked by the
        native field's validator; a fault rejects its row (its value becomes a gap)."""
        rule = self.rule
        values: list[Any] = []
        for index, text in enumerate(cells):
            try:
                values.append(rule.read_text(text, self.missing))
            except CellError as exc:
                reasons.setdefault(index, f"{rule.name}: {exc}")
                values.append(None)
        try:
            self.check.validate_python(values)
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_context=False):
                message = error["msg"]
                if error["type"] == "literal_error":
                    message = rule.category_message()
                if error["input"] is None:
                    message = rule.needs_value("missing")
                row = int(error["loc"][0])
                reasons.setdefault(row, f"{rule.name}: {message}")
                values[row] = None
        return values


def _typed(values: list[Any], is_text: bool) -> np.ndarray[Any, Any]:
    if is_text:
        return np.array(values, dtype=object)
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
