"""Payload logging (PAYLOAD_LOG) against real processes: a CloudEvents sink process of its own, a
sink that never answers, no sink at all, and rotated files. Every prediction must succeed
whatever the sink does; what is dropped is counted. Bounded in requests and time; 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from service.settings import SettingsError, load_settings
from tests.e2e.test_process import free_port, running

pytestmark = pytest.mark.slow

# A sink as an operator would run one: it appends each batch it is sent to a file, or, with
# `hang`, takes the connection and never answers.
SINK = """
import http.server, sys, time
out, mode = sys.argv[1], sys.argv[2]
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if mode == "hang":
            time.sleep(600)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(out, "ab") as handle:
            handle.write(self.headers["Content-Type"].encode() + b"\\t" + body + b"\\n")
        self.send_response(202)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def sink(folder: Path, mode: str = "accept") -> Iterator[tuple[str, Path]]:
    received = folder / "received.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", SINK, str(received), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/events", received
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def batches(received: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    if not received.exists():
        return []
    found = []
    for line in received.read_bytes().splitlines():
        kind, _, body = line.partition(b"\t")
        found.append((kind.decode(), json.loads(body)))
    return found


def wait_for(predicate: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.1)


def counted(url: str, outcome: str) -> float:
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf'^payload_events_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def test_events_reach_a_real_sink_as_cloudevents(
    penguins_store: Path, penguin_example: dict[str, Any], tmp_path: Path
) -> None:
    with sink(tmp_path) as (target, received), running(penguins_store, PAYLOAD_LOG=target) as url:
        gap = {**penguin_example, "sex": None}
        answer = httpx2.post(
            f"{url}/predict",
            json={"instances": [penguin_example, gap]},
            headers={"X-Request-ID": "audit-1"},
        )
        assert answer.status_code == 200
        v2 = {"inputs": [{"name": n, "datatype": "BYTES" if isinstance(v, str) else
                          "INT64" if isinstance(v, int) else "FP64", "shape": [1], "data": [v]}
                         for n, v in penguin_example.items()]}  # fmt: skip
        assert httpx2.post(f"{url}/v2/models/penguins/infer", json=v2).status_code == 200
        wait_for(lambda: sum(len(b) for _, b in batches(received)) >= 4)
        events = [e for _, b in batches(received) for e in b]
        assert {kind for kind, _ in batches(received)} == {"application/cloudevents-batch+json"}
        sent = counted(url, "sent")
    assert len(events) == 4
    first = {e["type"]: e for e in events if e["requestid"] == "audit-1"}
    request = first["org.sklearn-serve.inference.request"]
    response = first["org.sklearn-serve.inference.response"]
    assert (request["id"], response["id"]) == ("audit-1.request", "audit-1.response")
    for event in (request, response):
        assert event["specversion"] == "1.0"
        assert event["source"] == "sklearn-serve/penguins/1"
        assert (event["modelname"], event["modelversion"]) == ("penguins", "1")
        assert event["endpoint"] == "/predict"
        assert event["datacontenttype"] == "application/json"
        assert event["time"].endswith("+00:00")
    assert request["data"]["instances"] == [penguin_example, gap]
    assert response["data"]["predictions"] == answer.json()["predictions"]
    others = [e for e in events if e["requestid"] != "audit-1"]
    assert {e["endpoint"] for e in others} == {"/v2/models/penguins/infer"}
    assert sent == 4


def test_a_sink_that_never_answers_fails_no_prediction(
    penguins_store: Path, penguin_example: dict[str, Any], tmp_path: Path
) -> None:
    """8 clients, 400 predictions, a sink that takes each connection and never answers, and a
    queue of 20: every prediction answers 200, the events are dropped and counted."""
    with (
        sink(tmp_path, mode="hang") as (target, _),
        # Warnings only: the server's log is a pipe this test reads only at the end.
        running(
            penguins_store, PAYLOAD_LOG=target, PAYLOAD_LOG_QUEUE="20", LOG_LEVEL="warning"
        ) as url,
    ):
        body = {"instances": [penguin_example]}
        with httpx2.Client(timeout=10) as client:
            client.post(f"{url}/predict", json=body)

            def call(_: int) -> tuple[int, float]:
                started = time.perf_counter()
                status = client.post(f"{url}/predict", json=body).status_code
                return status, time.perf_counter() - started

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(call, range(400)))
            seconds = time.monotonic() - started
        statuses = [status for status, _ in results]
        slowest = max(t for _, t in results)
        wait_for(lambda: counted(url, "dropped_sink_error") > 0, seconds=15)
        full, failed = counted(url, "dropped_queue_full"), counted(url, "dropped_sink_error")
    print(
        f"\nhanging sink: 400 predictions in {seconds:.1f}s, {statuses.count(200)} answered 200, "
        f"slowest {slowest * 1000:.0f} ms; events dropped: {full:.0f} queue full, "
        f"{failed:.0f} sink error"
    )
    assert statuses == [200] * 400
    assert full > 0
    assert failed > 0


def test_no_sink_at_all_fails_no_prediction(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    with running(penguins_store, PAYLOAD_LOG=dead) as url:
        with httpx2.Client(timeout=10) as client:
            statuses = [
                client.post(f"{url}/predict", json={"instances": [penguin_example]}).status_code
                for _ in range(50)
            ]
        wait_for(lambda: counted(url, "dropped_sink_error") >= 100)
        dropped = counted(url, "dropped_sink_error")
    print(f"\nno sink: 50 predictions answered {set(statuses)}; {dropped:.0f} events dropped")
    assert statuses == [200] * 50
    assert dropped == 100


def test_files_rotate_and_sampling_thins(
    penguins_store: Path, penguin_example: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "payloads" / "events.jsonl"
    env = {"PAYLOAD_LOG": f"file:{path}", "PAYLOAD_LOG_FILE_BYTES": "4096",
           "PAYLOAD_LOG_FILE_COUNT": "50"}  # fmt: skip
    with running(penguins_store, **env) as url:
        for number in range(30):
            response = httpx2.post(
                f"{url}/predict",
                json={"instances": [penguin_example]},
                headers={"X-Request-ID": f"f-{number}"},
            )
            assert response.status_code == 200
        files = lambda: sorted(path.parent.glob("events.jsonl*"))  # noqa: E731
        wait_for(lambda: sum(len(f.read_text().splitlines()) for f in files()) >= 60)
    lines = [json.loads(line) for f in files() for line in f.read_text().splitlines()]
    assert len(files()) > 1  # rotated
    assert all(f.stat().st_size <= 4096 + 2048 for f in files())
    assert sorted(e["id"] for e in lines) == sorted(
        f"f-{n}.{kind}" for n in range(30) for kind in ("request", "response")
    )

    sampled = tmp_path / "sampled.jsonl"
    env = {"PAYLOAD_LOG": f"file:{sampled}", "PAYLOAD_LOG_SAMPLE": "0.5"}
    with (
        running(penguins_store, **env, LOG_LEVEL="warning") as url,
        httpx2.Client(timeout=10) as client,
    ):
        for _ in range(200):
            client.post(f"{url}/predict", json={"instances": [penguin_example]})
        time.sleep(1.5)
    kept = len(sampled.read_text().splitlines()) // 2
    print(f"\nsampling 0.5: {kept} of 200 predictions logged")
    assert 60 <= kept <= 140


def test_a_target_of_another_kind_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYLOAD_LOG", "ftp://example/events")
    with pytest.raises(SettingsError, match="invalid PAYLOAD_LOG"):
        load_settings()
