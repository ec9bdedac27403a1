"""Both runtimes behind the same API: the same labels, values within the recorded deviation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_process import graphless
from tests.service.conftest import ClientFactory
from tests.service.test_predictor import penguin_instances


def test_each_runtime_answers_the_same_request_alike(
    make_client: ClientFactory, penguins_store: Path
) -> None:
    instances = penguin_instances(penguins_store, limit=40)
    answers: dict[str, list[dict[str, Any]]] = {}
    for runtime in ("onnx", "sklearn"):
        client = make_client(runtime=runtime)
        assert client.get("/health/ready").json()["runtime"] == runtime
        assert client.get("/model").json()["runtime"] == runtime
        response = client.post("/predict", json={"instances": instances})
        assert response.status_code == 200
        answers[runtime] = response.json()["predictions"]
    allowed = make_client().get("/model").json()["onnx"]["max_deviation"]
    for onnx, sklearn in zip(answers["onnx"], answers["sklearn"], strict=True):
        assert onnx["label"] == sklearn["label"]
        for key, p in sklearn["probabilities"].items():
            assert onnx["probabilities"][key] == pytest.approx(p, abs=allowed + 1e-12)


def test_auto_serves_a_version_without_a_graph_through_scikit_learn(
    make_client: ClientFactory, penguins_store: Path, tmp_path: Path
) -> None:
    client = make_client(model_dir=graphless(penguins_store, tmp_path))
    assert client.get("/health/ready").json()["runtime"] == "sklearn"
    example = client.get("/model").json()["example"]
    response = client.post("/predict", json={"instances": [example]})
    assert response.status_code == 200
    assert "model_info{" in client.get("/metrics").text
    assert 'runtime="sklearn"' in client.get("/metrics").text


def test_the_default_runtime_is_the_compiled_graph(make_client: ClientFactory) -> None:
    client = make_client()
    assert client.get("/health/ready").json()["runtime"] == "onnx"
