"""The protocol's protobuf messages to and from what the REST routes decode: a `ModelInferRequest`
becomes the same `InferRequest` of `Tensor`s (then the same checks, `TensorInputs.table`), and
the model's outputs go back as `contents`, or as `raw_output_contents` when the request sent
raw inputs (as Triton answers)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.protocols.grpc_v2 import oip_pb2 as pb
from service.protocols.v2_tensors import (
    DATATYPES,
    MAX_DIMENSION,
    InferRequest,
    RequestedOutput,
    Tensor,
    TensorError,
    check_fits,
    from_bytes,
    to_bytes,
)

# The `contents` field each datatype's elements travel in; FP16 has none (raw only).
CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def infer_request(message: pb.ModelInferRequest) -> InferRequest:
    """The request's tensors, every fault a TensorError naming the tensor."""
    if not message.inputs:
        raise TensorError("inputs: the request has no inputs")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise TensorError(
            f"raw_input_contents holds {len(raw)} entries for {len(message.inputs)} inputs: "
            "send one per input, in input order, or none"
        )
    tensors = [
        _tensor(item, raw[index] if raw else None) for index, item in enumerate(message.inputs)
    ]
    requested: list[RequestedOutput] = []
    names: set[str] = set()
    for output in message.outputs:
        if output.name in names:  # each output once, as on REST
            raise TensorError(f"output '{output.name[:100]}' is requested twice")
        names.add(output.name)
        requested.append(RequestedOutput(output.name, False))
    return InferRequest(
        id=message.id or None,
        inputs=tensors,
        outputs=requested or None,
        binary_default=bool(raw),
    )


def _tensor(item: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Tensor:
    name, datatype = item.name, item.datatype
    if not name:
        raise TensorError("inputs: every input needs a name")
    where = f"input '{name[:100]}'"
    if datatype not in DATATYPES:
        raise TensorError(
            f"{where}: datatype '{datatype[:20]}' is not one of {', '.join(DATATYPES)}"
        )
    shape = list(item.shape)
    if not 1 <= len(shape) <= 2 or not all(0 <= d <= MAX_DIMENSION for d in shape):
        raise TensorError(
            f"{where}: shape {shape[:4]} must have one or two dimensions, each from 0 to "
            f"{MAX_DIMENSION}"
        )
    size = math.prod(shape)
    if raw is not None:
        if item.HasField("contents"):
            raise TensorError(f"{where}: send contents or raw_input_contents, not both")
        return Tensor(name, datatype, shape, from_bytes(raw, datatype, size, where))
    field = CONTENTS.get(datatype)
    if field is None:
        raise TensorError(f"{where}: {datatype} has no contents field: send raw_input_contents")
    values: list[Any] = list(getattr(item.contents, field))
    if datatype == "BYTES":
        try:
            values = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise TensorError(f"{where}: an element is not UTF-8 text") from None
    if len(values) != size:
        raise TensorError(
            f"{where}: shape {shape} holds {size} elements but {field} has {len(values)}"
        )
    check_fits(name, datatype, values)  # an INT8 tensor's int32 contents must fit INT8
    return Tensor(name, datatype, shape, values)


def infer_response(
    header: pb.ModelInferResponse,
    outputs: list[tuple[str, str, list[int], Any]],
    raw: bool,
) -> pb.ModelInferResponse:
    """`outputs`: (name, datatype, shape, values) each, as `TensorModel.outputs` gives them."""
    for name, datatype, shape, values in outputs:
        tensor = header.outputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            header.raw_output_contents.append(to_bytes(datatype, values))
            continue
        field = getattr(tensor.contents, CONTENTS[datatype])
        if datatype == "BYTES":
            field.extend(str(v).encode("utf-8") for v in values)
        elif isinstance(values, np.ndarray):
            field.extend(values.tolist())
        else:
            field.extend(values)
    return header
