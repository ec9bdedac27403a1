"""The prediction routes are served by the hot lane, everything else by the full stack."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from service.server.hot_lane import HotLane
from tests.service.conftest import ClientFactory


def test_each_prediction_route_takes_the_lane_and_nothing_else_does(
    make_client: ClientFactory, penguin_example: dict[str, Any]
) -> None:
    client = make_client()
    client.get("/health/live")  # builds the middleware stack
    lane = client.app.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(lane, HotLane)
    through_stack: list[str] = []
    stack = lane.stack

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        through_stack.append(f"{scope['method']} {scope['path']}")
        await stack(scope, receive, send)

    lane.stack = recorded
    body = {"instances": [penguin_example]}
    features = client.get("/model").json()["features"]
    inputs = [
        {
            "name": f["name"],
            "datatype": {"number": "FP64", "integer": "INT64", "string": "BYTES"}[f["type"]],
            "shape": [1],
            "data": [penguin_example[f["name"]]],
        }
        for f in features
    ]
    through_stack.clear()
    answers = [
        _post(client, "/predict", body),
        _post(client, "/v2/models/penguins/infer", {"inputs": inputs}),
        _post(client, "/v2/models/penguins/versions/1/infer", {"inputs": inputs}),
        _post(client, "/v1/models/penguins:predict", body),
    ]
    assert answers == [200, 200, 200, 200]
    assert through_stack == []  # every one served by the lane
    # Not a prediction route, or not a POST, or a path the lane's routes do not match:
    # the full stack, with the same answers as ever.
    assert client.get("/predict").status_code == 405
    assert _post(client, "/v2/models/penguins/versions/1/infer/x", {"inputs": inputs}) == 404
    assert _post(client, "/model", body) == 405
    assert through_stack == [
        "GET /predict",
        "POST /v2/models/penguins/versions/1/infer/x",
        "POST /model",
    ]


def _post(client: TestClient, path: str, body: Any) -> int:
    status: int = client.post(path, json=body).status_code
    return status
