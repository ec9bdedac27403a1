"""OpenTelemetry tracing against a real OTLP/HTTP receiver: the server process exports as the
standard OTEL_* variables say, the receiver decodes each protobuf export with the protocol's
own messages (opentelemetry-proto), and the spans must have the right parents, names and
attributes, for REST and gRPC, and never a value from a payload."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
import tritonclient.grpc as triton
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.e2e.test_process import free_port, running

pytestmark = pytest.mark.slow
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP endpoint on 127.0.0.1: POST /v1/traces, protobuf in, spans kept."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.exports: list[str] = []
        received = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.take(self.path, self.headers["Content-Type"], body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, path: str, content_type: str, body: bytes) -> None:
        self.exports.append(f"{path} {content_type}")
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "attributes": _attributes(span.attributes),
                            "resource": resource,
                        }
                    )

    def wait_for(self, count: int, trace: str, seconds: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = [s for s in self.spans if s["trace"] == trace]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{len(self.spans)} spans arrived, not {count} of trace {trace}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(pairs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


@pytest.fixture(scope="module")
def traced(penguins_store: Path) -> Iterator[tuple[str, str, Receiver]]:
    receiver = Receiver()
    grpc_port = free_port()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "penguin-api",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "GRPC_PORT": str(grpc_port),
    }
    try:
        with running(penguins_store, **env) as url:
            yield url, f"127.0.0.1:{grpc_port}", receiver
    finally:
        receiver.close()


def family(spans: list[dict[str, Any]], root_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (root,) = [s for s in spans if s["name"] == root_name]
    children = {s["name"]: s for s in spans if s["parent"] == root["id"]}
    return root, children


def no_payload_values(spans: list[dict[str, Any]], values: list[Any]) -> None:
    seen = [str(v) for s in spans for v in s["attributes"].values()]
    for value in values:
        assert str(value) not in seen, value


def test_a_rest_request_is_one_span_with_its_parent_and_children(
    traced: tuple[str, str, Receiver], penguin_example: dict[str, Any]
) -> None:
    url, _, receiver = traced
    headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "X-Request-ID": "t-1"}
    body = {"instances": [penguin_example, penguin_example]}
    assert httpx2.post(f"{url}/predict", json=body, headers=headers).status_code == 200
    spans = receiver.wait_for(4, TRACE)
    root, children = family(spans, "POST /predict")
    print(f"\n{len(spans)} spans: " + ", ".join(s["name"] for s in spans))
    assert root["parent"] == PARENT  # the caller's span
    assert root["kind"] == 2  # SERVER
    assert root["resource"]["service.name"] == "penguin-api"
    attributes = root["attributes"]
    assert attributes["http.route"] == "/predict"
    assert attributes["http.response.status_code"] == 200
    assert attributes["model.name"] == "penguins"
    assert attributes["model.version"] == "1"
    assert attributes["model.runtime"] == "onnx"
    assert attributes["model.rows"] == 2
    assert attributes["outcome"] == "ok"
    assert attributes["request.id"] == "t-1"
    assert set(children) == {"decode", "predict", "encode"}
    assert children["predict"]["attributes"]["model.call_rows"] >= 2
    assert all(c["trace"] == TRACE for c in children.values())
    no_payload_values(spans, [v for v in penguin_example.values() if v not in (None, 1)])
    assert {e.split()[0] for e in receiver.exports} == {"/v1/traces"}
    assert "application/x-protobuf" in receiver.exports[0]


def test_a_refused_request_says_so(
    traced: tuple[str, str, Receiver], penguin_example: dict[str, Any]
) -> None:
    url, _, receiver = traced
    trace = "5bf92f3577b34da6a3ce929d0e0e4736"
    bad = {**penguin_example, "island": "Atlantis"}
    response = httpx2.post(
        f"{url}/predict",
        json={"instances": [bad]},
        headers={"traceparent": f"00-{trace}-{PARENT}-01"},
    )
    assert response.status_code == 422
    spans = receiver.wait_for(2, trace)
    root, children = family(spans, "POST /predict")
    assert root["attributes"]["outcome"] == "refused"
    assert root["attributes"]["http.response.status_code"] == 422
    assert "predict" not in children  # refused before the model
    no_payload_values(spans, ["Atlantis"])


def test_a_grpc_call_is_traced_from_its_metadata(traced: tuple[str, str, Receiver]) -> None:
    _, address, receiver = traced
    trace = "6bf92f3577b34da6a3ce929d0e0e4736"
    client = triton.InferenceServerClient(address)
    columns = {
        "island": np.array([b"Dream"], dtype=object), "bill_length_mm": np.array([40.0]),
        "bill_depth_mm": np.array([18.0]), "flipper_length_mm": np.array([190.0]),
        "body_mass_g": np.array([3500.0]), "sex": np.array([b"male"], dtype=object),
        "year": np.array([2008], dtype=np.int64),
    }  # fmt: skip
    kinds = {"island": "BYTES", "sex": "BYTES", "year": "INT64"}
    inputs = []
    for name, values in columns.items():
        tensor = triton.InferInput(name, [1], kinds.get(name, "FP64"))
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    client.infer("penguins", inputs, headers={"traceparent": f"00-{trace}-{PARENT}-01"})
    client.close()
    spans = receiver.wait_for(4, trace)
    root, children = family(spans, "inference.GRPCInferenceService/ModelInfer")
    assert root["parent"] == PARENT
    assert root["attributes"]["rpc.system"] == "grpc"
    assert root["attributes"]["rpc.grpc.status_code"] == 0
    assert root["attributes"]["model.rows"] == 1
    assert set(children) == {"decode", "predict", "encode"}
