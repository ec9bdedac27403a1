"""Clients nobody here wrote, against a real `python -m service` process.

- tritonclient[http] (NVIDIA's Open Inference Protocol client), used exactly as its docs show.
- KServe v1: KServe's own Python client cannot be installed beside this project (every kserve
  release pins pandas below 3, or protobuf and uvicorn below ours), so the v1 routes are called
  with the request shapes from KServe's documentation: `{"instances": [[...], ...]}` in
  feature order, as its sklearn and custom-predictor examples send.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.e2e.test_process import running

pytestmark = pytest.mark.slow
KEY = "triton-k3y"


def auth() -> dict[str, str]:
    # A fresh dict per call: tritonclient adds its own headers to the one it is given.
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(penguins_store: Path) -> Iterator[str]:
    with running(penguins_store, API_KEY=KEY) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    made = triton.InferenceServerClient(server.removeprefix("http://"))
    yield made
    made.close()


def penguins() -> dict[str, np.ndarray[Any, Any]]:
    """Three penguins as numpy columns; the second has the gaps training saw."""
    return {
        "island": np.array(["Biscoe", "Dream", "Torgersen"], dtype=object),
        "bill_length_mm": np.array([46.1, np.nan, 39.1]),
        "bill_depth_mm": np.array([13.2, 17.9, 18.7]),
        "flipper_length_mm": np.array([211.0, 192.0, 181.0]),
        "body_mass_g": np.array([4500.0, 3725.0, 3750.0]),
        "sex": np.array(["female", "", "male"], dtype=object),
        "year": np.array([2007, 2008, 2009], dtype=np.int64),
    }


def as_instances(columns: dict[str, np.ndarray[Any, Any]]) -> list[dict[str, Any]]:
    instances = []
    for row in range(3):
        instance: dict[str, Any] = {}
        for name, values in columns.items():
            value = values.tolist()[row]
            missing = value == "" or (isinstance(value, float) and np.isnan(value))
            instance[name] = None if missing else value
        instances.append(instance)
    return instances


def infer_inputs(binary: bool) -> list[triton.InferInput]:
    datatypes = {"island": "BYTES", "sex": "BYTES", "year": "INT64"}
    inputs = []
    for name, values in penguins().items():
        tensor = triton.InferInput(name, list(values.shape), datatypes.get(name, "FP64"))
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def native(server: str) -> list[dict[str, Any]]:
    body = {"instances": as_instances(penguins())}
    response = httpx2.post(f"{server}/predict", json=body, headers=auth())
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("penguins")
    assert client.is_model_ready("penguins", "1")
    assert not client.is_model_ready("whales")
    server = client.get_server_metadata()
    assert server["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("penguins", headers=auth())
    assert [i["name"] for i in meta["inputs"]] == list(penguins())
    assert meta["parameters"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_equals_predict(
    client: triton.InferenceServerClient, server: str, binary: bool
) -> None:
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer(
        "penguins", infer_inputs(binary), outputs=outputs, request_id="r-1", headers=auth()
    )
    expected = native(server)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == [p["label"] for p in expected]
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    assert probabilities.shape == (3, 3)
    want = np.array([list(p["probabilities"].values()) for p in expected])
    # Binary FP64 carries every bit; JSON numbers round-trip exactly too.
    assert np.array_equal(probabilities, want)
    assert result.get_response()["id"] == "r-1"


def test_default_outputs_come_back_binary(client: triton.InferenceServerClient) -> None:
    # With no outputs named, tritonclient asks for every output in binary form.
    result = client.infer("penguins", infer_inputs(True), headers=auth())
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["label", "probabilities"]
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert result.as_numpy("probabilities").shape == (3, 3)  # type: ignore[union-attr]


def test_a_requested_subset(client: triton.InferenceServerClient, server: str) -> None:
    only = [triton.InferRequestedOutput("label", binary_data=False)]
    result = client.infer("penguins", infer_inputs(False), outputs=only, headers=auth())
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None
    assert result.as_numpy("label").tolist() == [p["label"] for p in native(server)]  # type: ignore[union-attr]


def test_errors_reach_the_client_with_status_and_message(
    client: triton.InferenceServerClient,
) -> None:
    inputs = infer_inputs(True)
    wrong = triton.InferInput("island", [3], "BYTES")
    wrong.set_data_from_numpy(np.array(["Biscoe", "Mars", "Dream"], dtype=object))
    inputs[0] = wrong
    with pytest.raises(InferenceServerException) as caught:
        client.infer("penguins", inputs, headers=auth())
    assert caught.value.status() == "400"
    assert "input 'island' row 1: 'Mars' is not a category" in caught.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("whales", infer_inputs(True), headers=auth())
    assert unknown.value.status() == "404"
    with pytest.raises(InferenceServerException) as refused:
        client.infer("penguins", infer_inputs(True))
    assert refused.value.status() == "401"


def test_kserve_v1_documented_request_shapes(server: str) -> None:
    columns = penguins()
    names = list(columns)
    instances = as_instances(columns)
    lists = [[i[n] for n in names] for i in instances]
    expected = [p["label"] for p in native(server)]
    model = httpx2.get(f"{server}/v1/models/penguins")
    assert model.json() == {"name": "penguins", "ready": True}
    for body in ({"instances": lists}, {"instances": instances}):
        response = httpx2.post(f"{server}/v1/models/penguins:predict", json=body, headers=auth())
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}
    bad = httpx2.post(
        f"{server}/v1/models/penguins:predict", json={"instances": [lists[0][:3]]}, headers=auth()
    )
    assert bad.status_code == 400
    assert "in this order: island, bill_length_mm" in bad.json()["error"]


def test_kserve_v1_all_numeric_model(numeric_store: Path) -> None:
    """KServe's sklearn example: `{"instances": [[6.8, 2.8, 4.8, 1.4], ...]}`, numbers only."""
    with running(numeric_store) as url:
        body = {"instances": [[46.1, 13.2, 211.0, 4500.0, 2007], [39.1, 18.7, 181.0, 3750.0, 2007]]}
        response = httpx2.post(f"{url}/v1/models/numeric:predict", json=body)
        assert response.json() == {"predictions": ["Gentoo", "Adelie"]}
        matrix = triton.InferInput("input-0", [2, 5], "FP64")
        matrix.set_data_from_numpy(np.array(body["instances"], dtype=np.float64))
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        result = client.infer("numeric", [matrix])
        assert [v.decode() for v in result.as_numpy("label")] == ["Gentoo", "Adelie"]  # type: ignore[union-attr]
        client.close()
