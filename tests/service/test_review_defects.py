"""Regression tests for the serving defects a code review and a first-use trial found."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from service.logs import ConsoleFormatter
from service.settings import Settings, SettingsError
from tests.conftest import PENGUINS_CSV, train, train_overflowing_ridge, write_csv
from tests.service.conftest import ClientFactory


def test_an_overflowing_prediction_is_422_naming_the_instance(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    # A feature spread of 1e-149 and a target near 1e151: scaling and weighing 1e15 (the
    # largest accepted input) overflows even in float64, so the linear model answers infinity.
    # Served here by scikit-learn; the compiled graph overflows alike (batch scoring's test).
    train_overflowing_ridge(tmp_path)
    client = make_client(model_dir=tmp_path / "models", runtime="sklearn")
    fine, huge = {"a": 1e-149, "b": 0.02}, {"a": 1e15, "b": -1e15}
    response = client.post("/predict", json={"instances": [fine, huge]})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "instances", 1]
    assert detail["type"] == "non_finite_prediction"
    assert "null" not in response.text
    assert client.post("/predict", json={"instances": [fine]}).status_code == 200


def test_the_docs_never_show_a_training_row_even_behind_a_key(
    make_client: ClientFactory,
) -> None:
    client = make_client(api_key="s3cret")
    schema = client.get("/openapi.json")
    assert schema.status_code == 200  # the docs stay open, so they must not leak data
    (example,) = schema.json()["components"]["schemas"]["Instance"]["examples"]
    with PENGUINS_CSV.open() as handle:
        for row in csv.DictReader(handle):
            shown = {k: str(v) if isinstance(v, str) else v for k, v in example.items()}
            same = all(str(shown[k]) == row[k] or _same_number(shown[k], row[k]) for k in shown)
            assert not same, f"the docs example is training row {row}"
    responses = schema.json()["paths"]
    assert "401" in responses["/model"]["get"]["responses"]
    assert "503" in responses["/predict"]["post"]["responses"]
    assert "503" in responses["/health/ready"]["get"]["responses"]


def _same_number(shown: Any, cell: str) -> bool:
    try:
        return isinstance(shown, int | float) and float(cell) == float(shown)
    except ValueError:
        return False


def test_an_empty_x_api_key_does_not_hide_a_bearer_token(
    make_client: ClientFactory, penguin_example: dict[str, Any]
) -> None:
    client = make_client(api_key="s3cret")
    body = {"instances": [penguin_example]}
    headers = {"X-API-Key": "", "Authorization": "Bearer s3cret"}
    assert client.post("/predict", json=body, headers=headers).status_code == 200
    assert client.get("/model", headers={"X-API-Key": "  "}).status_code == 401


@pytest.mark.parametrize("key", ["clé", "tab\tkey"])
def test_a_key_no_header_can_carry_is_refused_at_start_up(key: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="API_KEY must be printable ASCII"):
        Settings(api_key=key).api_keys()
    key_file = tmp_path / "key"
    key_file.write_text(key)
    with pytest.raises(SettingsError, match="must be printable ASCII"):
        Settings(api_key_file=key_file).api_keys()


@pytest.mark.parametrize(
    ("labels", "keys"), [(["True", "False"], ["false", "true"]), (["3", "7"], ["3", "7"])]
)
def test_probability_keys_agree_between_schema_and_answers(
    make_client: ClientFactory, tmp_path: Path, labels: list[str], keys: list[str]
) -> None:
    rows = [[(i * 7) % 40, labels[i % 2]] for i in range(40)]  # shuffled: not a row counter
    data = write_csv(tmp_path / "t.csv", ["x", "y"], rows)
    assert train(tmp_path / "models", "--data", str(data), "--target", "y") == 0
    client = make_client(model_dir=tmp_path / "models")
    (answer,) = client.post("/predict", json={"instances": [{"x": 4}]}).json()["predictions"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Prediction"]
    assert sorted(answer["probabilities"]) == keys
    assert sorted(schema["properties"]["probabilities"]["properties"]) == keys
    label_type = schema["properties"]["label"]["type"]
    assert label_type == ("boolean" if labels[0] == "True" else "integer")
    assert answer["label"] in schema["properties"]["label"]["enum"]
    assert json.dumps(answer["label"]) in keys  # the label's JSON text is its key


def test_a_dataframe_minus_its_target_is_accepted(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    rows = [[f"c-{i}", i % 9 if i % 5 else "", "a" if i % 3 else "b", i % 2] for i in range(60)]
    data = write_csv(tmp_path / "churn.csv", ["customer", "tenure", "plan", "churned"], rows)
    config = tmp_path / "churn.toml"
    config.write_text(f'[data]\npath = "{data}"\ntarget = "churned"\ndrop = ["customer"]\n')
    assert train(tmp_path / "models", "--config", str(config)) == 0
    client = make_client(model_dir=tmp_path / "models")
    frame = pd.read_csv(data).drop(columns=["churned"]).head(6)
    records = frame.to_dict("records")
    assert any(isinstance(r["tenure"], float) and math.isnan(r["tenure"]) for r in records)
    sent = client.post(
        "/predict",
        content=json.dumps({"instances": records}),  # json writes NaN, as requests does
        headers={"Content-Type": "application/json"},
    )
    assert sent.status_code == 422
    error = sent.json()["detail"][0]
    assert error["loc"] == ["body", "instances", 0, "tenure"]
    assert error["msg"].endswith("send null for a missing value")
    cleaned = frame.astype(object).where(frame.notna(), None).to_dict("records")
    response = client.post("/predict", json={"instances": cleaned})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 6


def test_docs_routes_are_counted_under_their_own_route(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    text = client.get("/metrics").text
    assert 'route="/docs",status="200"' in text
    assert 'route="/openapi.json",status="200"' in text


def test_a_path_cannot_forge_a_console_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="service.request")
    forged = "/x%0a19:16:00 INFO    request request_id=forged method=GET path=/ status=200"
    assert client.get(forged).status_code == 404
    (record,) = [r for r in caplog.records if r.name == "service.request"]
    line = ConsoleFormatter().format(record)
    assert "\n" not in line
    assert 'path="/x\\n19:16:00 INFO    request request_id=forged' in line
    assert line.endswith('status=200" status=404 duration_ms=' + line.rsplit("=", 1)[1])


def test_a_client_that_disconnects_mid_upload_is_499_not_500(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    sent: list[dict[str, Any]] = []
    messages = iter(
        [
            {"type": "http.request", "body": b'{"instances": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"5000")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    assert client.portal is not None
    client.portal.call(client.app, scope, receive, send)
    assert sent == []  # nobody to answer
    text = client.get("/metrics").text
    assert 'route="/predict",status="499"' in text
    assert 'status="500"' not in text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(r.getMessage().startswith("client disconnected") for r in caplog.records)
