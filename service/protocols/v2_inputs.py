"""A v2 request's inputs as the model's checked rows, by the version's feature spec.

Two input layouts are accepted. One tensor per feature, named after it (shape [n] or [n, 1]),
works for every model. A single 2-D tensor [n, n_features] in feature order, with any name,
works when every feature is a number or an integer: it is what KServe's sklearn server and
MLServer's clients send.

A missing value (for a feature that had gaps in training) is JSON `null` in any tensor, NaN in
a float tensor (binary, or the NaN token Python clients write into JSON), and an empty string
in a BYTES tensor (no category is ever empty: training reads an empty cell as missing). Binary
integer and boolean tensors cannot carry one: send an integer feature with gaps as FP64.

The values obey the same rules as `/predict` (types, known categories, finite numbers within
±MAX_MAGNITUDE, whole numbers for integers), and each error names the input and the row.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NotRequired, Union

import numpy as np
import orjson
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from service.features import (
    INTEGER_DATATYPES,
    NUMERIC,
    FeatureRule,
    FeatureSpec,
    ValueRefusedError,
    list_of,
    plain_numbers,
    typed_dict,
)
from service.protocols.v2_tensors import (
    FIT_CHECKED,
    InferRequest,
    OutputJson,
    RequestedOutput,
    Shape,
    Tensor,
    TensorError,
    check_fits,
    decode_request,
    elements,
    flatten,
    requested_outputs,
)
from service.runtimes.base import Table
from service.spec import ONE_PASS_BYTES, BatchTooLargeError

_MATRIX = "a [rows, features] tensor"
# The datatypes a single tensor may have: what every feature of an all-numeric model accepts.
_MATRIX_TYPES = ("FP64", "FP32", "FP16", *sorted(INTEGER_DATATYPES))


def _refuse(value: Any) -> Any:
    raise ValueError("the general path reads it")


# A tensor's parameters on the fast path: a tensor whose data is binary (`binary_data_size`)
# fails it there, in pydantic-core, and takes the general path.
_JsonTensorParameters = typed_dict(
    "JsonTensorParameters",
    {"binary_data_size": NotRequired[Annotated[Any, AfterValidator(_refuse)]]},
    extra="allow",
)


class TensorInputs:
    """Built once at start-up from the version's feature spec."""

    def __init__(self, spec: FeatureSpec, max_batch_size: int) -> None:
        self.spec = spec
        self.rules = spec.rules
        self.by_name = spec.by_name
        self.ignored = spec.ignored
        self.max_batch_size = max_batch_size
        self.all_numeric = spec.all_numeric
        # The datatypes a single [rows, features] tensor may have: those every feature takes.
        takes = [frozenset(r.datatypes) for r in self.rules]
        self.matrix_types = frozenset.intersection(*takes) if takes else frozenset()
        # The datatypes whose JSON values the fast path must check against the datatype's range:
        # an integer feature's INT64 values are whole and within ±1e15 by its own type already.
        self.fit_checked = {
            r.name: FIT_CHECKED - ({"INT64"} if r.integer else set()) for r in self.rules
        }
        classifier = spec.metadata.task == "classification"
        self.output_names = ["label", "probabilities"] if classifier else ["value"]
        self._fast_adapter = self._make_fast_adapter()

    def decode(self, body: bytes, header_length: str | None) -> tuple[InferRequest, Table]:
        """The request and its checked rows.

        A JSON request with one tensor per feature, every value valid as `/predict` takes it,
        is parsed and checked in one pass by a validator made for this model (pydantic-core, in
        Rust), as `/predict` is; so is the envelope of a single [rows, features] tensor.
        Anything else (binary tensors, NaN or empty-text gaps, nested per-feature data, and
        every fault) takes the general path, which accepts the same requests and names each
        fault.
        """
        if header_length is None:
            fast = self._fast(body)
            if fast is not None:
                return fast
        request = decode_request(body, header_length)
        self.check_requested(request.outputs)
        return request, self.table(request.inputs)

    def _fast(self, body: bytes) -> tuple[InferRequest, Table] | None:
        payload = _parsed(body)
        try:
            if payload is _UNPARSED:
                request = self._fast_adapter.validate_json(body)
            else:
                request = self._fast_adapter.validate_python(payload)
        except ValidationError:
            return None
        inputs = request["inputs"]
        parameters = request.get("parameters", {})
        binary_default = parameters.get("binary_data_output", False)
        if type(binary_default) is not bool:
            return None
        try:
            outputs = requested_outputs(request.get("outputs"), binary_default)
            self.check_requested(outputs)
        except TensorError:
            return None
        if inputs[0]["name"] in self.by_name:
            table = self._fast_columns(inputs)
        elif len(inputs) == 1 and len(inputs[0]["shape"]) == 2:
            matrix = inputs[0]
            data = matrix["data"]
            nested = bool(data) and type(data[0]) is list
            plain = _plain_rows(data, matrix["shape"]) if nested else None
            if plain is not None and matrix["datatype"] == "FP64":
                data = plain  # every value a JSON number that float64 holds as it is
            else:
                data = flatten(data) if nested else data
                if len(data) != math.prod(matrix["shape"]) or not _fits(matrix, data):
                    return None
            tensor = Tensor(matrix["name"], matrix["datatype"], matrix["shape"], data)
            table = self._from_matrix(tensor)  # its faults are the general path's, word for word
        else:
            return None
        if table is None:
            return None
        return InferRequest(request.get("id"), [], outputs, binary_default), table

    def _fast_columns(self, inputs: list[dict[str, Any]]) -> Table | None:
        """Tensors already typed by the validator: only shapes and row counts are left."""
        columns: dict[str, list[Any]] = {}
        rows = -1
        for item in inputs:
            name, shape, data = item["name"], item["shape"], item["data"]
            if name in columns or name not in self.by_name or len(data) != shape[0]:
                return None
            if len(shape) == 2 and shape[1] != 1:
                return None
            if item["datatype"] in self.fit_checked[name] and not _fits(item, data):
                return None
            if rows != shape[0]:
                if rows >= 0:
                    return None
                rows = shape[0]
            columns[name] = data
        if len(columns) != len(self.rules) or not 0 < rows <= self.max_batch_size:
            return None
        return Table(columns, rows)

    def _make_fast_adapter(self) -> TypeAdapter[Any]:
        """A request schema with each feature's tensor typed like the native instance field,
        and, for an all-numeric model, one untyped [rows, features] tensor (checked at once by
        `_from_matrix`). A feature's tensor is found by its name as a tag (in pydantic-core,
        with no Python call per input: one row of penguins' seven tensors, 10.6 -> 6.4 us); an
        input named after no feature may be the matrix."""
        members: list[Any] = []
        for rule in self.rules:
            fields = {
                "name": Literal[rule.name],
                "datatype": Literal[rule.datatypes],
                "shape": Shape,
                "data": list_of(rule.value_type),
                "parameters": NotRequired[_JsonTensorParameters],
            }
            members.append(typed_dict(f"Tensor_{len(members)}", fields, extra="ignore"))
        one_of: Any = members[0]
        if len(members) > 1:
            one_of = Annotated[Union[tuple(members)], Field(discriminator="name")]  # noqa: UP007
        if self.all_numeric:
            names = frozenset(self.by_name)

            def no_feature(name: str) -> str:
                if name in names:  # a feature's tensor that its own schema refused
                    raise ValueError("a feature's tensor")
                return name

            fields = {
                "name": Annotated[str, AfterValidator(no_feature)],
                "datatype": Literal[_MATRIX_TYPES],
                "shape": Shape,
                "data": list[Any],
                "parameters": NotRequired[_JsonTensorParameters],
            }
            matrix = typed_dict("Matrix", fields, extra="ignore")
            one_of = Annotated[Union[one_of, matrix], Field(union_mode="left_to_right")]  # noqa: UP007
        envelope = {
            "id": NotRequired[str],
            "parameters": NotRequired[dict[str, Any]],
            "inputs": Annotated[list_of(one_of), Field(min_length=1)],
            "outputs": NotRequired[list[OutputJson]],
        }
        return TypeAdapter(typed_dict("FastInferRequest", envelope, extra="ignore"))

    def table(self, inputs: list[Tensor]) -> Table:
        """Checked columns from the request's tensors, in either layout."""
        if len(inputs) == 1 and inputs[0].name not in self.by_name and len(inputs[0].shape) == 2:
            return self._from_matrix(inputs[0])
        columns: dict[str, list[Any]] = {}
        rows = -1
        for tensor in inputs:
            name = tensor.name
            rule = self.by_name.get(name)
            if rule is None:
                if name in self.ignored:
                    continue
                raise TensorError(self._unknown_input(tensor))
            if name in columns:
                raise TensorError(f"input '{name}' is sent twice")
            n = _rows_of(tensor)
            if n != rows:
                if rows >= 0:
                    raise TensorError(
                        f"input '{name}' has {n} rows but the inputs before it have {rows}"
                    )
                rows = self._check_rows(n)
            columns[name] = _checked(rule, tensor, elements(tensor))
        missing = [n for n in self.spec.names if n not in columns]
        if missing:
            raise TensorError(f"missing inputs: {', '.join(missing)} (one tensor per feature)")
        return Table(columns, rows)

    def _from_matrix(self, tensor: Tensor) -> Table:
        n, width = tensor.shape
        if not self.all_numeric:
            kinds = sorted({r.type for r in self.rules if r.type not in NUMERIC})
            raise TensorError(
                f"input '{tensor.name}': a single [rows, features] tensor only works when every "
                f"feature is numeric, and this model has {' and '.join(kinds)} features: send "
                "one tensor per feature, named after it"
            )
        if width != len(self.rules):
            raise TensorError(
                f"input '{tensor.name}' has {width} columns but the model has "
                f"{len(self.rules)} features: {', '.join(self.by_name)}"
            )
        self._check_rows(n)
        # Checked whole (`number_matrix`), however few the values: the model reads the typed
        # block this makes, which the column by column path would have to build after (1 row
        # of 30 features: ~150 -> ~130 us a request, in process).
        if tensor.datatype in self.matrix_types:
            fast = self._plain_matrix(tensor.data, n, width)
            if fast is not None:
                return fast
        raw = tensor.data
        data = raw.ravel().tolist() if isinstance(raw, np.ndarray) else elements(tensor)
        # Gaps, other types or faults: column by column, naming the first fault.
        columns = {
            rule.name: _checked(rule, tensor, data[j::width], column=j)
            for j, rule in enumerate(self.rules)
        }
        return Table(columns, n)

    def _plain_matrix(self, data: Any, n: int, width: int) -> Table | None:
        """Finite, bounded numbers (whole ones in integer columns), checked all at once."""
        values = self.spec.number_matrix(data, n, self.rules)
        if values is None:
            return None
        # Every feature is a number here: the block is the whole table.
        return Table.of_numbers(values.T, self.spec.names)

    def _check_rows(self, n: int) -> int:
        if n == 0:
            raise TensorError("the inputs hold no rows")
        if n > self.max_batch_size:
            raise BatchTooLargeError(
                f"{n} rows is more than MAX_BATCH_SIZE ({self.max_batch_size})"
            )
        return n

    def _unknown_input(self, tensor: Tensor) -> str:
        if len(tensor.shape) == 2 and self.all_numeric:
            layout = "; or one [rows, features] tensor in feature order"
        else:
            layout = ""
        return (
            f"unknown input '{tensor.name}': this model takes one tensor per feature, "
            f"named {', '.join(self.by_name)}{layout}"
        )

    def check_requested(self, requested: list[RequestedOutput] | None) -> None:
        for item in requested or ():
            if item.name not in self.output_names:
                raise TensorError(
                    f"unknown output '{item.name}': this model answers "
                    f"{' and '.join(self.output_names)}"
                )


# A body orjson does not parse (NaN tokens, integers beyond 64 bits, not JSON), or too small
# for parsing first to pay: pydantic reads the text itself.
_UNPARSED = object()


def _parsed(body: bytes) -> Any:
    """A large body parsed by orjson, which reads numbers two to three times as fast as
    pydantic's JSON reader; the validator then checks the parsed values as it would the text."""
    if len(body) <= ONE_PASS_BYTES:
        return _UNPARSED
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNPARSED


def _plain_rows(data: list[Any], shape: list[int]) -> np.ndarray[Any, Any] | None:
    """A [rows][features] list of lists of plain JSON numbers as one float64 array (see
    `plain_numbers`); None when anything else is there (the general path names it)."""
    if len(shape) != 2 or len(data) != shape[0] or len(data[0]) != shape[1]:
        return None
    # Every row a list as long as the first (`plain_numbers` checks), every value a number.
    return plain_numbers(data, nested=True)


def _fits(item: dict[str, Any], data: list[Any]) -> bool:
    """Whether a tensor's values fit its datatype; if not, the general path names the fault."""
    try:
        check_fits(item["name"], item["datatype"], data)
    except TensorError:
        return False
    return True


def _rows_of(tensor: Tensor) -> int:
    shape = tensor.shape
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return shape[0]
    raise TensorError(
        f"input '{tensor.name}' has shape {list(shape)}: a feature's tensor is [rows] or [rows, 1]"
    )


def _where(tensor: Tensor, column: int) -> str:
    return f"input '{tensor.name}'" + (f" column {column}" if column >= 0 else "")


def _checked(rule: FeatureRule, tensor: Tensor, values: list[Any], column: int = -1) -> list[Any]:
    """A tensor's values for one feature, checked by the feature's rule; faults name the input
    (and the column of a matrix) and the row."""
    if tensor.datatype not in rule.datatypes:
        raise TensorError(
            f"{_where(tensor, column)} is {tensor.datatype}, but '{rule.name}' is a "
            f"{rule.type} feature: send {', '.join(rule.datatypes)}"
        )
    try:
        return rule.check(values)
    except ValueRefusedError as fault:
        detail = f"{_where(tensor, column)} row {fault.row}: {fault.reason}"
        raise TensorError(detail) from None
