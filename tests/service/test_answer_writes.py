"""An answer of known length goes out in one write: its head with its body.

uvicorn writes an answer's head when the app starts it and the body after, two system calls
(and two TCP segments) where one does. Counted here at the socket, on a real server.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import Server

from service.app import create_app
from service.server.connections import GuardedProtocol
from service.settings import Settings
from tests.e2e.test_process import free_port
from tests.service.in_thread import predict_request, start_in_thread
from tests.service.test_request_garbage import _answer

REQUESTS = 50


@pytest.fixture
def server_sends(
    penguins_store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, list[bytes]]]:
    """A server on asyncio's loop (its transports write with `socket.send`), and every send
    its thread makes."""
    sends: list[bytes] = []
    real_send = socket.socket.send
    server_thread: list[int] = []

    def counted(sock: socket.socket, data: Any, *flags: int) -> int:
        if threading.get_ident() in server_thread:
            sends.append(bytes(data))
        return real_send(sock, data, *flags)

    monkeypatch.setattr(socket.socket, "send", counted)
    app = create_app(Settings(model_dir=penguins_store, grpc_port=0))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), loop="asyncio", http=GuardedProtocol
    )
    server = Server(config)
    thread = start_in_thread(server)
    assert thread.ident is not None
    server_thread.append(thread.ident)
    try:
        yield config.port, sends
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_each_answer_is_one_write(
    server_sends: tuple[int, list[bytes]], penguin_example: dict[str, Any]
) -> None:
    port, sends = server_sends
    bad = {**penguin_example, "bill_length_mm": "long"}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(predict_request(penguin_example))
        _answer(sock)  # warm
        sends.clear()
        statuses = []
        for n in range(REQUESTS):
            sock.sendall(predict_request(bad if n % 5 == 0 else penguin_example))
            statuses.append(_answer(sock).split(b" ", 2)[1])
    print(f"\n{REQUESTS} answers ({sorted(set(statuses))}) in {len(sends)} writes")
    assert statuses.count(b"200") == REQUESTS - REQUESTS // 5
    assert statuses.count(b"422") == REQUESTS // 5
    assert len(sends) == REQUESTS
    assert all(s.startswith(b"HTTP/1.1 ") and s.count(b"HTTP/1.1 ") == 1 for s in sends)


def test_an_answer_without_a_body_and_a_closing_answer_are_whole(
    server_sends: tuple[int, list[bytes]],
) -> None:
    port, sends = server_sends
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"HEAD /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert head.endswith(b"\r\n\r\n")  # the head alone: HEAD has no body
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):  # the server closes after this answer
            rest += chunk
    head_of_get, _, body = rest.partition(b"\r\n\r\n")
    assert head_of_get.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head_of_get.lower()
    assert body
    assert len(sends) == 2
