"""A version's feature spec: every rule that turns outside values into model input, compiled once
from the metadata and applied by every path (`/predict`, KServe v1, each v2 layout, batch
scoring) so that no two of them can drift apart.

It owns each feature's type and range, its nullability, its categories and what happens to an
unseen one, the datatypes a v2 tensor may carry it in, and the words of each refusal. Missing has
one meaning everywhere: JSON `null`, NaN in a float tensor, and an empty string (a text cell, a
JSON string, a BYTES element) are all a missing value, accepted only where training saw gaps and
never an unseen category. Inside the service a missing value is `None`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Annotated, Any, Literal, NotRequired

import numpy as np
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictFloat,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from modelstore import Feature, Metadata
from modelstore.spec import read_cell

# The largest magnitude a number or integer feature may have. A linear model scales, weighs and
# sums its inputs: far beyond any trained range that overflows to infinity (earlier versions'
# float32 graphs top out at 3.4e38). 1e15 is past any measurement a table holds and
# leaves about 23 orders of magnitude for the model's arithmetic.
MAX_MAGNITUDE = 10**15

INTEGER_DATATYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
# The v2 datatypes each feature type accepts; the first is the one the metadata advertises.
DATATYPES: dict[str, tuple[str, ...]] = {
    "number": ("FP64", "FP32", "FP16", *sorted(INTEGER_DATATYPES)),
    "integer": ("INT64", *sorted(INTEGER_DATATYPES - {"INT64"}), "FP64", "FP32", "FP16"),
    "boolean": ("BOOL",),
    "string": ("BYTES",),
}
NUMERIC = frozenset({"number", "integer"})
MAX_SHOWN_CATEGORIES = 20
NEEDS_A_VALUE = "had no missing values in training, so it needs one"
EMPTY_IS_MISSING = "an empty string is a missing value"
NULL_IS_MISSING = "null is a missing value"


def categories_text(known: Iterable[str]) -> str:
    """The categories an error names: the first few in order and how many more, so one bad zip
    code never answers with thousands of them."""
    ordered = sorted(known)
    shown = ", ".join(repr(c) for c in ordered[:MAX_SHOWN_CATEGORIES])
    more = len(ordered) - MAX_SHOWN_CATEGORIES
    return shown + (f" and {more} more" if more > 0 else "")


def typed_dict(name: str, fields: dict[str, Any], extra: str = "forbid") -> Any:
    """A TypedDict made at run time (so mypy cannot see it); unknown keys are refused."""
    factory: Any = TypedDict
    made = factory(name, fields)
    made.__pydantic_config__ = ConfigDict(extra=extra)  # type: ignore[typeddict-item]
    return made


def list_of(item: Any) -> Any:
    """`list[item]` for a type made at run time, which a type checker cannot follow."""
    return list[item]


class ValueRefusedError(ValueError):
    """One value a feature cannot take: its row and the reason, which callers place."""

    def __init__(self, row: int, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.reason = reason


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 2007.0 (what pandas writes for an integer column with gaps)
    is the integer 2007. 2007.5 stays a float and fails the strict integer check."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _empty_is_missing(value: Any) -> Any:
    return None if value == "" else value


FiniteNumber = Annotated[
    float, Strict(), Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)
]
# Nested so the bounds stay `minimum`/`maximum` in the JSON schema the docs show.
Integer = Annotated[
    Annotated[int, Strict(), Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)],
    BeforeValidator(_whole_number),
]
Boolean = Annotated[bool, Strict()]


class FeatureRule:
    """One feature's rules. `value_type` is the pydantic type a JSON value is parsed as (the
    native instance field, the v2 fast path, scoring's column check); `check` is the same rule
    over a decoded list (binary tensors, matrices, NaN gaps), with the same outcome."""

    def __init__(self, feature: Feature, accept_unknown: bool) -> None:
        self.feature = feature
        self.name = feature.name
        self.type = feature.type
        self.nullable = feature.nullable
        self.categories = list(feature.categories or ())
        self.known = frozenset(self.categories)
        self.accept_unknown = accept_unknown and feature.type == "string"
        self.datatypes = DATATYPES[feature.type]
        self.integer = feature.type == "integer"
        self.value_type = self._value_type()
        checks = {"string": self._strings, "boolean": self._booleans}
        self._check = checks.get(feature.type, self._numbers)

    # -- words --------------------------------------------------------------------------------

    def needs_value(self, what: str) -> str:
        return f"{what}, but '{self.name}' {NEEDS_A_VALUE}"

    def category_message(self) -> str:
        return f"Input should be a category seen in training: {categories_text(self.known)}"

    def out_of_range(self, value: float) -> str:
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return "infinity is not a number this model accepts"
        limit = f"±{MAX_MAGNITUDE:.0e}"
        return f"{value!r} is beyond {limit}, the largest magnitude this service accepts"

    # -- values -------------------------------------------------------------------------------

    def _value_type(self) -> Any:
        base: Any
        if self.type == "number":
            base = FiniteNumber
        elif self.type == "integer":
            base = Integer
        elif self.type == "boolean":
            base = Boolean
        elif self.accept_unknown:
            # UNKNOWN_CATEGORIES=accept: any text, encoded as unseen; "" is never a category.
            base = Annotated[str, Strict(), Field(min_length=0 if self.nullable else 1)]
        else:
            base = Literal[tuple(self.categories)]
        if self.type == "string":
            if self.nullable:
                return Annotated[base | None, BeforeValidator(_empty_is_missing)]
            refusal = self.needs_value(EMPTY_IS_MISSING)

            def empty_is_refused(value: Any) -> Any:
                if value == "":
                    raise PydanticCustomError("missing_value", refusal)
                return value

            return Annotated[base, BeforeValidator(empty_is_refused)]
        return base | None if self.nullable else base

    def read_text(self, text: str, missing: frozenset[str]) -> Any:
        """A table cell as the value a client would send for it (None for a missing one)."""
        return None if text in missing else read_cell(text, self.type)

    def column(self, values: list[Any]) -> np.ndarray[Any, Any] | None:
        """A column of JSON values as its typed array (see `runtimes.base.typed_column`) when
        every value is plainly one `value_type` takes as it is, judged by a few calls in C per
        column; None when any value may not be, for `value_type` to decide and word. It never
        refuses, so it cannot answer differently from the rule it shortcuts."""
        kinds = set(map(type, values))
        gaps = type(None) in kinds
        if gaps and not self.nullable:
            return None
        kinds.discard(type(None))
        present = [v for v in values if v is not None] if gaps else values
        if self.type == "string":
            if kinds - {str}:
                return None
            seen = set(present)
            if "" in seen or not (self.accept_unknown or seen <= self.known):
                return None
            return np.array(values, dtype=object)
        if kinds - _COLUMN_KINDS[self.type]:
            return None
        if self.type != "boolean" and present:
            if max(present) > MAX_MAGNITUDE or min(present) < -MAX_MAGNITUDE:
                return None
            if self.integer and float in kinds and not _all_whole(present):
                return None
        return np.array(values, dtype=np.float64)  # None is NaN, True and False 1.0 and 0.0

    def count_unseen(self, values: list[Any]) -> int:
        """How many present values are categories training never saw (accepted, encoded as
        unseen by the pipeline)."""
        known = self.known
        return sum(1 for v in values if v is not None and v not in known)

    def check(self, values: list[Any]) -> list[Any]:
        """The values as the service takes them (None for missing), or a ValueRefusedError."""
        return self._check(values)

    def _missing(self, row: int, what: str) -> None:
        if not self.nullable:
            raise ValueRefusedError(row, self.needs_value(what))

    def _numbers(self, values: list[Any]) -> list[Any]:
        out: list[Any] | None = None
        for row, value in enumerate(values):
            kind = type(value)
            if kind is float:
                if value != value:  # NaN: a gap in a float tensor
                    self._missing(row, "NaN is a missing value")
                    out = out if out is not None else list(values)
                    out[row] = None
                    continue
                if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
                    raise ValueRefusedError(row, self.out_of_range(value))
                if self.integer:
                    if not value.is_integer():
                        raise ValueRefusedError(row, f"{value!r} is not a whole number")
                    out = out if out is not None else list(values)
                    out[row] = int(value)
            elif kind is int:
                if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
                    raise ValueRefusedError(row, self.out_of_range(value))
                if not self.integer:  # a number feature's value is a float, as JSON reads it
                    out = out if out is not None else list(values)
                    out[row] = float(value)
            elif value is None:
                self._missing(row, NULL_IS_MISSING)
            else:
                raise ValueRefusedError(row, f"expected a number, got {_kind(value)}")
        return out if out is not None else values

    def _booleans(self, values: list[Any]) -> list[Any]:
        for row, value in enumerate(values):
            if value is None:
                self._missing(row, NULL_IS_MISSING)
            elif type(value) is not bool:
                raise ValueRefusedError(row, f"expected true or false, got {_kind(value)}")
        return values

    def _strings(self, values: list[Any]) -> list[Any]:
        known = self.known
        out: list[Any] | None = None
        for row, value in enumerate(values):
            if type(value) is str and value in known:  # type first: lists are unhashable
                continue
            if value is None or value == "":
                self._missing(row, EMPTY_IS_MISSING if value == "" else NULL_IS_MISSING)
                out = out if out is not None else list(values)
                out[row] = None
            elif type(value) is not str:
                raise ValueRefusedError(row, f"expected text, got {_kind(value)}")
            elif not self.accept_unknown:
                raise ValueRefusedError(
                    row,
                    f"{value[:100]!r} is not a category seen in training "
                    f"({categories_text(known)})",
                )
        return out if out is not None else values


# Up to this many values, Python judges them one by one rather than numpy: in a request,
# numpy's cost per call is most of a small array's work (a one-row matrix of five features
# checked ~8 -> ~2 us; a one-row answer's finiteness and label ~10 -> ~2 us). Inputs here,
# outputs in `runtimes.base`.
FEW_VALUES = 64

# The Python types of plain JSON numbers (a bool is neither), and of the values a column of
# each type takes as they are (None aside).
PLAIN_NUMBERS = frozenset({int, float})
# The same judgement for many values at once, in pydantic-core (Rust): a strict float takes an
# int or a float, as a float (the value numpy would make of it), and refuses a bool, None, text
# and containers. Three times as fast as asking Python for each value's type.
_PLAIN_FLAT: TypeAdapter[list[float]] = TypeAdapter(list[StrictFloat])
_PLAIN_ROWS: TypeAdapter[list[tuple[float, ...]]] = TypeAdapter(list[tuple[StrictFloat, ...]])


def plain_numbers(values: list[Any], nested: bool) -> np.ndarray[Any, Any] | None:
    """`values` (flat, or a list or tuple per row, all as long, when `nested`) as a float64
    array, a row per row, when every one is a plain JSON number; None when any is not, for the
    rules to judge one by one."""
    width = 1
    if nested:
        first = values[0] if values else ()
        width = len(first) if type(first) in (list, tuple) else 0
    if len(values) * width <= FEW_VALUES:
        return _few_plain_numbers(values, nested, width)
    try:
        plain: list[Any] = (_PLAIN_ROWS if nested else _PLAIN_FLAT).validate_python(values)
    except (ValidationError, OverflowError):  # an integer beyond float64 too
        return None
    # struct packs floats into their eight bytes each in one C call per row, twice as fast as
    # numpy reads Python floats (100 rows x 30: 44 -> 23 us).
    if not nested:
        return np.frombuffer(bytearray(struct.pack(f"<{len(plain)}d", *plain)), dtype="<f8")
    width = len(plain[0]) if plain else 0
    row = struct.Struct(f"<{width}d")
    try:
        packed = bytearray().join([row.pack(*numbers) for numbers in plain])
    except struct.error:  # a row of another length
        return None
    return np.frombuffer(packed, dtype="<f8").reshape(len(plain), width)


def _few_plain_numbers(values: list[Any], nested: bool, width: int) -> np.ndarray[Any, Any] | None:
    """`plain_numbers` for a few values (one row, say): judged one by one in Python and made an
    array in one numpy call, where pydantic, struct and numpy's calls cost more than the values
    (one row of five: ~10 -> ~2 us in a request)."""
    for row in values if nested else (values,):
        if nested and (type(row) not in (list, tuple) or len(row) != width):
            return None
        for value in row:
            if type(value) is not float and type(value) is not int:
                return None
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        return None
    return array.reshape(len(values), width) if nested else array


_COLUMN_KINDS: dict[str, frozenset[type]] = {
    "number": PLAIN_NUMBERS,
    "integer": PLAIN_NUMBERS,
    "boolean": frozenset({bool}),
}


class FeatureSpec:
    """The rules of one version, in feature order; built once per process."""

    def __init__(self, metadata: Metadata, accept_unknown: bool = False) -> None:
        self.metadata = metadata
        self.accept_unknown = accept_unknown
        self.rules = [FeatureRule(f, accept_unknown) for f in metadata.features]
        self.names = [r.name for r in self.rules]
        self.by_name = {r.name: r for r in self.rules}
        self.ignored = frozenset(metadata.ignored_columns)
        self.nullable = frozenset(r.name for r in self.rules if r.nullable)
        self.all_numeric = all(r.type in NUMERIC for r in self.rules)
        # The most keys an instance may have: each feature and each column training ignored.
        self.max_keys = len(self.rules) + len(self.ignored)

    def number_matrix(self, values: Any, rows: int, rules: list[FeatureRule]) -> Any:
        """Plain numbers for `rules` (number and integer features), row by row, as one float64
        array of `rows` rows when every value is finite, within the largest magnitude, and whole
        in an integer column; None when any is not, for the rules to judge one by one. `values`
        is an array, or lists of JSON values, flat or one list (or tuple) per row."""
        if not isinstance(values, np.ndarray):
            nested = bool(values) and type(values[0]) in (list, tuple)
            values = plain_numbers(values, nested)
            if values is None:
                return None
        try:
            matrix = np.asarray(values, dtype=np.float64).reshape(rows, len(rules))
        except OverflowError:  # an integer beyond float64: the rules name it
            return None
        whole = [j for j, rule in enumerate(rules) if rule.integer]
        if matrix.size <= FEW_VALUES:
            return matrix if _plain_and_whole(matrix, whole) else None
        # Two reductions, no temporary (100 x 30: 5.1 -> 3.1 us); NaN and infinity fail too.
        if not (matrix.max() <= MAX_MAGNITUDE and matrix.min() >= -MAX_MAGNITUDE):
            return None
        if whole:
            integers = matrix[:, whole]
            if not (integers == np.floor(integers)).all():
                return None
        return matrix

    def instance_type(self) -> Any:
        """One row as a JSON object: each feature's value type; ignored columns may come along
        (a DataFrame minus its target) and are dropped."""
        fields: dict[str, Any] = {r.name: r.value_type for r in self.rules}
        fields.update(dict.fromkeys(self.metadata.ignored_columns, NotRequired[Any]))
        return typed_dict("Instance", fields)


def _plain_and_whole(matrix: np.ndarray[Any, Any], whole: list[int]) -> bool:
    """`number_matrix`'s checks on a small matrix: every value within the largest magnitude
    (NaN and infinity are not), and whole in the `whole` columns."""
    rows = matrix.tolist()
    if not all(-MAX_MAGNITUDE <= v <= MAX_MAGNITUDE for row in rows for v in row):
        return False
    return all(row[j].is_integer() for row in rows for j in whole)


def _all_whole(values: list[Any]) -> bool:
    return all(v.is_integer() for v in values if type(v) is float)


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "text", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )
