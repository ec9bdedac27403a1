"""The Open Inference Protocol over gRPC, against a real `python -m service` process: NVIDIA's
tritonclient[grpc] used as its docs show, its protocol messages sent with `contents` (the
JSON-like layout its client does not send), grpcio's health service, and the REST routes' key,
limits, errors, request ids and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx2
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc

# tritonclient's own messages and stub (ours register the same protocol names, so one process
# holds one or the other): the `contents` layout sent by code nobody here wrote.
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.e2e.test_clients import infer_inputs as http_inputs
from tests.e2e.test_clients import penguins
from tests.e2e.test_process import free_port, running

pytestmark = pytest.mark.slow
KEY = "grpc-k3y"
BEARER = {"authorization": f"Bearer {KEY}"}
DATATYPES = {"island": "BYTES", "sex": "BYTES", "year": "INT64"}


@pytest.fixture(scope="module")
def served(penguins_store: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    env = {"API_KEY": KEY, "GRPC_PORT": str(port), "MAX_BATCH_SIZE": "50"}
    with running(penguins_store, **env) as url:
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(served: tuple[str, str]) -> Iterator[triton.InferenceServerClient]:
    made = triton.InferenceServerClient(served[1])
    yield made
    made.close()


@pytest.fixture(scope="module")
def stub(served: tuple[str, str]) -> Iterator[Any]:
    with grpc.insecure_channel(served[1]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_inputs(columns: dict[str, np.ndarray[Any, Any]]) -> list[triton.InferInput]:
    inputs = []
    for name, values in columns.items():
        tensor = triton.InferInput(name, list(values.shape), DATATYPES.get(name, "FP64"))
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def rest_answer(url: str) -> dict[str, Any]:
    body = {
        "inputs": [
            {
                "name": name,
                "datatype": DATATYPES.get(name, "FP64"),
                "shape": [3],
                "data": [None if v != v else v for v in values.tolist()],
            }
            for name, values in penguins().items()
        ]
    }
    response = httpx2.post(f"{url}/v2/models/penguins/infer", json=body, headers=BEARER)
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def test_tritonclient_grpc_works_unchanged(
    served: tuple[str, str], client: triton.InferenceServerClient
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("penguins")
    assert client.get_server_metadata().name == "sklearn-serve"
    metadata = client.get_model_metadata("penguins", headers=BEARER)
    assert [i.name for i in metadata.inputs][:2] == ["island", "bill_length_mm"]
    assert [o.name for o in metadata.outputs] == ["label", "probabilities"]

    result = client.infer("penguins", grpc_inputs(penguins()), headers=BEARER)
    rest = rest_answer(served[0])
    assert [v.decode() for v in result.as_numpy("label").tolist()] == rest["label"]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 3)
    assert np.allclose(probabilities.ravel(), rest["probabilities"], rtol=0, atol=1e-15)
    # Only the output asked for, and the id sent back.
    asked = [triton.InferRequestedOutput("label")]
    one = client.infer("penguins", grpc_inputs(penguins()), outputs=asked, request_id="r-7",
                       headers=BEARER)  # fmt: skip
    assert one.get_response().id == "r-7"
    assert [o.name for o in one.get_response().outputs] == ["label"]
    # The HTTP client's answer for the same rows, binary tensors: the same labels.
    http = __import__("tritonclient.http", fromlist=["x"])
    with http.InferenceServerClient(served[0].removeprefix("http://")) as rest_client:
        answer = rest_client.infer("penguins", http_inputs(binary=True), headers=dict(BEARER))
    assert answer.as_numpy("label").tolist() == result.as_numpy("label").tolist()


def contents_request(**change: Any) -> pb.ModelInferRequest:
    """The three penguins in `contents` (gaps as NaN and as the empty string)."""
    request = pb.ModelInferRequest(model_name="penguins", id="c-1")
    for name, values in penguins().items():
        tensor = request.inputs.add(name=name, datatype=DATATYPES.get(name, "FP64"), shape=[3])
        if name in ("island", "sex"):
            tensor.contents.bytes_contents.extend(v.encode() for v in values.tolist())
        elif name == "year":
            tensor.contents.int64_contents.extend(values.tolist())
        else:
            tensor.contents.fp64_contents.extend(values.tolist())
    for name, value in change.items():
        tensor = next(t for t in request.inputs if t.name == name)
        tensor.contents.bytes_contents[0] = value
    return request


def test_contents_answer_as_rest_does(served: tuple[str, str], stub: Any) -> None:
    response, call = stub.ModelInfer.with_call(
        contents_request(), metadata=(("authorization", f"Bearer {KEY}"), ("x-request-id", "q-9"))
    )
    assert response.id == "c-1"
    assert ("x-request-id", "q-9") in call.trailing_metadata()
    outputs = {o.name: o for o in response.outputs}
    rest = rest_answer(served[0])
    assert [v.decode() for v in outputs["label"].contents.bytes_contents] == rest["label"]
    assert list(outputs["probabilities"].shape) == [3, 3]
    assert np.allclose(outputs["probabilities"].contents.fp64_contents, rest["probabilities"],
                       rtol=0, atol=1e-15)  # fmt: skip
    assert not response.raw_output_contents  # contents in, contents out


def code_and_details(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    error: Any = caught.value
    return error.code(), error.details()


def test_errors_have_the_right_codes_and_the_rest_words(
    served: tuple[str, str], stub: Any, client: triton.InferenceServerClient
) -> None:
    key = (("x-api-key", KEY),)
    assert code_and_details(stub.ModelInfer, contents_request()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
    )
    wrong = (("authorization", "Bearer nope"),)
    assert code_and_details(stub.ModelInfer, contents_request(), metadata=wrong)[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    code, details = code_and_details(
        stub.ModelInfer, contents_request(island=b"Atlantis"), metadata=key
    )
    rest = httpx2.post(
        f"{served[0]}/v2/models/penguins/infer",
        headers=BEARER,
        json={"inputs": [{"name": "island", "datatype": "BYTES", "shape": [1],
                          "data": ["Atlantis"]}]},
    )  # fmt: skip
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.split(":")[0] == rest.json()["error"].split(":")[0] == "input 'island' row 0"
    unknown = pb.ModelInferRequest(model_name="nosuch")
    assert code_and_details(stub.ModelInfer, unknown, metadata=key)[0] == grpc.StatusCode.NOT_FOUND
    old = contents_request()
    old.model_version = "7"
    assert code_and_details(stub.ModelInfer, old, metadata=key)[0] == grpc.StatusCode.NOT_FOUND
    # A datatype the feature cannot take, a shape that does not match its contents.
    bad = contents_request()
    bad.inputs[1].datatype = "BOOL"
    assert code_and_details(stub.ModelInfer, bad, metadata=key)[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    short = contents_request()
    short.inputs[1].shape[0] = 4
    code, details = code_and_details(stub.ModelInfer, short, metadata=key)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "holds 4 elements but fp64_contents has 3" in details
    # MAX_BATCH_SIZE is 50 here: 60 rows.
    many = {name: np.concatenate([values] * 20) for name, values in penguins().items()}
    with pytest.raises(InferenceServerException) as caught:
        client.infer("penguins", grpc_inputs(many), headers=BEARER)
    assert "RESOURCE_EXHAUSTED" in str(caught.value)
    assert "MAX_BATCH_SIZE (50)" in str(caught.value)
    # A message over MAX_BODY_BYTES (1 MiB) is refused by gRPC before any of it is read.
    huge = contents_request()
    huge.inputs[1].contents.fp64_contents.extend([1.0] * 200_000)
    assert code_and_details(stub.ModelInfer, huge, metadata=key)[0] == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_health_service_and_metrics(served: tuple[str, str], stub: Any) -> None:
    with grpc.insecure_channel(served[1]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub.ModelInfer(contents_request(), metadata=(("x-api-key", KEY),))
    text = httpx2.get(f"{served[0]}/metrics").text
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="ModelInfer"}' in text
    assert 'grpc_server_handled_total{grpc_code="UNAUTHENTICATED",grpc_method="ModelInfer"}' in text
    assert 'grpc_server_handling_seconds_bucket{grpc_code="OK",grpc_method="ModelInfer"' in text
    assert "predictions_total" in text
