"""The HTTP API through the real app and its lifespan: statuses and bodies users see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import ClientFactory


def body(*instances: dict[str, Any]) -> dict[str, Any]:
    return {"instances": list(instances)}


def assert_no_internals(text: str) -> None:
    for leak in ("Traceback", "Error:", "Exception", 'File "'):
        assert leak not in text


def test_predict_returns_labels_and_probabilities_in_order(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    gentoo = {
        **penguin_example,
        "island": "Biscoe",
        "bill_depth_mm": 14.5,
        "flipper_length_mm": 225.0,
        "body_mass_g": 5400.0,
    }
    response = client.post("/predict", json=body(penguin_example, gentoo, penguin_example))
    assert response.status_code == 200
    data = response.json()
    assert data["model"] == {"name": "penguins", "version": 1}
    labels = [p["label"] for p in data["predictions"]]
    assert labels == ["Adelie", "Gentoo", "Adelie"]
    for prediction in data["predictions"]:
        assert set(prediction["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-6  # float32 graph


def test_nullable_features_accept_null(client: TestClient, penguin_example: dict[str, Any]) -> None:
    gappy = {**penguin_example, "bill_length_mm": None, "sex": None}
    assert client.post("/predict", json=body(gappy)).status_code == 200


def test_regression_predictions(make_client: ClientFactory, regression_store: Path) -> None:
    client = make_client(model_dir=regression_store)
    example = client.get("/model").json()["example"]
    response = client.post("/predict", json=body(example))
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert set(prediction) == {"value"}
    assert 2500 < prediction["value"] < 6500


def test_model_endpoint_returns_metadata(client: TestClient) -> None:
    meta = client.get("/model").json()
    assert meta["name"] == "penguins"
    assert meta["version"] == 1
    assert next(f["name"] for f in meta["features"]) == "island"


def test_health(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "model": {"name": "penguins", "version": 1},
        "runtime": "onnx",
    }


def test_not_ready_before_the_model_is_loaded(penguins_store: Path) -> None:
    app = create_app(Settings(model_dir=penguins_store))
    client = TestClient(app)  # no `with`: the lifespan has not run, so no model is loaded
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 503
    assert client.post("/predict", json={"instances": []}).status_code == 503


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    echoed = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    made = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32


def test_one_log_line_per_request_without_payload(
    client: TestClient, penguin_example: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="service.request")
    client.post("/predict", json=body(penguin_example), headers={"X-Request-ID": "trace-1"})
    records = [r for r in caplog.records if r.name == "service.request"]
    assert len(records) == 1
    record = records[0].__dict__
    assert (record["request_id"], record["method"], record["path"], record["status"]) == (
        "trace-1",
        "POST",
        "/predict",
        200,
    )
    assert record["duration_ms"] > 0
    assert "Torgersen" not in json.dumps({k: str(v) for k, v in record.items()})


def test_metrics(client: TestClient, penguin_example: dict[str, Any]) -> None:
    client.post("/predict", json=body(penguin_example, penguin_example))
    client.post("/predict", content=b"nope", headers={"content-type": "application/json"})
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert (
        'http_request_duration_seconds_count{method="POST",route="/predict",status="200"} 1.0'
        in text
    )
    assert 'predictions_total{name="penguins",version="1"} 2.0' in text
    assert 'model_info{name="penguins",runtime="onnx",version="1"} 1.0' in text


def test_openapi_names_the_real_features(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    spec = client.get("/openapi.json").json()
    instance = spec["components"]["schemas"]["Instance"]
    assert list(instance["properties"]) == list(penguin_example)
    assert instance["properties"]["island"]["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert instance["examples"] == [penguin_example]
    request_body = spec["paths"]["/predict"]["post"]["requestBody"]
    assert request_body["content"]["application/json"]["schema"]["$ref"].endswith("PredictRequest")
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        ({"bill_length_mm": "NaN"}, ["body", "instances", 1, "bill_length_mm"], "finite_number"),
        ({"island": "Atlantis"}, ["body", "instances", 1, "island"], "literal_error"),
        ({"year": None}, ["body", "instances", 1, "year"], "int_type"),
        ({"wings": 2}, ["body", "instances", 1, "wings"], "extra_forbidden"),
    ],
)
def test_invalid_instances_get_422_with_index_and_field(
    client: TestClient,
    penguin_example: dict[str, Any],
    change: dict[str, Any],
    loc: list[Any],
    kind: str,
) -> None:
    bad = {**penguin_example, **change}
    raw = json.dumps(body(penguin_example, bad)).replace('"NaN"', "NaN")
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [(loc, kind)]
    assert "msg" in detail[0]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_422(
    client: TestClient, penguin_example: dict[str, Any], literal: str
) -> None:
    raw = json.dumps(body({**penguin_example, "body_mass_g": 1.5})).replace("1.5", literal)
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "instances", 0, "body_mass_g"]


def test_missing_field_is_422(client: TestClient, penguin_example: dict[str, Any]) -> None:
    partial = {k: v for k, v in penguin_example.items() if k != "sex"}
    response = client.post("/predict", json=body(partial))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "instances", 0, "sex"]


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"not json", "application/json", 422),
        (b"", "application/json", 422),
        (b'{"instances": []}', "application/json", 422),
        (b'{"instances": [1, "a", null]}', "application/json", 422),
        (b"[" * 600_000 + b"]" * 600_000, "application/json", 413),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 422),
        (b"[" * 5000 + b"]" * 5000, "application/json", 422),
        (b"\xff\xfe\x00garbage", "application/json", 422),
        (b'{"instances": [{}]}', "text/plain", 415),
        (b"instances=1", "application/x-www-form-urlencoded", 415),
    ],
)
def test_malformed_bodies_never_500(
    client: TestClient, raw: bytes, content_type: str, status: int
) -> None:
    response = client.post("/predict", content=raw, headers={"content-type": content_type})
    assert response.status_code == status
    assert "detail" in response.json()
    assert_no_internals(response.text)


def test_body_over_the_limit_is_413(
    make_client: ClientFactory, penguin_example: dict[str, Any]
) -> None:
    client = make_client(max_body_bytes=1000)
    big = body(*[penguin_example] * 20)
    response = client.post("/predict", json=big)
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["detail"]


def chunks(payload: bytes, size: int) -> Iterator[bytes]:
    """A body sent as a stream of `size`-byte pieces, with no Content-Length."""
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def test_streamed_body_over_the_limit_is_413_without_content_length(
    make_client: ClientFactory, penguin_example: dict[str, Any]
) -> None:
    client = make_client(max_body_bytes=1000)
    payload = json.dumps(body(*[penguin_example] * 20)).encode()
    response = client.post(
        "/predict", content=chunks(payload, 256), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_a_body_sent_in_many_chunks_is_read_whole(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    payload = json.dumps(body(*[penguin_example] * 5)).encode()
    streamed = client.post(
        "/predict", content=chunks(payload, 100), headers={"content-type": "application/json"}
    )
    whole = client.post("/predict", content=payload, headers={"content-type": "application/json"})
    assert streamed.status_code == 200
    assert streamed.json() == whole.json()
    assert len(streamed.json()["predictions"]) == 5


def test_batch_over_the_limit_is_413(
    make_client: ClientFactory, penguin_example: dict[str, Any]
) -> None:
    client = make_client(max_batch_size=3)
    assert client.post("/predict", json=body(*[penguin_example] * 3)).status_code == 200
    response = client.post("/predict", json=body(*[penguin_example] * 4))
    assert response.status_code == 413
    assert "MAX_BATCH_SIZE (3" in response.json()["detail"]


def test_api_key(make_client: ClientFactory, penguin_example: dict[str, Any]) -> None:
    client = make_client(api_key="s3cret")
    payload = body(penguin_example)
    missing = client.post("/predict", json=payload)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (
        client.post("/predict", json=payload, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert (
        client.post("/predict", json=payload, headers={"X-API-Key": "s3cret!"}).status_code == 401
    )
    assert (
        client.post(
            "/predict", json=payload, headers={"Authorization": "Bearer s3cret"}
        ).status_code
        == 200
    )
    assert client.post("/predict", json=payload, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/model").status_code == 401
    for open_path in ("/health/live", "/health/ready", "/metrics"):
        assert client.get(open_path).status_code == 200
    spec = client.get("/openapi.json").json()
    assert "bearer" in spec["components"]["securitySchemes"]


def test_api_key_from_file(
    make_client: ClientFactory, tmp_path: Path, penguin_example: dict[str, Any]
) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    client = make_client(api_key_file=secret)
    assert client.post("/predict", json=body(penguin_example)).status_code == 401
    ok = client.post("/predict", json=body(penguin_example), headers={"X-API-Key": "from-a-file"})
    assert ok.status_code == 200


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/nope").json() == {"detail": "Not Found"}
    assert client.get("/predict").status_code == 405


def test_openapi_version_is_the_project_version(client: TestClient) -> None:
    import tomllib

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert client.get("/openapi.json").json()["info"]["version"] == project["version"]


def test_a_model_failure_is_a_bare_500_with_the_request_id(
    client: TestClient, penguin_example: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    def explode(table: Any) -> Any:
        raise ValueError("secret internals")

    client.app.state.runtime.dispatcher.predictor.compute = explode  # type: ignore[attr-defined]
    response = client.post("/predict", json=body(penguin_example), headers={"X-Request-ID": "r-9"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert response.headers["x-request-id"] == "r-9"
    assert "secret" not in response.text
    assert any("secret internals" in r.getMessage() or r.exc_info for r in caplog.records)
    assert client.get("/health/live").status_code == 200


def test_a_dataframe_with_an_integer_column_read_as_floats_is_accepted(
    client: TestClient,
) -> None:
    import pandas as pd

    from tests.conftest import PENGUINS_CSV

    frame = pd.read_csv(PENGUINS_CSV).drop(columns=["species"]).dropna().head(5)
    frame["year"] = frame["year"].astype(float)  # what a gap anywhere in the column does
    records = frame.to_dict("records")
    assert records[0]["year"] == 2007.0
    assert isinstance(records[0]["year"], float)
    response = client.post("/predict", json={"instances": records})
    assert response.status_code == 200, response.text
    fractional = [{**records[0], "year": 2007.5}]
    assert client.post("/predict", json={"instances": fractional}).status_code == 422
