"""Regression tests, as real processes, for the review's serving defects: workers, shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import ROOT
from tests.e2e.test_process import free_port, start, stop, wait_ready

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    """Worker processes of the server (not multiprocessing's resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"resource_tracker" not in cmdline:
            found.add(int(entry.name))
    return found


def publish_copy(models: Path, version: int) -> None:
    """A new version of penguins, as a training run would add while the server runs."""
    source, target = models / "penguins" / "1", models / "penguins" / str(version)
    shutil.copytree(source, target)
    meta = json.loads((target / "metadata.json").read_text())
    meta["version"] = version
    (target / "metadata.json").write_text(json.dumps(meta))


def test_a_restarted_worker_serves_the_version_the_server_verified(
    penguins_store: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(penguins_store, models)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {**os.environ, "HOST": "127.0.0.1", "LOG_FORMAT": "json", "PORT": str(port)}
    env.update({"MODEL_DIR": str(models), "WORKERS": "2"})
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=out, stderr=out
        )

    def ready_lines() -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        return [line for line in lines if line["event"] == "model ready"]

    try:
        wait_until(lambda: len(ready_lines()) == 2, "two workers ready")
        publish_copy(models, 2)
        (victim, *_) = sorted(children(proc.pid))
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(ready_lines()) == 3, "the killed worker restarted and ready")
        versions = []
        for _ in range(12):
            with httpx2.Client() as fresh:  # new connections, spread over the workers
                versions.append(fresh.get(f"{url}/health/ready", timeout=5).json()["model"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert versions == [{"name": "penguins", "version": 1}] * 12
    assert [line["version"] for line in ready_lines()] == [1, 1, 1]
    assert proc.returncode == 0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def finished(proc: subprocess.Popen[str]) -> tuple[int, list[dict[str, Any]]]:
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def in_flight(port: int, payload: bytes, sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock.sendall(head + payload[:sent])
    return sock


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        if length is not None and len(body) >= length:
            return answer


def test_a_fractional_shutdown_timeout_still_lets_requests_finish(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    port = free_port()
    proc = start({"MODEL_DIR": str(penguins_store), "PORT": str(port), "SHUTDOWN_TIMEOUT": "0.5"})
    wait_ready(proc, f"http://127.0.0.1:{port}")
    payload = json.dumps({"instances": [penguin_example]}).encode()
    sockets = [in_flight(port, payload, 10) for _ in range(6)]
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    for sock in sockets:
        sock.sendall(payload[10:])
    answers = [read_answer(sock) for sock in sockets]
    for sock in sockets:
        sock.close()
    code, logs = finished(proc)
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 6
    assert code == 0
    assert not [line for line in logs if line["level"] == "error"]


def test_a_request_cut_at_the_shutdown_deadline_answers_in_the_json_shape(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    port = free_port()
    proc = start({"MODEL_DIR": str(penguins_store), "PORT": str(port), "SHUTDOWN_TIMEOUT": "1"})
    wait_ready(proc, f"http://127.0.0.1:{port}")
    payload = json.dumps({"instances": [penguin_example]}).encode()
    sock = in_flight(port, payload, 10)  # the rest of the body never comes
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    answer = read_answer(sock)
    sock.close()
    waited = time.monotonic() - started
    code, logs = finished(proc)  # one SIGTERM only: a second one means "force quit" to uvicorn
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert json.loads(body) == {
        "detail": "server shutting down: the request was cut at the shutdown deadline"
    }
    assert 0.9 < waited < 10
    assert code == 0
    assert not any("Traceback" in json.dumps(line) for line in logs)
    cut = [line for line in logs if line["event"] == "request" and line["path"] == "/predict"]
    assert cut[-1]["status"] == 503


def test_a_client_that_leaves_mid_upload_is_logged_as_499(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start({"MODEL_DIR": str(penguins_store), "PORT": str(port)})
    try:
        wait_ready(proc, url)
        for _ in range(3):
            sock = in_flight(port, b"x" * 5000, 100)
            time.sleep(0.1)
            sock.close()
        time.sleep(0.3)
        metrics = httpx2.get(f"{url}/metrics", timeout=5).text
    finally:
        code, logs = stop(proc)
    assert 'http_requests_total{method="POST",route="/predict",status="499"} 3.0' in metrics
    assert 'status="500"' not in metrics
    assert not [line for line in logs if line["level"] in ("error", "warning")]
    assert code == 0
