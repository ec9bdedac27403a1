"""KServe v1 and the Open Inference Protocol v2, in process: the same model and rules as
/predict, in the protocols' own envelopes and error shapes."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import ClientFactory

INFER = "/v2/models/penguins/infer"
TYPES = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}


def rows(example: dict[str, Any]) -> list[dict[str, Any]]:
    """Three penguins: the typical one, one with gaps, one from another island."""
    return [
        example,
        {**example, "bill_length_mm": None, "sex": None},
        {**example, "island": "Dream", "flipper_length_mm": 190.0, "body_mass_g": 3500.0},
    ]


def tensors(instances: list[dict[str, Any]], features: list[dict[str, Any]]) -> list[Any]:
    return [
        {
            "name": f["name"],
            "datatype": TYPES[f["type"]],
            "shape": [len(instances)],
            "data": [i[f["name"]] for i in instances],
        }
        for f in features
    ]


def features_of(client: TestClient) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = client.get("/model").json()["features"]
    return features


def error(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    message: str = body["error"]
    return message


def bytes_tensor(values: list[str]) -> bytes:
    encoded = [v.encode() for v in values]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def split_binary(response: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A binary-extension response: its JSON header, and each binary output's bytes."""
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    chunks, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            chunks[output["name"]] = response.content[offset : offset + size]
            offset += size
    assert offset == len(response.content)
    return header, chunks


# -- v2: server and model metadata ---------------------------------------------------------


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json() == {
        "name": "sklearn-serve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    for path in ("/v2/models/penguins/ready", "/v2/models/penguins/versions/1/ready"):
        assert client.get(path).json() == {"name": "penguins", "ready": True}


def test_model_metadata_lists_every_feature_and_the_class_order(client: TestClient) -> None:
    meta = client.get("/v2/models/penguins").json()
    assert client.get("/v2/models/penguins/versions/1").json() == meta
    assert meta["name"] == "penguins"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        (f["name"], TYPES[f["type"]], [-1]) for f in features_of(client)
    ]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert meta["parameters"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert meta["parameters"]["single_tensor_input"] is False


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other",
        "/v2/models/other/ready",
        "/v2/models/penguins/versions/2",
        "/v2/models/penguins/versions/2/ready",
        "/v1/models/other",
    ],
)
def test_a_wrong_model_or_version_is_404_in_the_protocol_shape(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "penguins" in error(response)


def test_unknown_protocol_paths_and_methods_answer_in_the_protocol_shape(
    client: TestClient,
) -> None:
    assert client.get("/v2/nothing").status_code == 404
    assert error(client.get("/v2/nothing")) == "Not Found"
    response = client.get(INFER)
    assert response.status_code == 405
    assert error(response) == "Method Not Allowed"
    assert client.get("/nothing").json() == {"detail": "Not Found"}  # native stays native


# -- v2: inference -------------------------------------------------------------------------


def test_json_infer_equals_predict(client: TestClient, penguin_example: dict[str, Any]) -> None:
    instances = rows(penguin_example)
    native = client.post("/predict", json={"instances": instances}).json()["predictions"]
    body = {"id": "req-7", "inputs": tensors(instances, features_of(client))}
    response = client.post(INFER, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "penguins"
    assert answer["model_version"] == "1"
    assert answer["id"] == "req-7"
    label, probabilities = answer["outputs"]
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [3],
        "data": [p["label"] for p in native],
    }
    assert probabilities["shape"] == [3, 3]
    expected = [list(p["probabilities"].values()) for p in native]
    assert np.reshape(probabilities["data"], (3, 3)).tolist() == expected
    assert client.post("/v2/models/penguins/versions/1/infer", json=body).json() == answer


def test_nested_data_and_column_shapes_are_accepted(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    instances = rows(penguin_example)
    flat = tensors(instances, features_of(client))
    nested = [{**t, "shape": [3, 1], "data": [[v] for v in t["data"]]} for t in flat]
    one = client.post(INFER, json={"inputs": flat}).json()["outputs"]
    assert client.post(INFER, json={"inputs": nested}).json()["outputs"] == one


def test_requested_outputs_select_and_binary_outputs_decode(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    instances = rows(penguin_example)
    inputs = tensors(instances, features_of(client))
    native = client.post("/predict", json={"instances": instances}).json()["predictions"]
    only_label = client.post(INFER, json={"inputs": inputs, "outputs": [{"name": "label"}]})
    assert [o["name"] for o in only_label.json()["outputs"]] == ["label"]
    assert only_label.headers["content-type"] == "application/json"

    outputs = [
        {"name": "probabilities", "parameters": {"binary_data": True}},
        {"name": "label", "parameters": {"binary_data": True}},
    ]
    response = client.post(INFER, json={"inputs": inputs, "outputs": outputs})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header, chunks = split_binary(response)
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "label"]
    probabilities = np.frombuffer(chunks["probabilities"], dtype="<f8").reshape(3, 3)
    assert probabilities.tolist() == [list(p["probabilities"].values()) for p in native]
    assert chunks["label"] == bytes_tensor([p["label"] for p in native])
    everything = client.post(
        INFER, json={"inputs": inputs, "parameters": {"binary_data_output": True}}
    )
    assert split_binary(everything)[1] == chunks


def test_binary_inputs_with_gaps_as_nan_and_empty_text(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    instances = rows(penguin_example)
    native = client.post("/predict", json={"instances": instances}).json()["predictions"]
    described, payload = [], b""
    for feature in features_of(client):
        values = [i[feature["name"]] for i in instances]
        if feature["type"] == "string":
            raw = bytes_tensor(["" if v is None else v for v in values])
            datatype = "BYTES"
        elif feature["type"] == "integer":
            raw, datatype = np.array(values, dtype="<i8").tobytes(), "INT64"
        else:
            floats = [math.nan if v is None else v for v in values]
            raw, datatype = np.array(floats, dtype="<f4").tobytes(), "FP32"
        described.append(
            {
                "name": feature["name"],
                "datatype": datatype,
                "shape": [3],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        payload += raw
    header = json.dumps({"inputs": described}).encode()
    response = client.post(
        INFER,
        content=header + payload,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    label, probabilities = response.json()["outputs"]
    assert label["data"] == [p["label"] for p in native]
    # float32 inputs: the graph computes in float32 anyway, so the answers agree closely.
    expected = [list(p["probabilities"].values()) for p in native]
    assert np.allclose(np.reshape(probabilities["data"], (3, 3)), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        (lambda t: t[0].update(data=["Mars", "Dream", "Biscoe"]), 400, "input 'island' row 0"),
        (lambda t: t[0].update(data=["Biscoe", None, "Dream"]), 400, "input 'island' row 1"),
        (lambda t: t[0].update(data=["Biscoe", {}, "Dream"]), 400, "row 1: expected text, got an"),
        (lambda t: t[5].update(data=["male", ["x"], "male"]), 400, "expected text, got a list"),
        (lambda t: t[1].update(data=[40.0, "41", 42.0]), 400, "input 'bill_length_mm' row 1"),
        (lambda t: t[1].update(data=[40.0, True, 42.0]), 400, "got a boolean"),
        (
            lambda t: t[6].update(data=[2007, 2008.5, 2009]),
            400,
            "element 1: 2008.5 does not fit INT64 (a whole number",
        ),
        (lambda t: t[6].update(datatype="FP64", data=[2007.0, 2008.5, 2009.0]), 400, "whole"),
        (lambda t: t[2].update(data=[1e16, 1.0, 1.0]), 400, "row 0: 1e+16 is beyond"),
        (lambda t: t[0].update(datatype="FP32"), 400, "'island' is a string feature"),
        (lambda t: t[1].update(shape=[2]), 400, "shape [2] holds 2 elements but 'data' has 3"),
        (lambda t: t[1].update(shape=[3, 2]), 400, "holds 6 elements"),
        (lambda t: t.pop(), 400, "missing inputs: year"),
        (lambda t: t.append(dict(t[0])), 400, "'island' is sent twice"),
        (lambda t: t.append({**t[0], "name": "beak"}), 400, "unknown input 'beak'"),
        (lambda t: t[0].update(datatype="STRING"), 400, "inputs[0].datatype: Input should be"),
        (lambda t: t[3].update(data=[1.0, 2.0], shape=[2]), 400, "has 2 rows but"),
        (lambda t: [x.update(shape=[0], data=[]) for x in t], 400, "no rows"),
    ],
)
def test_bad_tensors_are_400_naming_the_input_and_row(
    client: TestClient,
    penguin_example: dict[str, Any],
    change: Any,
    status: int,
    needle: str,
) -> None:
    inputs = tensors(rows(penguin_example), features_of(client))
    change(inputs)
    response = client.post(INFER, json={"inputs": inputs})
    assert response.status_code == status
    assert needle in error(response)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "Input should be an object"),
        (b'{"inputs": []}', "inputs: List should have at least 1 item"),
        (b'{"inputs": [{"name": "year"}], "id": 3}', "id: Input should be a valid string"),
        (b'{"inputs": [{"name": "island"}]}', "inputs[0].datatype: Field required"),
        (b'{"inputs": [{"name": {}, "datatype": "FP32", "shape": [0], "data": []}]}', "name"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}]}', "inputs[0].shape[0]"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', "send 'data'"),
        (b'{"inputs": [], "outputs": null}', "outputs: Input should be a valid array"),
    ],
)
def test_malformed_requests_are_400(client: TestClient, body: bytes, needle: str) -> None:
    response = client.post(INFER, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert needle in error(response)


def test_binary_framing_errors_are_400(client: TestClient) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "year",
                    "datatype": "INT64",
                    "shape": [2],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    short = client.post(
        INFER,
        content=header + b"\x00" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400
    assert "only 8 bytes" in error(short)
    wrong_length = client.post(
        INFER, content=header, headers={"Inference-Header-Content-Length": "99999"}
    )
    assert "the body has" in error(wrong_length)


def test_unknown_outputs_oversize_batches_media_and_keys(
    make_client: ClientFactory, penguin_example: dict[str, Any]
) -> None:
    client = make_client(max_batch_size=2, api_key="k3y")
    auth = {"X-API-Key": "k3y"}
    features = features_of_with(client, auth)
    inputs = tensors(rows(penguin_example)[:2], features)
    unknown = client.post(
        INFER, json={"inputs": inputs, "outputs": [{"name": "value"}]}, headers=auth
    )
    assert unknown.status_code == 400
    assert "label and probabilities" in error(unknown)
    big = tensors(rows(penguin_example), features)
    assert client.post(INFER, json={"inputs": big}, headers=auth).status_code == 413
    text = client.post(INFER, content=b"x", headers={**auth, "Content-Type": "text/plain"})
    assert text.status_code == 415
    assert "Content-Type" in error(text)
    gzip = client.post(INFER, content=b"x", headers={**auth, "Content-Encoding": "gzip"})
    assert gzip.status_code == 415
    no_key = client.post(INFER, json={"inputs": inputs})
    assert no_key.status_code == 401
    assert "API key" in error(no_key)
    assert client.get("/v2/models/penguins").status_code == 401
    assert client.get("/v2/models/penguins/ready").status_code == 200  # probes stay open
    assert client.post(INFER, json={"inputs": inputs}, headers=auth).status_code == 200


def features_of_with(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = client.get("/model", headers=headers).json()["features"]
    return features


def test_a_single_matrix_tensor_feeds_an_all_numeric_model(
    make_client: ClientFactory, numeric_store: Path
) -> None:
    client = make_client(model_dir=numeric_store)
    meta = client.get("/v2/models/numeric").json()
    assert meta["parameters"]["single_tensor_input"] is True
    names = meta["parameters"]["feature_order"]
    example = client.get("/model").json()["example"]
    instances = [example, {**example, "bill_length_mm": 50.0, "year": 2009}]
    native = client.post("/predict", json={"instances": instances}).json()["predictions"]
    matrix = [[float(i[n]) for n in names] for i in instances]  # year 2009.0: whole, accepted
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 5], "data": matrix}]}
    response = client.post("/v2/models/numeric/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [p["label"] for p in native]
    narrow = {"inputs": [{**body["inputs"][0], "shape": [2, 4], "data": [r[:4] for r in matrix]}]}
    assert "has 4 columns but the model has 5" in error(
        client.post("/v2/models/numeric/infer", json=narrow)
    )
    gap = [[None if n == "bill_length_mm" else float(example[n]) for n in names]]
    with_gap = {"inputs": [{**body["inputs"][0], "shape": [1, 5], "data": gap}]}
    native_gap = client.post(
        "/predict", json={"instances": [{**example, "bill_length_mm": None}]}
    ).json()["predictions"]
    answer = client.post("/v2/models/numeric/infer", json=with_gap).json()
    assert answer["outputs"][0]["data"] == [native_gap[0]["label"]]
    assert answer["outputs"][1]["data"] == list(native_gap[0]["probabilities"].values())
    matrix[1][4] = 2009.5
    fractional = client.post("/v2/models/numeric/infer", json=body)
    assert "input 'input-0' column 4 row 1: 2009.5 is not a whole number" in error(fractional)
    # A small matrix is checked value by value, a large one by numpy: the same answers.
    for rows in (2, 20):
        big = [[float(example[n]) for n in names] for _ in range(rows)]
        big[1][0] = 1e300
        huge = {"inputs": [{**body["inputs"][0], "shape": [rows, 5], "data": big}]}
        refused = client.post("/v2/models/numeric/infer", json=huge)
        assert refused.status_code == 400, refused.text
        assert "input 'input-0' column 0 row 1" in error(refused)
        whole = [[float(example[n]) for n in names] for _ in range(rows)]
        whole[rows - 1][4] = 2007.25
        binary = np.asarray(whole, dtype="<f8").tobytes()
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "datatype": "FP64",
                        "shape": [rows, 5],
                        "parameters": {"binary_data_size": len(binary)},
                    }
                ]
            }
        )
        sent = client.post(
            "/v2/models/numeric/infer",
            content=header + binary,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert f"column 4 row {rows - 1}: 2007.25 is not a whole number" in error(sent)


def test_a_matrix_is_refused_with_a_reason_when_features_are_not_all_numeric(
    client: TestClient,
) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 7], "data": [[0.0] * 7]}]}
    response = client.post(INFER, json=body)
    assert response.status_code == 400
    assert "string features: send one tensor per feature" in error(response)


def test_a_regressor_answers_value(make_client: ClientFactory, regression_store: Path) -> None:
    client = make_client(model_dir=regression_store)
    example = client.get("/model").json()["example"]
    native = client.post("/predict", json={"instances": [example]}).json()["predictions"]
    inputs = tensors([example], features_of(client))
    (value,) = client.post("/v2/models/mass/infer", json={"inputs": inputs}).json()["outputs"]
    assert value == {
        "name": "value",
        "datatype": "FP64",
        "shape": [1],
        "data": [native[0]["value"]],
    }
    v1 = client.post("/v1/models/mass:predict", json={"instances": [example]}).json()
    assert v1 == {"predictions": [native[0]["value"]]}


def test_metrics_count_protocol_routes_by_template(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    inputs = tensors([penguin_example], features_of(client))
    client.post(INFER, json={"inputs": inputs})
    client.post("/v2/models/penguins/versions/1/infer", json={"inputs": inputs})
    client.post("/v1/models/penguins:predict", json={"instances": [penguin_example]})
    text = client.get("/metrics").text
    assert 'route="/v2/models/{name}/infer"' in text
    assert 'route="/v2/models/{name}/versions/{version}/infer"' in text
    assert 'route="/v1/models/{name}:predict"' in text


# -- KServe v1 -----------------------------------------------------------------------------


def test_v1_model_and_predict_with_objects_and_lists(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    assert client.get("/v1/models/penguins").json() == {"name": "penguins", "ready": True}
    instances = rows(penguin_example)
    native = client.post("/predict", json={"instances": instances}).json()["predictions"]
    names = [f["name"] for f in features_of(client)]
    as_lists = [[i[n] for n in names] for i in instances]
    for body in ({"instances": instances}, {"instances": as_lists}):
        response = client.post("/v1/models/penguins:predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [p["label"] for p in native]}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"instances": [[1.0, 2.0]]}, 400, "instances[0] has 2 values but the model has 7"),
        ({"instances": [{"island": "Mars"}]}, 400, "instances[0].island"),
        ({"instances": "x"}, 400, '{"instances": [...]}'),
        ({"inputs": []}, 400, '{"instances": [...]}'),
        ({"instances": []}, 400, "instances"),
    ],
)
def test_v1_errors(client: TestClient, body: Any, status: int, needle: str) -> None:
    response = client.post("/v1/models/penguins:predict", json=body)
    assert response.status_code == status
    assert needle in error(response)


def test_v1_names_the_missing_value_rule(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    response = client.post(
        "/v1/models/penguins:predict", json={"instances": [{**penguin_example, "year": None}]}
    )
    assert response.status_code == 400
    assert "instances[0].year" in error(response)
    wrong = client.post("/v1/models/other:predict", json={"instances": [penguin_example]})
    assert wrong.status_code == 404


def test_a_large_matrix_is_checked_at_once_with_the_same_rules(
    make_client: ClientFactory, numeric_store: Path
) -> None:
    client = make_client(model_dir=numeric_store)
    names = client.get("/v2/models/numeric").json()["parameters"]["feature_order"]
    example = client.get("/model").json()["example"]
    instances = [{**example, "bill_length_mm": 35.0 + i} for i in range(30)]
    native = client.post("/predict", json={"instances": instances}).json()["predictions"]
    flat = [float(i[n]) for i in instances for n in names]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [30, 5], "data": flat}]}
    labels = client.post("/v2/models/numeric/infer", json=body).json()["outputs"][0]["data"]
    assert labels == [p["label"] for p in native]
    flat[5 * 17 + 4] = 2008.25  # row 17, the integer year
    response = client.post("/v2/models/numeric/infer", json=body)
    assert "input 'x' column 4 row 17: 2008.25 is not a whole number" in error(response)
    for huge in (1e300, -1e300):  # either side of the largest magnitude
        flat[5 * 17 + 4] = huge
        refused = error(client.post("/v2/models/numeric/infer", json=body))
        assert f"row 17: {huge:g} is beyond" in refused
    # Binary FP64 carries NaN and infinity: the one-call check must hand them to the rules too
    # (the year, column 4, never had a gap in training, so a NaN there is refused).
    for bad, words in (
        (math.nan, "is a missing value"),
        (math.inf, "infinity is not a number"),
        (-math.inf, "infinity is not a number"),
    ):
        values = [float(i[n]) for i in instances for n in names]
        values[5 * 17 + 4] = bad
        raw = np.asarray(values, dtype="<f8").tobytes()
        header = orjson.dumps(
            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [30, 5],
                         "parameters": {"binary_data_size": len(raw)}}]}
        )  # fmt: skip
        answer = client.post(
            "/v2/models/numeric/infer",
            content=header + raw,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert answer.status_code == 400, answer.text
        assert "column 4 row 17" in error(answer)
        assert words in error(answer)


def test_json_data_beside_a_binary_size_is_refused_in_either_layout(
    make_client: ClientFactory, numeric_store: Path, penguin_example: dict[str, Any]
) -> None:
    # A body with no binary part whose tensor still claims binary data is ambiguous: the fast
    # JSON path must hand it to the general one, which refuses it, never read its `data`.
    client = make_client()
    inputs = tensors([penguin_example], features_of(client))
    inputs[1]["parameters"] = {"binary_data_size": 8}
    refused = client.post(INFER, json={"inputs": inputs})
    assert refused.status_code == 400
    assert "send 'data' or 'binary_data_size', not both" in error(refused)
    del inputs[1]["parameters"]
    assert client.post(INFER, json={"inputs": inputs}).status_code == 200
    numeric = make_client(model_dir=numeric_store)
    example = numeric.get("/model").json()["example"]
    names = numeric.get("/v2/models/numeric").json()["parameters"]["feature_order"]
    matrix = {
        "name": "x",
        "datatype": "FP64",
        "shape": [1, 5],
        "data": [[example[n] for n in names]],
    }
    for parameters, status in (({"binary_data_size": 40}, 400), ({"note": 1}, 200)):
        answer = numeric.post(
            "/v2/models/numeric/infer", json={"inputs": [{**matrix, "parameters": parameters}]}
        )
        assert answer.status_code == status, answer.text
