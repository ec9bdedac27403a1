"""The Open Inference Protocol's tensors on the wire: JSON and the binary tensor extension.

Only the encoding lives here (shapes, datatypes, byte layouts, `Inference-Header-Content-Length`);
what the tensors mean for the model is `service.oip`'s business. Every fault a client can make
is a `TensorError` whose message names the tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

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


class TensorError(Exception):
    """A request the protocol cannot accept: 400 with `{"error": message}`."""


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]  # flattened in row-major order; Python scalars, str for BYTES, None for null


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output, each binary if `binary_default`
    binary_default: bool


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an inference request, JSON alone or a JSON header followed by binary tensors."""
    binary = b""
    if header_length is not None:
        length = _header_length(header_length, len(body))
        body, binary = body[:length], body[length:]
    request = _parse_json(body)
    if not isinstance(request, dict):
        raise TensorError("the request must be a JSON object with an 'inputs' list")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("'inputs' must be a non-empty list of tensors")
    request_id = request.get("id")
    if "id" in request and not isinstance(request_id, str):
        raise TensorError("'id' must be a string")
    parameters = _parameters(request, "the request")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise TensorError("parameter 'binary_data_output' must be true or false")
    offset = 0
    tensors = []
    for index, item in enumerate(inputs):
        tensor, offset = _decode_input(item, index, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise TensorError(
            f"the body holds {len(binary) - offset} bytes after the last binary input: "
            "each input's 'binary_data_size' must count its bytes exactly"
        )
    return InferRequest(
        id=request_id,
        inputs=tensors,
        outputs=_requested_outputs(request, binary_default),
        binary_default=binary_default,
    )


def _parse_json(body: bytes) -> Any:
    """orjson first; Python's parser for the NaN and Infinity tokens that Python clients (such
    as tritonclient with a numpy array) write into JSON, so a NaN reads as a missing value."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise TensorError(f"the request is not valid JSON: {exc}") from None


def _header_length(value: str, body_size: int) -> int:
    if not value.isdigit():
        raise TensorError("Inference-Header-Content-Length must be a whole number of bytes")
    length = int(value)
    if not 0 < length <= body_size:
        raise TensorError(
            f"Inference-Header-Content-Length is {length} but the body has {body_size} bytes"
        )
    return length


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    if "parameters" not in item:
        return {}
    parameters = item["parameters"]
    if not isinstance(parameters, dict):
        raise TensorError(f"'parameters' of {where} must be an object")
    return parameters


def _decode_input(item: Any, index: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise TensorError(f"inputs[{index}] must be an object with name, datatype, shape, data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise TensorError(f"inputs[{index}] needs a 'name'")
    where = f"input '{name}'"
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise TensorError(f"{where}: datatype must be one of {', '.join(DATATYPES)}")
    shape = item.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise TensorError(f"{where}: 'shape' must be a list of sizes such as [3] or [3, 1]")
    size = math.prod(shape)
    parameters = _parameters(item, where)
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if type(binary_size) is not int or binary_size < 0:
            raise TensorError(f"{where}: 'binary_data_size' must be a whole number of bytes")
        if "data" in item:
            raise TensorError(f"{where}: send 'data' or 'binary_data_size', not both")
        end = offset + binary_size
        if end > len(binary):
            raise TensorError(
                f"{where}: 'binary_data_size' is {binary_size} but only "
                f"{len(binary) - offset} bytes of binary data are left"
            )
        data = _from_bytes(binary[offset:end], datatype, size, where)
        offset = end
    else:
        raw = item.get("data")
        if not isinstance(raw, list):
            raise TensorError(f"{where}: 'data' must be a list (or send it as binary data)")
        data = _flatten(raw) if raw and isinstance(raw[0], list) else raw
        if len(data) != size:
            raise TensorError(
                f"{where}: shape {shape} holds {size} elements but 'data' has {len(data)}"
            )
    return Tensor(name, datatype, tuple(shape), data), offset


def _flatten(nested: list[Any]) -> list[Any]:
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


def _from_bytes(raw: bytes, datatype: str, size: int, where: str) -> list[Any]:
    if datatype == "BYTES":
        return _split_bytes(raw, size, where)
    dtype = np.dtype(NUMPY_TYPES[datatype])
    if len(raw) != size * dtype.itemsize:
        raise TensorError(
            f"{where}: {size} {datatype} elements take {size * dtype.itemsize} bytes, "
            f"not {len(raw)}"
        )
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return values


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


def _requested_outputs(
    request: dict[str, Any], binary_default: bool
) -> list[RequestedOutput] | None:
    if "outputs" not in request:
        return None
    outputs = request["outputs"]
    if not isinstance(outputs, list):
        raise TensorError("'outputs' must be a list of {name, parameters}")
    requested = []
    for index, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TensorError(f"outputs[{index}] must be an object with a 'name'")
        binary = _parameters(item, f"output '{item['name']}'").get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise TensorError(f"output '{item['name']}': 'binary_data' must be true or false")
        requested.append(RequestedOutput(item["name"], binary))
    return requested


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray[Any, Any] | list[Any]  # numbers as an array, BYTES as a list of str


def encode_response(
    header: dict[str, Any], outputs: list[tuple[OutputTensor, bool]]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output travels as binary."""
    described = []
    chunks = []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if binary:
            raw = _to_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.values
        described.append(entry)
    body = orjson.dumps({**header, "outputs": described}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return body, None
    return b"".join([body, *chunks]), len(body)


def _to_bytes(tensor: OutputTensor) -> bytes:
    if tensor.datatype == "BYTES":
        encoded = [str(v).encode("utf-8") for v in tensor.values]
        return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
    array = np.asarray(tensor.values, dtype=NUMPY_TYPES[tensor.datatype])
    return array.tobytes()
