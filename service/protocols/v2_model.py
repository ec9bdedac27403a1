"""The model as the Open Inference Protocol sees it: its tensors, their checks, its answers.

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
from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError

from modelstore import Feature, Metadata
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
    encode_response,
    flatten,
    requested_outputs,
    to_bytes,
)
from service.runtimes.base import Table
from service.spec import (
    MAX_MAGNITUDE,
    BatchTooLargeError,
    categories_text,
    feature_type,
    typed_dict,
)

INTEGER_TYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
# The datatypes each feature type accepts; the first is the one the metadata advertises.
ACCEPTED_TYPES: dict[str, tuple[str, ...]] = {
    "number": ("FP64", "FP32", "FP16", *sorted(INTEGER_TYPES)),
    "integer": ("INT64", *sorted(INTEGER_TYPES - {"INT64"}), "FP64", "FP32", "FP16"),
    "boolean": ("BOOL",),
    "string": ("BYTES",),
}
_NUMERIC = frozenset({"number", "integer"})
_PLAIN_NUMBERS = frozenset({int, float})
_VECTOR_FROM = 64
_MATRIX = "a [rows, features] tensor"
# The datatypes a single tensor may have: what every feature of an all-numeric model accepts.
_MATRIX_TYPES = ("FP64", "FP32", "FP16", *sorted(INTEGER_TYPES))


def label_datatype(classes: list[Any]) -> str:
    kinds = {type(c) for c in classes}
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


class TensorModel:
    """Built once at start-up from the version's metadata."""

    def __init__(
        self,
        metadata: Metadata,
        max_batch_size: int,
        platform: str,
        accept_unknown: bool = False,
    ) -> None:
        self.metadata = metadata
        self.features = list(metadata.features)
        self.by_name = {f.name: f for f in self.features}
        self.ignored = frozenset(metadata.ignored_columns)
        self.max_batch_size = max_batch_size
        self.platform = platform
        self.all_numeric = all(f.type in _NUMERIC for f in self.features)
        self.accept_unknown = accept_unknown
        self.checks = {f.name: ColumnCheck(f, accept_unknown) for f in self.features}
        # The datatypes whose JSON values the fast path must check against the datatype's range:
        # an integer feature's INT64 values are whole and within ±1e15 by its own type already.
        self.fit_checked = {
            f.name: FIT_CHECKED - ({"INT64"} if f.type == "integer" else set())
            for f in self.features
        }
        self.integer_columns = [j for j, f in enumerate(self.features) if f.type == "integer"]
        self._fast_adapter = self._make_fast_adapter()
        self.is_classifier = metadata.task == "classification"
        self.classes = list(metadata.classes or [])
        self.label_type = label_datatype(self.classes)
        self.output_names = ["label", "probabilities"] if self.is_classifier else ["value"]

    # -- metadata -----------------------------------------------------------------------------

    def metadata_response(self) -> dict[str, Any]:
        """`GET /v2/models/{name}`: one input per feature, the outputs and the class order."""
        meta = self.metadata
        inputs = [
            {"name": f.name, "datatype": ACCEPTED_TYPES[f.type][0], "shape": [-1]}
            for f in self.features
        ]
        parameters: dict[str, Any] = {
            "task": meta.task,
            "feature_order": [f.name for f in self.features],
            "nullable_inputs": [f.name for f in self.features if f.nullable],
            "single_tensor_input": self.all_numeric,
        }
        if self.is_classifier:
            outputs = [
                {"name": "label", "datatype": self.label_type, "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(self.classes)]},
            ]
            parameters["classes"] = self.classes
        else:
            outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
        return {
            "name": meta.name,
            "versions": [str(meta.version)],
            "platform": self.platform,
            "inputs": inputs,
            "outputs": outputs,
            "parameters": parameters,
        }

    # -- inputs -------------------------------------------------------------------------------

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
        try:
            request = self._fast_adapter.validate_json(body)
        except ValidationError:
            return None
        inputs = request["inputs"]
        parameters = request.get("parameters", {})
        binary_default = parameters.get("binary_data_output", False)
        if type(binary_default) is not bool or any(
            "binary_data_size" in item.get("parameters", ()) for item in inputs
        ):
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
            data = flatten(data) if data and type(data[0]) is list else data
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
        if len(columns) != len(self.features) or not 0 < rows <= self.max_batch_size:
            return None
        return Table(columns, rows)

    def _make_fast_adapter(self) -> TypeAdapter[Any]:
        """A request schema with each feature's tensor typed like the native instance field,
        and, for an all-numeric model, one untyped [rows, features] tensor (checked at once by
        `_from_matrix`). Each input goes to its schema by name, without trying the others."""
        members: list[Any] = []
        for feature in self.features:
            fields = {
                "name": Literal[feature.name],
                "datatype": Literal[ACCEPTED_TYPES[feature.type]],
                "shape": Shape,
                "data": _list_of(feature_type(feature, self.accept_unknown)),
                "parameters": NotRequired[dict[str, Any]],
            }
            tensor = typed_dict(f"Tensor_{len(members)}", fields, extra="ignore")
            members.append(Annotated[tensor, Tag(feature.name)])
        if self.all_numeric:
            fields = {
                "name": str,
                "datatype": Literal[_MATRIX_TYPES],
                "shape": Shape,
                "data": list[Any],
                "parameters": NotRequired[dict[str, Any]],
            }
            members.append(Annotated[typed_dict("Matrix", fields, extra="ignore"), Tag(_MATRIX)])
        names = frozenset(self.by_name)

        def route(item: Any) -> str | None:
            name = item.get("name") if isinstance(item, dict) else None
            return name if type(name) is str and name in names else _MATRIX

        one_of: Any = Annotated[Union[tuple(members)], Discriminator(route)]  # noqa: UP007
        envelope = {
            "id": NotRequired[str],
            "parameters": NotRequired[dict[str, Any]],
            "inputs": Annotated[_list_of(one_of), Field(min_length=1)],
            "outputs": NotRequired[list[OutputJson]],
        }
        return TypeAdapter(typed_dict("FastInferRequest", envelope, extra="ignore"))

    def table(self, inputs: list[Tensor]) -> Table:
        """Checked columns from the request's tensors, in either layout."""
        if len(inputs) == 1 and inputs[0].name not in self.by_name and len(inputs[0].shape) == 2:
            return self._from_matrix(inputs[0])
        columns: dict[str, list[Any]] = {}
        rows = -1
        checks = self.checks
        for tensor in inputs:
            name = tensor.name
            check = checks.get(name)
            if check is None:
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
            columns[name] = check.check(tensor, elements(tensor))
        missing = [f.name for f in self.features if f.name not in columns]
        if missing:
            raise TensorError(f"missing inputs: {', '.join(missing)} (one tensor per feature)")
        return Table(columns, rows)

    def _from_matrix(self, tensor: Tensor) -> Table:
        n, width = tensor.shape
        if not self.all_numeric:
            kinds = sorted({f.type for f in self.features if f.type not in _NUMERIC})
            raise TensorError(
                f"input '{tensor.name}': a single [rows, features] tensor only works when every "
                f"feature is numeric, and this model has {' and '.join(kinds)} features: send "
                "one tensor per feature, named after it"
            )
        if width != len(self.features):
            raise TensorError(
                f"input '{tensor.name}' has {width} columns but the model has "
                f"{len(self.features)} features: {', '.join(self.by_name)}"
            )
        self._check_rows(n)
        accepted = all(tensor.datatype in self.checks[f.name].accepted for f in self.features)
        # numpy pays off from a few dozen values; below that its per-call cost dominates.
        if accepted and n * width >= _VECTOR_FROM:
            raw = tensor.data
            plain = isinstance(raw, np.ndarray) or set(map(type, raw)) <= _PLAIN_NUMBERS
            fast = self._plain_matrix(raw, n, width) if plain else None
            if fast is not None:
                return fast
        data = elements(tensor)
        # Gaps, other types or faults: column by column, naming the first fault.
        columns = {
            feature.name: self.checks[feature.name].check(tensor, data[j::width], column=j)
            for j, feature in enumerate(self.features)
        }
        return Table(columns, n)

    def _plain_matrix(self, data: Any, n: int, width: int) -> Table | None:
        """Finite, bounded numbers (whole ones in integer columns), checked all at once."""
        try:
            values = np.asarray(data, dtype=np.float64).reshape(n, width)
        except OverflowError:  # an integer beyond float64: the column checks name it
            return None
        if not (np.abs(values) <= MAX_MAGNITUDE).all():  # NaN and infinity fail this too
            return None
        whole = values[:, self.integer_columns]
        if whole.size and not (whole == np.floor(whole)).all():
            return None
        return Table(dict(zip(self.by_name, values.T.tolist(), strict=True)), n)

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

    # -- outputs ------------------------------------------------------------------------------

    def answer(
        self,
        header: dict[str, Any],
        output: np.ndarray[Any, Any],
        requested: list[RequestedOutput] | None,
        binary: bool,
    ) -> tuple[bytes, int | None]:
        """The response body with the outputs asked for (all by default), each JSON or binary,
        and the JSON header's length when any is binary."""
        wanted = requested or [RequestedOutput(name, binary) for name in self.output_names]
        entries, chunks = [], []
        for name, as_binary in wanted:
            datatype, shape, values = self._output(name, output)
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
            if as_binary:
                raw = to_bytes(datatype, values)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = values
            entries.append(entry)
        header["outputs"] = entries
        return encode_response(header, chunks)

    def check_requested(self, requested: list[RequestedOutput] | None) -> None:
        for item in requested or ():
            if item.name not in self.output_names:
                raise TensorError(
                    f"unknown output '{item.name}': this model answers "
                    f"{' and '.join(self.output_names)}"
                )

    def _output(self, name: str, output: np.ndarray[Any, Any]) -> tuple[str, list[int], Any]:
        n = output.shape[0]
        if name == "value":
            return "FP64", [n], output.tolist()
        if name == "probabilities":
            return "FP64", [n, output.shape[1]], output.ravel().tolist()
        classes = self.classes
        return self.label_type, [n], [classes[i] for i in output.argmax(axis=1).tolist()]


def _fits(item: dict[str, Any], data: list[Any]) -> bool:
    """Whether a tensor's values fit its datatype; if not, the general path names the fault."""
    try:
        check_fits(item["name"], item["datatype"], data)
    except TensorError:
        return False
    return True


def _list_of(item: Any) -> Any:
    """`list[item]` for a type made at run time, which a type checker cannot follow."""
    return list[item]


def _rows_of(tensor: Tensor) -> int:
    shape = tensor.shape
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return shape[0]
    raise TensorError(
        f"input '{tensor.name}' has shape {list(shape)}: a feature's tensor is [rows] or [rows, 1]"
    )


class ColumnCheck:
    """One feature's rules, prepared at start-up; `check` runs once per tensor per request."""

    def __init__(self, feature: Feature, accept_unknown: bool = False) -> None:
        self.feature = feature
        self.accept_unknown = accept_unknown
        self.name = feature.name
        self.accepted = frozenset(ACCEPTED_TYPES[feature.type])
        self.known = frozenset(feature.categories or ())
        self.nullable = feature.nullable
        self.integer = feature.type == "integer"
        checks = {"string": self._strings, "boolean": self._booleans}
        self._check = checks.get(feature.type, self._numbers)

    def check(self, tensor: Tensor, values: list[Any], column: int = -1) -> list[Any]:
        """The values, checked as /predict checks them; None marks a missing value."""
        if tensor.datatype not in self.accepted:
            accepted = ", ".join(ACCEPTED_TYPES[self.feature.type])
            raise TensorError(
                f"{_where(tensor, column)} is {tensor.datatype}, but '{self.name}' is a "
                f"{self.feature.type} feature: send {accepted}"
            )
        return self._check(tensor, values, column)

    def _missing(self, tensor: Tensor, column: int, row: int, what: str) -> None:
        if not self.nullable:
            raise TensorError(
                f"{_where(tensor, column)} row {row}: {what}, but '{self.name}' had no missing "
                "values in training, so it needs one"
            )

    def _numbers(self, tensor: Tensor, values: list[Any], column: int) -> list[Any]:
        out: list[Any] | None = None
        for row, value in enumerate(values):
            kind = type(value)
            if kind is float:
                if value != value:  # NaN: a gap in a binary float tensor
                    self._missing(tensor, column, row, "NaN is a missing value")
                    out = out if out is not None else list(values)
                    out[row] = None
                    continue
                if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
                    raise TensorError(_out_of_range(_where(tensor, column), row, value))
                if self.integer:
                    if not value.is_integer():
                        raise TensorError(
                            f"{_where(tensor, column)} row {row}: {value!r} is not a whole number"
                        )
                    out = out if out is not None else list(values)
                    out[row] = int(value)
            elif kind is int:
                if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
                    raise TensorError(_out_of_range(_where(tensor, column), row, value))
                if not self.integer:  # a number feature's value is a float, as /predict reads it
                    out = out if out is not None else list(values)
                    out[row] = float(value)
            elif value is None:
                self._missing(tensor, column, row, "null is a missing value")
            else:
                raise TensorError(
                    f"{_where(tensor, column)} row {row}: expected a number, got {_kind(value)} "
                    f"({tensor.datatype})"
                )
        return out if out is not None else values

    def _booleans(self, tensor: Tensor, values: list[Any], column: int) -> list[Any]:
        for row, value in enumerate(values):
            if value is None:
                self._missing(tensor, column, row, "null is a missing value")
            elif type(value) is not bool:
                raise TensorError(
                    f"{_where(tensor, column)} row {row}: expected true or false, "
                    f"got {_kind(value)}"
                )
        return values

    def _strings(self, tensor: Tensor, values: list[Any], column: int) -> list[Any]:
        known = self.known
        out: list[Any] | None = None
        for row, value in enumerate(values):
            if type(value) is str and value in known:  # type first: lists are unhashable
                continue
            if value is None or value == "":
                self._missing(tensor, column, row, "an empty or null value is missing")
                out = out if out is not None else list(values)
                out[row] = None
            elif type(value) is not str:
                raise TensorError(
                    f"{_where(tensor, column)} row {row}: expected text, got {_kind(value)}"
                )
            elif self.accept_unknown:
                continue  # encoded as unseen by the pipeline, and counted by the runtime
            else:
                raise TensorError(
                    f"{_where(tensor, column)} row {row}: {value[:100]!r} is not a category "
                    f"seen in training ({categories_text(known)})"
                )
        return out if out is not None else values


def _where(tensor: Tensor, column: int) -> str:
    return f"input '{tensor.name}'" + (f" column {column}" if column >= 0 else "")


def _out_of_range(where: str, row: int, value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return f"{where} row {row}: infinity is not a number this model accepts"
    return (
        f"{where} row {row}: {value!r} is beyond ±{MAX_MAGNITUDE:.0e}, the largest magnitude "
        "this service accepts"
    )


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "text", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )
