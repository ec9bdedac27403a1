"""The proxy profile: Nginx in front of three replicas, and a rolling restart under load.

The load is bounded (a fixed request rate, at most LOAD_SECONDS and LOAD_REQUESTS) and sent
to 127.0.0.1 only.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import ROOT
from tests.containers.conftest import Images, must, run, world_readable
from tests.e2e.test_process import free_port

LOAD_THREADS = 4
LOAD_INTERVAL = 0.04  # seconds between one thread's requests: about 100 requests/s in all
LOAD_SECONDS = 240
LOAD_REQUESTS = 30_000


@dataclass
class Stack:
    compose: list[str]
    url: str
    ports: list[int]
    env: dict[str, str]

    def proxy_log(self) -> list[dict[str, Any]]:
        out = must(*self.compose, "logs", "--no-log-prefix", "proxy", timeout=60, **self.env)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def stack(
    images: Images, penguins_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("proxy")
    models = world_readable(penguins_store, folder / "models")
    ports = [free_port() for _ in range(3)]
    proxy_port = free_port()
    shipped = (ROOT / "deploy" / "nginx" / "proxy.conf").read_text()
    assert shipped.count("listen 8080;") == 1
    conf = folder / "proxy.conf"
    conf.write_text(shipped.replace("listen 8080;", f"listen 127.0.0.1:{proxy_port};"))
    upstream = folder / "upstream.conf"
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n" for p in ports)
    upstream.write_text(f"upstream api {{\n{servers}    keepalive 32;\n}}\n")
    for path in (conf, upstream):
        path.chmod(0o644)
    folder.chmod(0o755)
    env = {
        "IMAGE": images.serve,
        "MODELS": str(models),
        "NGINX_CONF": str(conf),
        "NGINX_UPSTREAM": str(upstream),
        **{f"PORT{i + 1}": str(p) for i, p in enumerate(ports)},
    }
    project = f"proxy-test-{uuid.uuid4().hex[:8]}"
    compose = ["docker", "compose", "-p", project, "-f", "tests/containers/compose.proxy.yaml"]
    try:
        must(*compose, "up", "-d", "--wait", timeout=300, **env)
        url = f"http://127.0.0.1:{proxy_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the proxy never answered"
            time.sleep(0.2)
        yield Stack(compose, url, ports, env)
    finally:
        run(*compose, "down", "--remove-orphans", "--timeout", "30", timeout=300, **env)


@dataclass
class Load:
    """Steady requests through the proxy from a few threads until told to stop."""

    url: str
    body: dict[str, Any]
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    missing_ids: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        with httpx2.Client(timeout=30) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                with self.lock:
                    if sum(self.statuses.values()) + len(self.failures) >= LOAD_REQUESTS:
                        return
                try:
                    response = client.post(f"{self.url}/predict", json=self.body)
                except httpx2.TransportError as exc:
                    with self.lock:
                        self.failures.append(type(exc).__name__)
                else:
                    with self.lock:
                        self.statuses[response.status_code] += 1
                        if not response.headers.get("x-request-id"):
                            self.missing_ids += 1
                time.sleep(LOAD_INTERVAL)

    def run_while(self, action: Any) -> None:
        threads = [threading.Thread(target=self.worker) for _ in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)  # steady load before the first replacement
            action()
            time.sleep(2)  # and after the last
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=60)


def test_a_rolling_restart_behind_the_proxy_loses_no_request(
    stack: Stack, penguin_example: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    load = Load(stack.url, {"instances": [penguin_example]})
    replaced: list[str] = []

    def replace_each_replica() -> None:
        for service in ("api1", "api2", "api3"):
            # Stop (SIGTERM: in-flight requests finish), then a new container, then healthy.
            must(
                *stack.compose,
                "up",
                "-d",
                "--no-deps",
                "--force-recreate",
                "--wait",
                service,
                timeout=300,
                **stack.env,
            )
            replaced.append(service)
            time.sleep(1)

    started = time.monotonic()
    load.run_while(replace_each_replica)
    seconds = time.monotonic() - started
    total = sum(load.statuses.values()) + len(load.failures)
    log = [line for line in stack.proxy_log() if line["path"] == "/predict"]
    served_by = collections.Counter(
        line["upstream"].split(",")[-1].strip() for line in log if line["upstream"]
    )
    retried = sum(1 for line in log if "," in line["upstream"])
    with capsys.disabled():  # the counts belong in every run's output, passed or not
        print(
            f"\nrolling restart of 3 replicas behind Nginx in {seconds:.0f} s: {total} requests,"
            f" {load.statuses[200]} answered 200, {total - load.statuses[200]} lost"
            f" (statuses {dict(load.statuses)}, transport errors {len(load.failures)});"
            f" served by {dict(served_by)}; {retried} passed on to another replica by Nginx"
        )
    assert replaced == ["api1", "api2", "api3"]
    assert total > 500  # the load really ran across the restarts
    assert load.failures == []
    assert dict(load.statuses) == {200: total}
    assert load.missing_ids == 0
    assert {f"127.0.0.1:{p}" for p in stack.ports} <= set(served_by)


def test_request_ids_pass_through_or_are_made(
    stack: Stack, penguin_example: dict[str, Any]
) -> None:
    body = {"instances": [penguin_example]}
    sent = httpx2.post(
        f"{stack.url}/predict", json=body, headers={"X-Request-ID": "trace-42"}, timeout=10
    )
    assert sent.status_code == 200
    assert sent.headers["x-request-id"] == "trace-42"
    made = httpx2.post(f"{stack.url}/predict", json=body, timeout=10)
    assert made.status_code == 200
    assert len(made.headers["x-request-id"]) == 32  # Nginx's $request_id, as the replica saw it
    logged = {line["request_id"]: line for line in stack.proxy_log()}
    assert logged["trace-42"]["path"] == "/predict"
    assert logged["trace-42"]["status"] == 200
    assert logged[made.headers["x-request-id"]]["upstream_status"] == "200"


def test_limits_answer_in_the_service_error_shape(stack: Stack) -> None:
    big = b'{"instances": [' + b" " * (1_048_576 + 10) + b"]}"
    headers = {"Content-Type": "application/json"}
    native = httpx2.post(f"{stack.url}/predict", content=big, headers=headers, timeout=30)
    assert native.status_code == 413
    assert native.headers["content-type"].startswith("application/json")
    assert "1048576" in native.json()["detail"]
    v2 = httpx2.post(f"{stack.url}/v2/models/penguins/infer", content=big, headers=headers)
    assert v2.status_code == 413
    assert set(v2.json()) == {"error"}


def test_a_burst_from_one_client_is_rate_limited_with_429(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Last in this module: it spends the client's burst allowance."""
    statuses: collections.Counter[int] = collections.Counter()
    bodies: list[httpx2.Response] = []
    lock = threading.Lock()

    def hammer() -> None:
        with httpx2.Client(timeout=10) as client:
            for _ in range(150):
                response = client.get(f"{stack.url}/health/live")
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 429 and len(bodies) < 3:
                        bodies.append(response)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    with capsys.disabled():
        print(f"\nburst of 1200 requests from one client: {dict(statuses)}")
    assert set(statuses) == {200, 429}
    assert statuses[200] >= 400  # the burst allowance itself is served
    refused = bodies[0]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-request-id"]
    assert "too many requests" in refused.json()["detail"]
