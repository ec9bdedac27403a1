"""`python -m service` as a real process: start-up checks, serving, workers, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    full = {**os.environ, "HOST": "127.0.0.1", "LOG_FORMAT": "json", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str], url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"service exited with {proc.returncode}: {proc.stdout and proc.stdout.read()}"
            )
        try:
            if httpx2.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("service did not become ready")


def stop(proc: subprocess.Popen[str]) -> tuple[int, list[dict[str, Any]]]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@contextmanager
def running(store: Path, **env: str) -> Iterator[str]:
    """A real server on a free port for the duration of a `with`: its base URL."""
    port = free_port()
    proc = start({"MODEL_DIR": str(store), "PORT": str(port), **env})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def served(penguins_store: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = start({"MODEL_DIR": str(penguins_store), "PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serves_predictions_and_stops_cleanly_on_sigterm(
    served: tuple[subprocess.Popen[str], str], penguin_example: dict[str, Any]
) -> None:
    proc, url = served
    response = httpx2.post(f"{url}/predict", json={"instances": [penguin_example]}, timeout=10)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "Adelie"
    code, logs = stop(proc)
    assert code == 0
    requests = [line for line in logs if line["event"] == "request"]
    assert requests[-1]["path"] == "/predict"
    assert requests[-1]["status"] == 200
    assert {"request_id", "method", "duration_ms", "ts", "level"} <= set(requests[-1])
    assert any(line["event"] == "model ready" and line["model"] == "penguins" for line in logs)


def test_sigterm_lets_an_in_flight_request_finish(
    served: tuple[subprocess.Popen[str], str], penguin_example: dict[str, Any]
) -> None:
    proc, url = served
    port = int(url.rsplit(":", 1)[1])
    payload = json.dumps({"instances": [penguin_example]}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + payload[:10])  # the request is now in flight
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # still draining
        sock.sendall(payload[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"label":"Adelie"' in answer
    code, _ = stop(proc)
    assert code == 0


def test_several_workers_share_metrics(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start({"MODEL_DIR": str(penguins_store), "PORT": str(port), "WORKERS": "2"})
    try:
        wait_ready(proc, url, timeout=60)
        for _ in range(20):
            with httpx2.Client() as fresh:  # new connections, spread over the workers
                assert (
                    fresh.post(f"{url}/predict", json={"instances": [penguin_example]}).status_code
                    == 200
                )
        metrics = httpx2.get(f"{url}/metrics").text
        assert 'predictions_total{name="penguins",version="1"} 20.0' in metrics
        assert "model_info{" in metrics
    finally:
        code, logs = stop(proc)
    assert code == 0
    workers = {line.get("process") for line in logs if line["event"] == "model ready"}
    assert len([line for line in logs if line["event"] == "model ready"]) == 2, workers


def tampered(store: Path, tmp_path: Path, file: str = "model.joblib") -> Path:
    copy = tmp_path / "models"
    shutil.copytree(store, copy)
    with (copy / "penguins" / "1" / file).open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    return copy


def tampered_graph(store: Path, tmp_path: Path) -> Path:
    return tampered(store, tmp_path, "model.onnx")


def graphless(store: Path, tmp_path: Path) -> Path:
    """The version as the previous release wrote it: format 1, no model.onnx, no `onnx`."""
    copy = tmp_path / "models"
    shutil.copytree(store, copy)
    version = copy / "penguins" / "1"
    (version / "model.onnx").unlink()
    meta = json.loads((version / "metadata.json").read_text())
    del meta["onnx"], meta["ignored_columns"]
    meta["format_version"] = 1
    (version / "metadata.json").write_text(json.dumps(meta))
    return copy


def skewed(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(store, copy)
    meta_path = copy / "penguins" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["environment"]["scikit-learn"] = "1.0.2"
    meta_path.write_text(json.dumps(meta))
    return copy


def empty(store: Path, tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


@pytest.mark.parametrize(
    ("prepare", "env", "reason"),
    [
        (tampered_graph, {}, "sha256 mismatch for"),
        (tampered, {"RUNTIME": "sklearn"}, "sha256 mismatch"),
        (skewed, {"RUNTIME": "sklearn"}, "trained with scikit-learn 1.0.2, this runtime has"),
        (graphless, {"RUNTIME": "onnx"}, "has no verified ONNX graph (it was trained before"),
        (empty, {}, "no models in"),
        (None, {"MODEL_NAME": "herons"}, "no model named 'herons'"),
        (None, {"MODEL_VERSION": "9"}, "no version 9 of model 'penguins'"),
        (
            None,
            {"MODEL_DIR": "/nonexistent/models"},
            "model directory /nonexistent/models does not exist",
        ),
        (None, {"API_KEY_FILE": "/nonexistent/key"}, "cannot read API_KEY_FILE"),
        (None, {"PORT": "eighty"}, "invalid PORT"),
        (None, {"RUNTIME": "gpu"}, "invalid RUNTIME"),
    ],
)
def test_startup_failures_exit_fast_with_one_clear_line(
    penguins_store: Path, tmp_path: Path, prepare: Any, env: dict[str, str], reason: str
) -> None:
    models = prepare(penguins_store, tmp_path) if prepare else penguins_store
    started = time.monotonic()
    proc = start({"MODEL_DIR": str(models), "PORT": str(free_port()), **env})
    out, _ = proc.communicate(timeout=30)
    settings_error = {"PORT", "API_KEY_FILE"} & set(env) or env.get("RUNTIME") == "gpu"
    assert proc.returncode == (2 if settings_error else 1), out
    assert time.monotonic() - started < 15
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    line = json.loads(lines[0])
    assert line["level"] == "error"
    assert reason in line["reason"]
    if not settings_error:
        assert line["model_dir"] == env.get("MODEL_DIR", str(models))
