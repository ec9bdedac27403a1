"""The lean ONNX floor: the thinnest server one could write around a version's `model.onnx`.

Raw ASGI, orjson, one ONNX Runtime session, no validation, no metrics, no logging: a request's
values go straight into the graph's input arrays and its output straight back as JSON. It
takes the bodies the service takes: `{"instances": [...]}` (objects), an Open Inference
Protocol request in JSON (one tensor per feature, or one [rows, features] tensor), or the
binary extension. The bench reports each of the service's figures as a ratio to this one's.

Run by the bench: `FLOOR_VERSION_DIR=models/penguins/1 uvicorn bench.floor:app`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import orjson

from bench.asgi import read_request_body

_VERSION = Path(os.environ.get("FLOOR_VERSION_DIR", "models/penguins/1"))
_META = json.loads((_VERSION / "metadata.json").read_text())
_FEATURES = [(f["name"], f["type"] == "string") for f in _META["features"]]
_INPUTS = _META["onnx"]["inputs"]
_options = onnxruntime.SessionOptions()
_options.intra_op_num_threads = 1
_options.inter_op_num_threads = 1
_SESSION = onnxruntime.InferenceSession(
    str(_VERSION / "model.onnx"), _options, providers=["CPUExecutionProvider"]
)
_NUMBER = np.float64 if _META["onnx"].get("precision") == "float64" else np.float32
_OUTPUT = _SESSION.get_outputs()[1 if _META["task"] == "classification" else 0].name
_BINARY = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "BOOL": "?"}


def _column(values: Any, is_text: bool) -> np.ndarray[Any, Any]:
    if is_text:
        return np.asarray(values, dtype=object).reshape(-1, 1)
    return np.asarray(values, dtype=_NUMBER).reshape(-1, 1)


def _feeds_from_instances(instances: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        graph: _column([row[name] for row in instances], is_text)
        for (name, is_text), graph in zip(_FEATURES, _INPUTS, strict=True)
    }


def _feeds_from_tensors(inputs: list[dict[str, Any]], raw: bytes) -> dict[str, Any]:
    by_name: dict[str, Any] = {}
    offset = 0
    for tensor in inputs:
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is not None:
            chunk = raw[offset : offset + size]
            offset += size
            by_name[tensor["name"]] = np.frombuffer(chunk, dtype=_BINARY[tensor["datatype"]])
        else:
            by_name[tensor["name"]] = tensor["data"]
    if len(inputs) == 1 and inputs[0]["name"] not in dict(_FEATURES):
        matrix = np.asarray(by_name[inputs[0]["name"]], dtype=_NUMBER).reshape(inputs[0]["shape"])
        return {graph: matrix[:, [j]] for j, graph in enumerate(_INPUTS)}
    return {
        graph: _column(by_name[name], is_text)
        for (name, is_text), graph in zip(_FEATURES, _INPUTS, strict=True)
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_request_body(receive)
    headers = dict(scope["headers"])
    header_length = headers.get(b"inference-header-content-length")
    if header_length is not None:
        cut = int(header_length)
        request, raw = orjson.loads(body[:cut]), body[cut:]
    else:
        request, raw = orjson.loads(body), b""
    if "instances" in request:
        feeds = _feeds_from_instances(request["instances"])
    else:
        feeds = _feeds_from_tensors(request["inputs"], raw)
    (output,) = _SESSION.run([_OUTPUT], feeds)
    answer = orjson.dumps({"outputs": output.tolist()}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": answer})
