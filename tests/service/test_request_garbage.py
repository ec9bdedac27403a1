"""A request leaves nothing for the garbage collector: what it made is freed when it ends.

Each request's objects freed only by a collection (a reference cycle per request) made the
collector run every ~32 requests under load, about 5% of a one-row request's time at c=32.
"""

from __future__ import annotations

import gc
import socket
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import Server

from service.app import create_app
from service.server.connections import GuardedProtocol
from service.settings import Settings
from tests.e2e.test_process import free_port
from tests.service.in_thread import predict_request, start_in_thread

REQUESTS = 200


def _answer(sock: socket.socket) -> bytes:
    """One keep-alive answer, head and body (its length from the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_keep_alive_requests_leave_no_reference_cycles(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    app = create_app(Settings(model_dir=penguins_store, grpc_port=0))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), loop="uvloop", http=GuardedProtocol
    )
    server = Server(config)
    thread = start_in_thread(server)
    request = predict_request(penguin_example)
    try:
        with socket.create_connection(("127.0.0.1", config.port), timeout=30) as sock:
            for _ in range(20):  # warm: first-use objects are not garbage
                assert b" 200 " in _answer_after(sock, request)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept, to be counted
            try:
                statuses = [_answer_after(sock, request).split(b" ", 2)[1] for _ in range(REQUESTS)]
                gc.collect()
                cycles = sum(isinstance(o, RequestResponseCycle) for o in gc.garbage)
                found = len(gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    print(
        f"\n{REQUESTS} keep-alive requests: statuses {sorted(set(statuses))}; "
        f"{found} objects left for the collector, {cycles} of them request cycles"
    )
    assert set(statuses) == {b"200"}
    assert cycles == 0
    assert found < REQUESTS  # not even one object a request


def _answer_after(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    return _answer(sock)
