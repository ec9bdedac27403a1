"""One meaning for "": a missing value, like an empty CSV cell and like null, on every route,
in both runtimes and whether unknown categories are accepted or not (issue 20)."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import ClientFactory
from tests.service.test_protocols import INFER, features_of, tensors


def answers(client: TestClient, instance: dict[str, Any]) -> dict[str, Any]:
    """The label and probabilities on every route for one instance."""
    native = client.post("/predict", json={"instances": [instance]})
    assert native.status_code == 200, native.text
    (prediction,) = native.json()["predictions"]
    v1 = client.post("/v1/models/penguins:predict", json={"instances": [instance]}).json()
    inputs = tensors([instance], features_of(client))
    fast = client.post(INFER, json={"inputs": inputs}).json()
    # NaN in a number tensor (a token Python clients write) takes the general JSON path.
    general_inputs = json.loads(json.dumps(inputs))
    body = json.dumps({"inputs": general_inputs}).replace("[44.45]", "[NaN]", 1)
    general = client.post(INFER, content=body, headers={"content-type": "application/json"})
    binary = _binary(client, inputs)
    return {
        "native": (prediction["label"], round(max(prediction["probabilities"].values()), 6)),
        "v1": v1["predictions"][0],
        "fast": fast["outputs"][0]["data"][0],
        "general": general.json()["outputs"][0]["data"][0]
        if general.status_code == 200
        else general.text,
        "binary": binary,
    }


def _binary(client: TestClient, inputs: list[dict[str, Any]]) -> Any:
    chunks, header_inputs = [], []
    for tensor in inputs:
        if tensor["datatype"] == "BYTES":
            # A binary text tensor has no null: "" is how it sends a gap.
            texts = [(v or "").encode() for v in tensor["data"]]
            raw = b"".join(struct.pack("<I", len(t)) + t for t in texts)
        elif tensor["datatype"] == "INT64":
            raw = struct.pack(f"<{len(tensor['data'])}q", *tensor["data"])
        else:
            raw = struct.pack(
                f"<{len(tensor['data'])}d",
                *[float("nan") if v is None else v for v in tensor["data"]],
            )
        chunks.append(raw)
        header_inputs.append(
            {
                **{k: v for k, v in tensor.items() if k != "data"},
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    header = json.dumps({"inputs": header_inputs}).encode()
    response = client.post(
        INFER,
        content=header + b"".join(chunks),
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        },
    )
    return (
        response.json()["outputs"][0]["data"][0] if response.status_code == 200 else response.text
    )


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
@pytest.mark.parametrize("unknown", ["reject", "accept"])
def test_an_empty_string_is_a_missing_value_everywhere(
    make_client: ClientFactory, penguin_example: dict[str, Any], runtime: str, unknown: str
) -> None:
    client = make_client(runtime=runtime, unknown_categories=unknown)
    with_null = answers(client, {**penguin_example, "sex": None})
    with_empty = answers(client, {**penguin_example, "sex": ""})
    assert with_empty == with_null
    metrics = client.get("/metrics").text
    assert not re.search(r'^unknown_categories_total\{feature="sex"\} [1-9]', metrics, re.M)


@pytest.mark.parametrize("unknown", ["reject", "accept"])
def test_an_empty_string_where_training_had_no_gaps_is_refused_everywhere(
    make_client: ClientFactory, penguin_example: dict[str, Any], unknown: str
) -> None:
    client = make_client(unknown_categories=unknown)
    instance = {**penguin_example, "island": ""}
    native = client.post("/predict", json={"instances": [instance]})
    assert native.status_code == 422
    (detail,) = native.json()["detail"]
    assert detail["loc"] == ["body", "instances", 0, "island"]
    refusal = (
        "an empty string is a missing value, but 'island' had no missing values in training, "
        "so it needs one"
    )
    assert detail["msg"] == refusal
    v1 = client.post("/v1/models/penguins:predict", json={"instances": [instance]})
    assert v1.status_code == 400
    assert "island: an empty string is a missing value" in v1.json()["error"]
    inputs = tensors([instance], features_of(client))
    v2 = client.post(INFER, json={"inputs": inputs})
    assert v2.status_code == 400
    assert v2.json()["error"].endswith(f"row 0: {refusal}")
