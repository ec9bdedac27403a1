"""The Open Inference Protocol's tensors on the wire: JSON and the binary tensor extension.

Only the encoding lives here (shapes, datatypes, byte layouts, `Inference-Header-Content-Length`);
what the tensors mean for the model is `v2_model`'s business. Every fault a client can make is a
`TensorError` whose message names the tensor.
"""

from __future__ import annotations

import math
import struct
from typing import Annotated, Any, Literal, NamedTuple, NotRequired

import numpy as np
import orjson
from pydantic import Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

# Datatype -> little-endian numpy dtype of one element; BYTES is length-prefixed instead.
NUMPY_TYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = (*NUMPY_TYPES, "BYTES")
HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")
# A tensor here is rank 1 or 2, and no dimension can reach this: shapes are bounded before any
# arithmetic on them, so no shape costs time or memory to check.
MAX_DIMENSION = 2**31 - 1
Shape = Annotated[
    list[Annotated[int, Strict(), Field(ge=0, le=MAX_DIMENSION)]], Field(min_length=1, max_length=2)
]
# The JSON numbers each datatype can hold: (low, high, whole numbers only).
_FITS: dict[str, tuple[float, float, bool]] = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max), True)
    for name, dtype in NUMPY_TYPES.items()
    if name.startswith(("INT", "UINT"))
}
_FITS["FP16"] = (-65504, 65504, False)
FIT_CHECKED = frozenset(_FITS)


class TensorError(Exception):
    """A request the protocol cannot accept: 400 with `{"error": message}`."""


# Named tuples rather than dataclasses: one is made per tensor per request, and a tuple is
# several times cheaper to build than a frozen dataclass.
class Tensor(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    # Flattened in row-major order: Python scalars (str for BYTES, None for null), or, for a
    # binary numeric tensor, the numpy array over its bytes (`elements` gives a list).
    data: list[Any]


def elements(tensor: Tensor) -> list[Any]:
    """A tensor's elements as Python scalars."""
    data = tensor.data
    if isinstance(data, np.ndarray):
        listed: list[Any] = data.tolist()
        return listed
    return data


class RequestedOutput(NamedTuple):
    name: str
    binary: bool


class InferRequest(NamedTuple):
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output, each binary if `binary_default`
    binary_default: bool


class _TensorJson(TypedDict):
    name: Annotated[str, Field(min_length=1)]
    datatype: Literal[DATATYPES]  # type: ignore[valid-type]
    shape: Shape
    data: NotRequired[list[Any]]
    parameters: NotRequired[dict[str, Any]]


class OutputJson(TypedDict):
    name: str
    parameters: NotRequired[dict[str, Any]]


class _RequestJson(TypedDict):
    id: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]
    inputs: Annotated[list[_TensorJson], Field(min_length=1)]
    outputs: NotRequired[list[OutputJson]]


# The envelope, parsed and checked in one pass by pydantic-core (several times faster than the
# same checks in Python). Its JSON parser reads the NaN and Infinity tokens Python clients such
# as tritonclient write for numpy values: a NaN is then a missing value, an infinity an error.
_ENVELOPE: TypeAdapter[_RequestJson] = TypeAdapter(_RequestJson)


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an inference request, JSON alone or a JSON header followed by binary tensors."""
    binary = b""
    if header_length is not None:
        length = _header_length(header_length, len(body))
        body, binary = body[:length], body[length:]
    try:
        request = _ENVELOPE.validate_json(body)
    except ValidationError as exc:
        raise TensorError(_describe(exc)) from None
    parameters = request.get("parameters", {})
    binary_default = parameters.get("binary_data_output", False)
    if type(binary_default) is not bool:
        raise TensorError("parameter 'binary_data_output' must be true or false")
    offset = 0
    tensors = []
    for item in request["inputs"]:
        tensor, offset = _decode_input(item, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise TensorError(
            f"the body holds {len(binary) - offset} bytes after the last binary input: "
            "each input's 'binary_data_size' must count its bytes exactly"
        )
    return InferRequest(
        id=request.get("id"),
        inputs=tensors,
        outputs=requested_outputs(request.get("outputs"), binary_default),
        binary_default=binary_default,
    )


def _describe(exc: ValidationError) -> str:
    """The first few faults as `inputs[2].shape[0]: message`, never the values sent."""
    parts = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False)[:5]:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        message = error["msg"]
        if error["type"] == "json_invalid":
            message = f"the request is not valid JSON: {message}"
        parts.append(f"{path.lstrip('.')}: {message}" if path else message)
    return "; ".join(parts)


def _header_length(value: str, body_size: int) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        raise TensorError("Inference-Header-Content-Length must be a whole number of bytes")
    length = int(value)
    if not 0 < length <= body_size:
        raise TensorError(
            f"Inference-Header-Content-Length is {length} but the body has {body_size} bytes"
        )
    return length


def _decode_input(item: _TensorJson, binary: bytes, offset: int) -> tuple[Tensor, int]:
    name, shape = item["name"], item["shape"]
    size = shape[0] if len(shape) == 1 else math.prod(shape)
    parameters = item.get("parameters")
    if parameters is not None and "binary_data_size" in parameters:
        binary_size = parameters["binary_data_size"]
        data = _binary_input(item, binary_size, size, binary[offset:])
        offset += binary_size
    else:
        raw = item.get("data")
        if raw is None:
            raise TensorError(f"input '{name}': send 'data', or 'binary_data_size' and the bytes")
        data = flatten(raw) if raw and type(raw[0]) is list else raw
        if len(data) != size:
            raise TensorError(
                f"input '{name}': shape {shape} holds {size} elements but 'data' has {len(data)}"
            )
        check_fits(name, item["datatype"], data)
    return Tensor(name, item["datatype"], shape, data), offset


def _binary_input(item: _TensorJson, binary_size: Any, size: int, rest: bytes) -> list[Any]:
    where = f"input '{item['name']}'"
    if type(binary_size) is not int or binary_size < 0:
        raise TensorError(f"{where}: 'binary_data_size' must be a whole number of bytes")
    if "data" in item:
        raise TensorError(f"{where}: send 'data' or 'binary_data_size', not both")
    if binary_size > len(rest):
        raise TensorError(
            f"{where}: 'binary_data_size' is {binary_size} but only "
            f"{len(rest)} bytes of binary data are left"
        )
    return from_bytes(rest[:binary_size], item["datatype"], size, where)


def check_fits(name: str, datatype: str, data: list[Any]) -> None:
    """JSON numbers must fit the datatype they are declared as: an INT8 tensor holds whole
    numbers from -128 to 127, as a binary one could. Other kinds of value (text, booleans,
    null) are left to the feature's own check, which names what it expects."""
    fits = _FITS.get(datatype)
    if fits is None:
        return
    low, high, whole = fits
    for index, value in enumerate(data):
        kind = type(value)
        if kind is int:
            if low <= value <= high:
                continue
        elif kind is float:
            if whole:
                if value.is_integer() and low <= value <= high:
                    continue
            elif value != value or low <= value <= high:  # NaN: a missing value
                continue
        else:
            continue
        what = "a whole number " if whole else "a number "
        raise TensorError(
            f"input '{name}' element {index}: {_short(value)} does not fit {datatype} "
            f"({what}from {low} to {high})"
        )


def _short(value: Any) -> str:
    text = repr(value) if type(value) is float else str(value)[:40]
    return text if len(text) < 40 else text[:20] + "..."


def flatten(nested: list[Any]) -> list[Any]:
    """Row-major flattening of nested lists, as the protocol allows `data` to be sent."""
    flat: list[Any] = []
    stack = [iter(nested)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def from_bytes(raw: bytes, datatype: str, size: int, where: str) -> list[Any]:
    """One tensor's elements from the binary layout (REST's extension, gRPC's raw contents)."""
    if datatype == "BYTES":
        return _split_bytes(raw, size, where)
    dtype = np.dtype(NUMPY_TYPES[datatype])
    if len(raw) != size * dtype.itemsize:
        raise TensorError(
            f"{where}: {size} {datatype} elements take {size * dtype.itemsize} bytes, "
            f"not {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)  # type: ignore[return-value]  # see Tensor.data


def _split_bytes(raw: bytes, size: int, where: str) -> list[Any]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes (UTF-8 here)."""
    values: list[Any] = []
    offset = 0
    for index in range(size):
        if offset + 4 > len(raw):
            raise TensorError(f"{where}: binary data ends before element {index}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise TensorError(f"{where}: element {index} runs past the end of its binary data")
        try:
            values.append(raw[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise TensorError(f"{where}: element {index} is not UTF-8 text") from None
        offset += length
    if offset != len(raw):
        raise TensorError(f"{where}: {len(raw) - offset} bytes left after {size} elements")
    return values


def requested_outputs(
    outputs: list[OutputJson] | None, binary_default: bool
) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    requested = []
    names: set[str] = set()
    for item in outputs:
        if item["name"] in names:  # each output once: a repeated name would multiply the answer
            raise TensorError(f"output '{item['name'][:100]}' is requested twice")
        names.add(item["name"])
        binary = item.get("parameters", {}).get("binary_data", binary_default)
        if type(binary) is not bool:
            raise TensorError(f"output '{item['name']}': 'binary_data' must be true or false")
        requested.append(RequestedOutput(item["name"], binary))
    return requested


def encode_response(header: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, int | None]:
    """The JSON header, then any binary outputs' bytes; and the header's length if there are.
    Outputs' data may be float64 arrays, written as JSON numbers alike."""
    body = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return body, None
    return b"".join([body, *chunks]), len(body)


def to_bytes(datatype: str, values: list[Any]) -> bytes:
    """One output's elements in the binary extension's layout."""
    if datatype == "BYTES":
        encoded = [str(v).encode("utf-8") for v in values]
        return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
    return np.asarray(values, dtype=NUMPY_TYPES[datatype]).tobytes()
