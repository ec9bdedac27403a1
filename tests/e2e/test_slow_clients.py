"""Slow and greedy clients against a real server: cut off in time, probes answering throughout.

Every run is bounded (a fixed number of sockets, a few seconds) and stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.test_process import running

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 200


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def read_until_closed(sock: socket.socket, limit: float) -> bytes:
    sock.settimeout(limit)
    out = b""
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except TimeoutError:
        out += b"<still open>"
    return out


def test_slow_headers_are_cut_off_while_probes_keep_answering(penguins_store: Path) -> None:
    with running(penguins_store, HEADER_TIMEOUT="2") as url:
        sockets = [socket.create_connection(address(url)) for _ in range(SLOW_CLIENTS)]
        started = time.monotonic()
        for sock in sockets:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # then a line a second
        probes: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                probes.append(httpx2.get(f"{url}/health/ready", timeout=5).status_code)
                time.sleep(0.1)

        def trickle() -> None:
            # A header line at 0.5 and 1.5 s: progress that must not move the 2 s deadline.
            # Nothing is sent near the deadline itself: bytes that reach a socket the server
            # has just closed make it answer with a reset, which can discard the 408 unread.
            for second in range(2):
                if stop.wait(0.5 if second == 0 else 1):
                    return
                for sock in sockets:
                    with contextlib.suppress(OSError):  # already cut off
                        sock.sendall(f"X-Slow-{second}: 1\r\n".encode())

        helpers = [threading.Thread(target=probe), threading.Thread(target=trickle)]
        for helper in helpers:
            helper.start()
        answers = dict.fromkeys(sockets, b"")
        closed_after: dict[socket.socket, float] = {}
        with selectors.DefaultSelector() as selector:
            for sock in sockets:
                selector.register(sock, selectors.EVENT_READ)
            deadline = started + 8  # bounded: the test ends even if the server never cuts off
            while len(closed_after) < len(sockets) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    chunk = sock.recv(4096)
                    answers[sock] += chunk
                    if not chunk:
                        closed_after[sock] = time.monotonic() - started
                        selector.unregister(sock)
        stop.set()
        for helper in helpers:
            helper.join(timeout=10)
        for sock in sockets:
            sock.close()
        print(
            f"\n{SLOW_CLIENTS} slow clients (a header line a second, limit 2 s):"
            f" {len(closed_after)} answered 408 and closed, the first after"
            f" {min(closed_after.values(), default=0):.2f} s and the last after"
            f" {max(closed_after.values(), default=0):.2f} s; {len(probes)} readiness probes"
            f" meanwhile, all {sorted(set(probes))}"
        )
        assert len(closed_after) == SLOW_CLIENTS
        assert max(closed_after.values()) < 3.5
        for answer in answers.values():
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:80]
            assert b'"detail":"request headers not received within 2 s"' in answer
        assert set(probes) == {200}
        assert len(probes) >= 10


def test_a_slow_body_is_cut_off(penguins_store: Path) -> None:
    with running(penguins_store, BODY_TIMEOUT="1") as url:
        with socket.create_connection(address(url)) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"instances"'
            )
            started = time.monotonic()
            answer = read_until_closed(sock, limit=5)
            seconds = time.monotonic() - started
        assert seconds < 3
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
        assert b'{"detail":"request body not received within 1 s"}' in answer


def test_idle_keep_alive_connections_are_closed(penguins_store: Path) -> None:
    with running(penguins_store, KEEPALIVE_TIMEOUT="1") as url:
        with socket.create_connection(address(url)) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            started = time.monotonic()
            answer = read_until_closed(sock, limit=5)
            seconds = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 200")
        assert 0.8 < seconds < 3  # kept for a second of idleness, then closed


def test_past_the_connection_cap_requests_get_503_but_probes_answer(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    with running(penguins_store, MAX_CONNECTIONS="20") as url:
        idle = [socket.create_connection(address(url)) for _ in range(25)]
        try:
            time.sleep(0.5)
            refused = httpx2.post(
                f"{url}/predict", json={"instances": [penguin_example]}, timeout=5
            )
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json() == {
                "detail": "too many connections to this server; retry after a second"
            }
            v2 = httpx2.get(f"{url}/v2/models/penguins", timeout=5)
            assert v2.status_code == 503
            assert set(v2.json()) == {"error"}
            assert httpx2.get(f"{url}/health/ready", timeout=5).status_code == 200
            assert httpx2.get(f"{url}/v2/health/live", timeout=5).status_code == 200
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.5)
        answer = httpx2.post(f"{url}/predict", json={"instances": [penguin_example]}, timeout=5)
        assert answer.status_code == 200


def test_a_keep_alive_client_gets_each_request_its_own_header_deadline(
    penguins_store: Path,
) -> None:
    """Deadlines move with each request: a timer set for an earlier request's headers finds a
    later deadline when it fires and waits for that one; the last, slow request still gets its
    408 on time."""
    with running(penguins_store, HEADER_TIMEOUT="1", KEEPALIVE_TIMEOUT="5") as url:
        with socket.create_connection(address(url)) as sock:
            sock.settimeout(5)
            started = time.monotonic()
            statuses = []
            while time.monotonic() - started < 2.6:  # the first request's deadline long past
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b'{"status":"alive"}'):  # head and body may part
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                statuses.append(answer[9:12])
                time.sleep(0.3)
            sock.sendall(b"GET /health/live HTTP/1.1\r\n")  # and never the rest
            slow_from = time.monotonic()
            answer = read_until_closed(sock, limit=5)
            cut_after = time.monotonic() - slow_from
        print(
            f"\n{len(statuses)} requests over {slow_from - started:.1f} s on one connection:"
            f" {sorted(set(statuses))}; the slow one cut after {cut_after:.2f} s"
        )
        assert set(statuses) == {b"200"}
        assert len(statuses) >= 6
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:80]
        assert b'"detail":"request headers not received within 1 s"' in answer
        assert 0.9 < cut_after < 2.5
